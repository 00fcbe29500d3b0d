#!/usr/bin/env bash
# PostgreSQL's own regression suite as the judge of the extension:
#
#   scripts/upstream.sh pg17|pg15
#
# Runs the upstream suite (pg_regress, the full parallel schedule, from the
# sources scripts/setup.sh keeps in $HOOP_PGNN_REGRESS) twice on one
# throw-away cluster: first plain, then with shared_preload_libraries = 'hoop'
# and `CREATE EXTENSION hoop` in the test database (pg_regress
# --load-extension). The two outputs are compared test by test; the stage is
# green only when they are identical, except for the tests listed in
# extension/tests/upstream-allowlist.txt (each with its reason), and when no
# backend crashed (no PANIC, no "terminated by signal", the postmaster never
# restarted). Failures against upstream's own expected files are not ours to
# judge: the same minor-version drift shows in both runs.
#
# Results stay in $HOOP_UPSTREAM_DIR (default /tmp/hoop-upstream-pgNN).
set -euo pipefail

version=${1:-}
case "$version" in
pg15 | pg17) ;;
*)
    echo "usage: $0 pg15|pg17" >&2
    exit 2
    ;;
esac
major=${version#pg}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=/dev/null
. "${HOOP_CACHE:-/var/cache/hoop}/env.sh"
bin_var="HOOP_PG${major}_BIN"
regress_var="HOOP_PG${major}_REGRESS"
PGBIN=${!bin_var:-}
SUITE=${!regress_var:-}
[ -x "$PGBIN/postgres" ] || { echo "upstream $version: Postgres $major not found (scripts/setup.sh)" >&2; exit 2; }
[ -x "$SUITE/pg_regress" ] || { echo "upstream $version: regression suite not found in '$SUITE' (scripts/setup.sh)" >&2; exit 2; }
ALLOW="$ROOT/extension/tests/upstream-allowlist.txt"

WORK=${HOOP_UPSTREAM_DIR:-/tmp/hoop-upstream-$version}
rm -rf "$WORK" && mkdir -p "$WORK"
LOG="$WORK/build.log"
step() { printf '==> %s\n' "$*" >&2; }
die() {
    echo "upstream $version: $1" >&2
    [ -f "${2:-}" ] && tail -n 30 "$2" >&2
    exit 1
}

step "installing the extension into Postgres $major"
(cd "$ROOT/extension" && cargo pgrx install --pg-config "$PGBIN/pg_config") >"$LOG" 2>&1 ||
    die "cargo pgrx install failed" "$LOG"

# pg_regress writes into its input directory's neighbours (results/, the
# generated sql/ and expected/ files): each run gets its own copy.
PGDATA="$WORK/data"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
chown -R postgres "$WORK"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust --no-sync \
    --locale=C --encoding=UTF8 >>"$LOG" 2>&1 || die "initdb failed" "$LOG"
cat >>"$PGDATA/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK'
fsync = off
lc_messages = 'C'
max_connections = 60
max_prepared_transactions = 10
log_min_messages = warning
include_if_exists = 'hoop.conf'
CONF
SERVERLOG="$WORK/server.log"
pg_ctl() { runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$SERVERLOG" -w -t 120 "$@" >>"$LOG" 2>&1; }
trap 'pg_ctl -m immediate stop || true' EXIT

# run_suite NAME [pg_regress options...]: one full run into $WORK/NAME.
run_suite() {
    local name=$1
    shift
    local dir="$WORK/$name"
    cp -a "$SUITE" "$dir"
    chown -R postgres "$dir"
    local start=$SECONDS
    # pg_regress exits non-zero whenever any test differs from upstream's
    # expected output; the comparison below is what judges.
    (cd "$dir" && runuser -u postgres -- env -u PGOPTIONS ./pg_regress --inputdir=. --outputdir=. \
        --bindir="$PGBIN" --dlpath=. --host="$WORK" --port="$PORT" --user=postgres \
        --schedule=parallel_schedule --max-concurrent-tests=20 "$@") >"$WORK/$name.log" 2>&1 || true
    step "$name: $(grep -E 'tests (passed|failed)|All [0-9]+ tests' "$WORK/$name.log" | tail -n 1 | tr -s ' ') ($((SECONDS - start))s)"
}

start_time() { "$PGBIN/psql" -XAtq -h "$WORK" -p "$PORT" -U postgres -d postgres -c 'SELECT pg_postmaster_start_time()'; }

step "run 1: plain cluster (Postgres $major, port $PORT)"
pg_ctl start || die "the cluster did not start" "$SERVERLOG"
run_suite plain
pg_ctl -m fast stop

step "run 2: shared_preload_libraries = 'hoop', CREATE EXTENSION hoop"
echo "shared_preload_libraries = 'hoop'" >"$PGDATA/hoop.conf"
chown postgres "$PGDATA/hoop.conf"
: >"$SERVERLOG.hoop"
pg_ctl start || die "the cluster did not start with hoop preloaded" "$SERVERLOG"
before=$(start_time)
log_from=$(wc -l <"$SERVERLOG")
run_suite hoop --load-extension=hoop
after=$(start_time || echo unreachable)
pg_ctl -m fast stop

# --- judge -----------------------------------------------------------------------
problems=()
crashes=$(tail -n +"$((log_from + 1))" "$SERVERLOG" | grep -E 'PANIC|terminated by signal|server process .* was terminated' || true)
[ -z "$crashes" ] || problems+=("backend crash with hoop loaded: $(head -n 3 <<<"$crashes" | tr '\n' ' ')")
[ "$before" = "$after" ] || problems+=("the postmaster restarted during the run ($before -> $after)")

allowed() { grep -qE "^$1[[:space:]]" "$ALLOW" 2>/dev/null; }
tests=0
same=0
allowed_diffs=()
differing=()
for out in "$WORK/plain/results/"*.out; do
    t=$(basename "$out" .out)
    tests=$((tests + 1))
    other="$WORK/hoop/results/$t.out"
    if [ -f "$other" ] && cmp -s "$out" "$other"; then
        same=$((same + 1))
        continue
    fi
    diff -u "$out" "$other" >"$WORK/$t.diff" 2>&1 || true
    if allowed "$t"; then allowed_diffs+=("$t"); else differing+=("$t"); fi
done
# Allowlist entries that no longer differ are stale: say so (they hide nothing, but rot).
stale=()
while read -r t _; do
    case "$t" in '' | '#'*) continue ;; esac
    [ -f "$WORK/$t.diff" ] || stale+=("$t")
done <"$ALLOW"

printf 'upstream %s: %d tests, %d identical with and without hoop, %d allowlisted (%s)\n' \
    "$version" "$tests" "$same" "${#allowed_diffs[@]}" "${allowed_diffs[*]:-none}"
[ ${#stale[@]} -eq 0 ] || printf 'upstream %s: allowlist entries that no longer differ: %s\n' "$version" "${stale[*]}"
[ "$tests" -ge 150 ] || problems+=("only $tests upstream tests ran (the schedule has about 200): see $WORK/plain.log")
[ ${#differing[@]} -eq 0 ] || problems+=("output differs only with hoop loaded: ${differing[*]} (diffs: $WORK/<test>.diff)")
if [ ${#problems[@]} -gt 0 ]; then
    printf 'upstream %s FAILED:\n' "$version"
    printf '    %s\n' "${problems[@]}"
    exit 1
fi
echo "upstream $version: ok (no crash, postmaster up since $before)"
