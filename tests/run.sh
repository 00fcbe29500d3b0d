#!/usr/bin/env bash
# Every gateway test, one command:
#   1. the gateway's Rust tests (unit + raw protocol + JWT/OIDC logins against
#      a real Postgres 15 and a real oidc-provider): cargo test -p hoop-proxy;
#      the raw-protocol and login suites again on Postgres 17 and 18
#   2. client compatibility (psql, pgbench, psycopg 3, asyncpg, node-postgres,
#      pgJDBC) through the `hoop` binary and directly, and the gateway with the
#      hoop extension preloaded (masking by mapped role, direct access
#      refused): pytest tests/e2e
# Installs what it needs first (scripts/setup.sh, tests/setup.sh). Runs as
# root (test clusters run as the postgres user via runuser).
# Ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
HOOP_CACHE=${HOOP_CACHE:-/var/cache/hoop}

bash scripts/setup.sh >/dev/null || { echo "scripts/setup.sh failed (run it alone to see why)"; echo "0 passed, 1 failed"; exit 1; }
bash tests/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
# shellcheck source=/dev/null
. "$HOOP_CACHE/env.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}

passed=0
failed=0
log=$(mktemp -d)

echo "==> building hoop"
if ! cargo build -p hoop-proxy --bin hoop >"$log/build.log" 2>&1; then
    tail -n 30 "$log/build.log"
    echo "0 passed, 1 failed"
    exit 1
fi
export HOOP_BIN="$CARGO_TARGET_DIR/debug/hoop"

echo "==> installing the hoop extension into Postgres 15 (tests/e2e/test_extension.py uses it)"
if ! (cd extension && cargo pgrx install --pg-config "$HOOP_PG15_BIN/pg_config" >"$log/ext.log" 2>&1); then
    echo "!! cargo pgrx install failed; the extension tests use whatever is installed (or fail saying it is missing):"
    tail -n 15 "$log/ext.log"
fi

echo "==> cargo test -p hoop-proxy"
cargo test -p hoop-proxy 2>&1 | tee "$log/cargo.log" | grep -E '^test .* (ok|FAILED)$|^test result|panicked' || true
p=$(grep -E '^test result' "$log/cargo.log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
f=$(grep -E '^test result' "$log/cargo.log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
if ! grep -q '^test result' "$log/cargo.log"; then
    tail -n 30 "$log/cargo.log"
    f=1
fi
passed=$((passed + ${p:-0}))
failed=$((failed + ${f:-0}))

# The relay and login suites again against Postgres 17 and 18 (no TLS in
# those builds: the upstream TLS test then checks the gateway refuses).
for v in 17 18; do
    echo "==> cargo test -p hoop-proxy --test relay --test login (Postgres $v)"
    HOOP_PG_VERSION=$v cargo test -p hoop-proxy --test relay --test login 2>&1 \
        | tee "$log/cargo$v.log" | grep -E '^test .* FAILED$|^test result|panicked' || true
    p=$(grep -E '^test result' "$log/cargo$v.log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
    f=$(grep -E '^test result' "$log/cargo$v.log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
    grep -q '^test result' "$log/cargo$v.log" || { tail -n 30 "$log/cargo$v.log"; f=1; }
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
done

echo "==> pytest tests/e2e (client compatibility)"
"$HOOP_CACHE/venv/bin/pytest" -q -rfE tests/e2e 2>&1 | tee "$log/pytest.log" | tail -n 40
# pytest's own summary is its last line ("8 failed, 3 passed, 2 errors in
# 7.99s"); counts elsewhere in the log (a server's message, a PID) are not
# results.
summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped).* in [0-9.]+s' "$log/pytest.log" | tail -n 1)
p=$(grep -Eo '[0-9]+ passed' <<<"$summary" | cut -d' ' -f1)
f=$(grep -Eo '[0-9]+ (failed|errors?)' <<<"$summary" | cut -d' ' -f1 | awk '{s+=$1} END {print s+0}')
if [ -z "$summary" ] || ! grep -Eq '[0-9]+ (passed|failed|error)' <<<"$summary"; then
    f=1
fi
passed=$((passed + ${p:-0}))
failed=$((failed + ${f:-0}))

# Every test cluster is the test kit's (tests/kit): it stops once the
# process that started it (a test binary, pytest) is gone, however it ended.
rm -rf "$log"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
