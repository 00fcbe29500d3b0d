#!/usr/bin/env bash
# Regression suite of the hoop extension on one Postgres version:
#
#   scripts/regress.sh pg15|pg17|pg18
#
# Installs the extension into that Postgres (cargo pgrx install), starts a
# throw-away cluster as the postgres user with shared_preload_libraries=hoop,
# runs every extension/tests/regress/sql/*.sql with psql in a fresh database,
# and compares the output with extension/tests/regress/expected/NAME.pgNN.out
# (when it exists) or NAME.out. Independently of the expected output, a file
# fails when any raw test card number (or its reverse, hex, base64 or middle
# digits) appears outside the sections marked `\echo hoop:raw-allowed`, or in
# any `hoop: AUDIT` line of the server log.
#
# Prints one line per file and finally "regress pgNN: X passed, Y failed";
# exits non-zero when anything failed. Results stay in $HOOP_REGRESS_DIR
# (default /tmp/hoop-regress-pgNN) for inspection.
set -euo pipefail

version=${1:-}
case "$version" in
pg15 | pg17 | pg18) ;;
*)
    echo "usage: $0 pg15|pg17|pg18" >&2
    exit 2
    ;;
esac
major=${version#pg}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUITE="$ROOT/extension/tests/regress"
# shellcheck source=tests/kit/cluster.sh
. "$ROOT/tests/kit/cluster.sh"
PGBIN=$(hoop_cluster bin --version "$major") || exit 2
[ "$(id -u)" = 0 ] || { echo "regress: run as root (it installs the extension and runs Postgres as postgres)" >&2; exit 2; }

WORK=${HOOP_REGRESS_DIR:-/tmp/hoop-regress-$version}
LOG="$WORK/build.log"
rm -rf "$WORK"
mkdir -p "$WORK/results"

step() { printf '==> %s\n' "$*" >&2; }
fail_setup() {
    echo "regress $version: $1" >&2
    [ -f "${2:-}" ] && tail -n 30 "$2" >&2
    echo "regress $version: 0 passed, 1 failed"
    exit 1
}

# --- build and install ---------------------------------------------------------
step "installing the extension into Postgres $major"
(cd "$ROOT/extension" && cargo pgrx install --pg-config "$PGBIN/pg_config") >"$LOG" 2>&1 ||
    fail_setup "cargo pgrx install failed" "$LOG"
step "building the session signer"
(cd "$ROOT" && cargo build -q -p hoop-common --example sign_session) >>"$LOG" 2>&1 ||
    fail_setup "building common/examples/sign_session failed" "$LOG"
SIGNER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/sign_session"

# A fixed test key: 32 bytes of 0x2a. Only this throw-away cluster trusts it.
SEED=$(printf '%.0s*' $(seq 32) | base64 -w0)
TRUSTED=$("$SIGNER_BIN" --seed-base64 "$SEED" --kid regress --trusted-key)
SIGNER="$SIGNER_BIN --seed-base64 $SEED --kid regress"

# Test card numbers (Luhn-valid, distinct middle digits).
PANS=(4539148803436467 5425233430109903 378282246310005 6011000990139424 4916338506082832)

# --- cluster -------------------------------------------------------------------
# The test kit's cluster (tests/kit) in $WORK/cluster, its log kept in $WORK.
CLUSTER="$WORK/cluster"
SERVERLOG="$WORK/server.log"
chown -R postgres "$WORK"
chmod 755 "$WORK"
step "initdb and start ($CLUSTER)"
hoop_cluster_start "$CLUSTER" --version "$major" --auth-local trust --locale C --log "$SERVERLOG" \
    --conf - 2>>"$LOG" <<CONF || fail_setup "the cluster did not start" "$LOG"
listen_addresses = ''
shared_preload_libraries = 'hoop'
hoop.trusted_keys = '$TRUSTED'
hoop.exempt_roles = 'hoop_migrator'
lc_messages = 'C'
max_worker_processes = 8
max_prepared_transactions = 10
max_parallel_workers = 4
log_min_messages = warning
CONF
trap 'hoop_cluster stop "$CLUSTER" >/dev/null 2>&1 || true' EXIT
SOCK=$HOOP_CLUSTER_SOCKET
PORT=$HOOP_CLUSTER_PORT

PSQL=("$PGBIN/psql" -X -q -h "$SOCK" -p "$PORT" -U postgres -v ON_ERROR_STOP=0
    -v signer="$SIGNER" -v pan1="${PANS[0]}" -v pan2="${PANS[1]}" -v pan3="${PANS[2]}"
    -v pan4="${PANS[3]}" -v pan5="${PANS[4]}")

step "creating the template database"
"${PSQL[@]}" -d postgres -v ON_ERROR_STOP=1 -f "$SUITE/setup.sql" >"$WORK/setup.out" 2>&1 ||
    fail_setup "setup.sql failed" "$WORK/setup.out"

# --- leak patterns -------------------------------------------------------------
patterns="$WORK/forbidden.txt"
: >"$patterns"
for pan in "${PANS[@]}"; do
    len=${#pan}
    {
        echo "$pan"
        echo "$pan" | rev
        printf '%s' "$pan" | od -An -tx1 | tr -d ' \n'
        echo
        printf '%s' "$pan" | base64 -w0
        echo
        # digits 7..(len-4): never shown by any masking strategy
        echo "${pan:6:$((len - 10))}"
    } >>"$patterns"
done

# Lines outside `hoop:raw-allowed` sections that contain a forbidden pattern.
leaks() {
    awk '
        /hoop:raw-allowed/ { allowed = 1; next }
        /hoop:raw-forbidden/ { allowed = 0; next }
        !allowed { print NR ": " $0 }
    ' "$1" | grep -F -f "$patterns" || true
}

# --- run -----------------------------------------------------------------------
passed=0
failed=0
for file in "$SUITE"/sql/*.sql; do
    name=$(basename "$file" .sql)
    db="regress_$name"
    out="$WORK/results/$name.out"
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE \"$db\" TEMPLATE hoop_template" >/dev/null 2>&1
    (cd "$SUITE/sql" && "${PSQL[@]}" -a -d "$db" -f "$name.sql") >"$out" 2>&1 || true
    expected="$SUITE/expected/$name.$version.out"
    [ -f "$expected" ] || expected="$SUITE/expected/$name.out"
    problems=()
    if [ ! -f "$expected" ]; then
        problems+=("no expected output ($SUITE/expected/$name.out)")
    elif ! diff -u "$expected" "$out" >"$WORK/results/$name.diff"; then
        problems+=("output differs: $WORK/results/$name.diff")
    else
        rm -f "$WORK/results/$name.diff"
    fi
    leaked=$(leaks "$out")
    if [ -n "$leaked" ]; then
        printf '%s\n' "$leaked" >"$WORK/results/$name.leaks"
        problems+=("RAW CARD NUMBER in output: $WORK/results/$name.leaks")
    fi
    if [ ${#problems[@]} -eq 0 ]; then
        printf 'ok      %s\n' "$name"
        passed=$((passed + 1))
    else
        printf 'FAILED  %s: %s\n' "$name" "$(IFS=';'; echo "${problems[*]}")"
        failed=$((failed + 1))
    fi
done

# The audit lines never carry a value.
audit_leaks=$(grep -F 'hoop: AUDIT' "$SERVERLOG" | grep -F -f "$patterns" || true)
audit_lines=$(grep -cF 'hoop: AUDIT' "$SERVERLOG" || true)
if [ -n "$audit_leaks" ]; then
    printf 'FAILED  server log: raw card number in an AUDIT line\n'
    failed=$((failed + 1))
elif [ "${audit_lines:-0}" -eq 0 ]; then
    printf 'FAILED  server log: no hoop: AUDIT line was written\n'
    failed=$((failed + 1))
else
    printf 'ok      server log (%s AUDIT lines, no values)\n' "$audit_lines"
    passed=$((passed + 1))
fi

# No test card number appears anywhere in the server log: hoop masks every
# message and STATEMENT line Postgres writes there (12_server_log provokes them).
log_leaks=$(grep -n -F -f <(printf '%s\n' "${PANS[@]}") "$SERVERLOG" || true)
if [ -n "$log_leaks" ]; then
    printf '%s\n' "$log_leaks" >"$WORK/results/server-log.leaks"
    printf 'FAILED  server log: RAW CARD NUMBER in %s lines: %s\n' "$(wc -l <<<"$log_leaks")" "$WORK/results/server-log.leaks"
    failed=$((failed + 1))
else
    printf 'ok      server log (no card number in %s lines)\n' "$(wc -l <"$SERVERLOG")"
    passed=$((passed + 1))
fi

echo "regress $version: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
