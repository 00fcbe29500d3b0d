#!/usr/bin/env bash
# Installs what the end-to-end tests drive, idempotently (seconds when done):
#   Debian: pgJDBC (libpostgresql-jdbc-java), psql/pgbench come with postgresql-15
#   PyPI:   psycopg[binary], asyncpg, pytest in $HOOP_CACHE/venv (tests/requirements.txt, hash-pinned)
#   npm:    oidc-provider and pg (node-postgres) in tests/node (from package-lock.json)
#   browser test (tests/e2e/test_reviews.py): Debian's chromium (/usr/bin/chromium)
#           and playwright-core in tests/browser (from package-lock.json; it
#           drives that chromium, it never downloads a browser of its own)
# Assumes scripts/setup.sh ran (Postgres 15, Rust).
set -euo pipefail
cd "$(dirname "$0")/.."
HOOP_CACHE=${HOOP_CACHE:-/var/cache/hoop}
VENV="$HOOP_CACHE/venv"
step() { printf '==> %s\n' "$*"; }
die() { printf '\ntests/setup.sh FAILED: %s\n' "$*" >&2; exit 1; }

pkgs=()
for p in libpostgresql-jdbc-java default-jre-headless nodejs npm chromium; do
    case $p in
        default-jre-headless) command -v java >/dev/null && continue ;;
        nodejs) command -v node >/dev/null && continue ;;
        npm) command -v npm >/dev/null && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
    step "apt-get install ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >/dev/null || die "apt-get update failed"
    apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null || die "apt-get install ${pkgs[*]} failed"
fi
[ -r /usr/share/java/postgresql.jar ] || die "pgJDBC jar missing at /usr/share/java/postgresql.jar"
[ -x /usr/bin/chromium ] || die "chromium missing at /usr/bin/chromium (apt-get install chromium)"

# The venv is rebuilt whenever tests/requirements.txt changes (its hash is kept beside it).
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
    step "python venv: present ($VENV)"
else
    step "python venv $VENV: tests/requirements.txt (pinned, hash-checked)"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (python3-venv installed?)"
    "$VENV/bin/pip" install --quiet --no-deps --require-hashes -r tests/requirements.txt \
        || die "pip install -r tests/requirements.txt failed: a pinned file is not served or its hash differs (bash scripts/sources.sh names which)"
    printf '%s\n' "$want" >"$VENV/.requirements.sha256"
fi

if [ -d tests/node/node_modules/oidc-provider ] && [ -d tests/node/node_modules/pg ]; then
    step "npm packages: present"
else
    step "npm ci in tests/node"
    (cd tests/node && npm ci --no-audit --no-fund >/dev/null) || die "npm ci failed: check access to the npm registry"
fi
if [ -d tests/browser/node_modules/playwright-core ]; then
    step "playwright-core: present"
else
    step "npm ci in tests/browser (playwright-core)"
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >/dev/null) \
        || die "npm ci in tests/browser failed: check access to the npm registry"
fi
step "test dependencies ready"
