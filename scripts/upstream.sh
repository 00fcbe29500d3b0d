#!/usr/bin/env bash
# PostgreSQL's own regression suite as the judge of the extension and of the
# gateway:
#
#   scripts/upstream.sh pg18|pg17|pg15 [extension|gateway] [regress|isolation]
#
# regress (default): the regression suite (pg_regress, parallel_schedule);
# isolation: the isolation suite (pg_isolation_regress, isolation_schedule:
# concurrent sessions, lock waits, deadlocks, cancels, two-phase commit),
# kept for 18 only ($HOOP_PG18_ISOLATION).
#
# extension (the `upstream` stage; default):
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
# gateway (the `compat` stage): the same suite directly and through `hoop
# serve` in front of the same cluster, with the permissive profile below,
# compared test by test against tests/compat-allowlist.txt (an entry
# NAME@pgNN holds for that version only). pg_regress runs
# stock: it connects through the gateway with its own PGOPTIONS.
#   The permissive profile: the token's group maps to a superuser role (the
#   suite creates databases, roles, tablespaces), hoop-defaults is switched
#   off ([policy.default_rules] enabled = false), no rules of its own, and the
#   gateway's own login role is a superuser too: the suite runs SET SESSION
#   AUTHORIZATION and RESET ROLE, which Postgres judges by the session user.
#   (Never in production: there the login role only holds the mapped roles.) The
#   gateway still verifies the token, connects as its own login role, sets
#   the role and the signed session, records every statement and masks card
#   numbers in what it returns. The cluster does not preload the extension
#   (its gateway-session refusals of SET ROLE, CREATE ROLE … would be judged
#   here otherwise; the extension is judged by the extension mode).
#
# HOOP_REGRESS_ENCODING=LATIN1 (any server encoding) creates the test
# database in that encoding (pg_regress --encoding), so its clients use it
# as their client_encoding: not part of CI, a judge of the gateway's reading
# of non-UTF-8 text.
#
# Results stay in $HOOP_UPSTREAM_DIR (default
# /tmp/hoop-upstream-pgNN[-gateway][-isolation]).
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
mode=${2:-extension}
case "$mode" in
extension | gateway) ;;
*)
    echo "usage: $0 pg15|pg17|pg18 [extension|gateway] [regress|isolation]" >&2
    exit 2
    ;;
esac
suite=${3:-regress}
case "$suite" in
regress)
    runner=pg_regress
    schedule=parallel_schedule
    ;;
isolation)
    runner=pg_isolation_regress
    schedule=isolation_schedule
    ;;
*)
    echo "usage: $0 pg15|pg17|pg18 [extension|gateway] [regress|isolation]" >&2
    exit 2
    ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=/dev/null
. "${HOOP_CACHE:-/var/cache/hoop}/env.sh"
# shellcheck source=tests/kit/cluster.sh
. "$ROOT/tests/kit/cluster.sh"
suite_var="HOOP_PG${major}_${suite^^}"
PGBIN=$(hoop_cluster bin --version "$major") || exit 2
SUITE=${!suite_var:-}
[ -x "$SUITE/$runner" ] || { echo "upstream $version: $suite suite not found in '$SUITE' (scripts/setup.sh)" >&2; exit 2; }
tail=$([ "$suite" = regress ] || echo "-$suite")
if [ "$mode" = extension ]; then
    ALLOW="$ROOT/extension/tests/upstream-allowlist.txt"
    WORK=${HOOP_UPSTREAM_DIR:-/tmp/hoop-upstream-$version$tail}
else
    ALLOW="$ROOT/tests/compat-allowlist.txt"
    WORK=${HOOP_UPSTREAM_DIR:-/tmp/hoop-upstream-$version-gateway$tail}
fi
rm -rf "$WORK" && mkdir -p "$WORK"
LOG="$WORK/build.log"
step() { printf '==> %s\n' "$*" >&2; }
die() {
    echo "upstream $version: $1" >&2
    [ -f "${2:-}" ] && tail -n 30 "$2" >&2
    exit 1
}

if [ "$mode" = extension ]; then
    step "installing the extension into Postgres $major"
    (cd "$ROOT/extension" && cargo pgrx install --pg-config "$PGBIN/pg_config") >"$LOG" 2>&1 ||
        die "cargo pgrx install failed" "$LOG"
else
    step "building hoop"
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    (cd "$ROOT" && cargo build -p hoop-proxy --bin hoop) >"$LOG" 2>&1 || die "building hoop failed" "$LOG"
    HOOP="$CARGO_TARGET_DIR/debug/hoop"
fi

# The test kit's cluster (tests/kit) in $WORK/cluster, its log kept in
# $WORK; local logins trusted, SCRAM on 127.0.0.1 (the gateway's login).
CLUSTER="$WORK/cluster"
SERVERLOG="$WORK/server.log"
chown -R postgres "$WORK"
hoop_cluster_start "$CLUSTER" --version "$major" --auth-local trust --locale C --log "$SERVERLOG" \
    --conf - 2>>"$LOG" <<CONF || die "the cluster did not start" "$LOG"
listen_addresses = '$([ "$mode" = gateway ] && echo 127.0.0.1)'
lc_messages = 'C'
max_connections = 60
max_prepared_transactions = 10
log_min_messages = warning
include_if_exists = 'hoop.conf'
CONF
PGDATA=$HOOP_CLUSTER_DATA
SOCK=$HOOP_CLUSTER_SOCKET
PORT=$HOOP_CLUSTER_PORT
# Between runs the cluster stops cleanly and starts again as it was made.
cluster_start() { hoop_cluster start "$CLUSTER" >>"$LOG" 2>&1; }
cluster_stop() { hoop_cluster stop "$CLUSTER" --keep >>"$LOG" 2>&1; }
trap 'hoop_cluster stop "$CLUSTER" >/dev/null 2>&1 || true' EXIT

# run_suite NAME [pg_regress options...]: one full run into $WORK/NAME.
run_suite() {
    local name=$1
    shift
    local dir="$WORK/$name"
    cp -a "$SUITE" "$dir"
    chown -R postgres "$dir"
    local start=$SECONDS
    # pg_regress writes into its input directory's neighbours (results/, the
    # generated sql/ and expected/ files): each run gets its own copy.
    # pg_regress exits non-zero whenever any test differs from upstream's
    # expected output; the comparison below is what judges.
    # CONNECT: how pg_regress reaches the server (default: the socket, as postgres).
    local connect=(${CONNECT:---host=$SOCK --port=$PORT --user=postgres})
    (cd "$dir" && runuser -u postgres -- env -u PGOPTIONS ${RUN_ENV:-} "./$runner" --inputdir=. --outputdir=. \
        --bindir="$PGBIN" --dlpath=. "${connect[@]}" \
        --schedule="$schedule" --max-concurrent-tests=20 \
        ${HOOP_REGRESS_ENCODING:+--encoding="$HOOP_REGRESS_ENCODING"} "$@") >"$WORK/$name.log" 2>&1 || true
    step "$name: $(grep -E 'tests (passed|failed)|All [0-9]+ tests' "$WORK/$name.log" | tail -n 1 | tr -s ' ') ($((SECONDS - start))s)"
}

# dump_check: pg_dump (another client nobody here wrote) of the regression
# database the gateway run left, directly and through the gateway, plain and
# in parallel directory format (synchronized snapshots); then the plain dump
# restored by psql and the parallel one by pg_restore -j 2, through the
# gateway and directly, each dumped directly. The outputs must be identical
# (but for pg_dump's random \restrict key).
dump_problems=()
dump_check() {
    local start=$SECONDS d="$WORK/dump"
    mkdir -p "$d" && chown postgres "$d"
    direct() { runuser -u postgres -- "$@" -h "$SOCK" -p "$PORT" -U postgres; }
    via() { PGPASSWORD=$token "$@" -h 127.0.0.1 -p "$HOOPPORT" -U compat-agent; }
    unkeyed() { sed -i '/^\\\(un\)\?restrict /d' "$@"; }
    direct "$PGBIN/pg_dump" -d regression -f "$d/direct.sql" 2>>"$d/errors" ||
        dump_problems+=("pg_dump directly failed ($d/errors)")
    via "$PGBIN/pg_dump" -d regression -f "$d/gateway.sql" 2>>"$d/errors" ||
        dump_problems+=("pg_dump through the gateway failed ($d/errors)")
    via "$PGBIN/pg_dump" -d regression -Fd -j 2 -f "$d/gateway.dir" 2>>"$d/errors" ||
        dump_problems+=("parallel pg_dump through the gateway failed ($d/errors)")
    for how in direct via; do
        direct "$PGBIN/createdb" -T template0 "restored_$how"
        $how "$PGBIN/psql" -X -q -d "restored_$how" -f "$d/direct.sql" >/dev/null 2>"$d/restore-$how.err" || true
        direct "$PGBIN/pg_dump" -d "restored_$how" -f "$d/restored-$how.sql" 2>>"$d/errors"
    done
    # The parallel dump restored in parallel by pg_restore (-j 2).
    chmod -R a+rX "$d/gateway.dir"
    for how in direct via; do
        direct "$PGBIN/createdb" -T template0 "pg_restored_$how"
        $how "$PGBIN/pg_restore" -j 2 -d "pg_restored_$how" "$d/gateway.dir" 2>>"$d/errors" ||
            dump_problems+=("pg_restore -j 2 ($how) failed ($d/errors)")
        direct "$PGBIN/pg_dump" -d "pg_restored_$how" -f "$d/pg_restored-$how.sql" 2>>"$d/errors"
    done
    unkeyed "$d/direct.sql" "$d/gateway.sql" "$d/restored-direct.sql" "$d/restored-via.sql" \
        "$d/pg_restored-direct.sql" "$d/pg_restored-via.sql"
    cmp -s "$d/direct.sql" "$d/gateway.sql" ||
        dump_problems+=("pg_dump through the gateway differs: diff $d/direct.sql $d/gateway.sql")
    cmp -s "$d/restored-direct.sql" "$d/restored-via.sql" ||
        dump_problems+=("restoring through the gateway differs: diff $d/restored-direct.sql $d/restored-via.sql")
    cmp -s "$d/pg_restored-direct.sql" "$d/pg_restored-via.sql" ||
        dump_problems+=("pg_restore through the gateway differs: diff $d/pg_restored-direct.sql $d/pg_restored-via.sql")
    step "pg_dump and restore, directly and through the gateway: $([ ${#dump_problems[@]} -eq 0 ] && echo identical || echo DIFFERENT) ($((SECONDS - start))s, $(wc -l <"$d/direct.sql") lines)"
}

start_time() { "$PGBIN/psql" -XAtq -h "$SOCK" -p "$PORT" -U postgres -d postgres -c 'SELECT pg_postmaster_start_time()'; }

step "run 1: plain cluster (Postgres $major, port $PORT)"
cluster_start || die "the cluster did not start" "$SERVERLOG"
run_suite plain
cluster_stop

if [ "$mode" = extension ]; then
    step "run 2: shared_preload_libraries = 'hoop', CREATE EXTENSION hoop"
    echo "shared_preload_libraries = 'hoop'" >"$PGDATA/hoop.conf"
    chown postgres "$PGDATA/hoop.conf"
    cluster_start || die "the cluster did not start with hoop preloaded" "$SERVERLOG"
    before=$(start_time)
    log_from=$(wc -l <"$SERVERLOG")
    run_suite hoop --load-extension=hoop
    after=$(start_time || echo unreachable)
    cluster_stop
else
    step "run 2: through hoop serve (permissive profile)"
    cluster_start || die "the cluster did not start" "$SERVERLOG"
    "$PGBIN/psql" -XAtq -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL' >>"$LOG" 2>&1 || die "creating the gateway roles failed" "$LOG"
CREATE ROLE hoop_gateway SUPERUSER LOGIN NOINHERIT PASSWORD 'compat-gateway-pw';
CREATE ROLE regress_gateway_super SUPERUSER NOLOGIN;
GRANT regress_gateway_super TO hoop_gateway;
SQL
    gw="$WORK/gateway"
    mkdir -p "$gw"
    hoop_gateway_files "$gw" "$HOOP" compat compat-gateway-pw >/dev/null
    HOOPPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    hoop_gateway_toml "$gw" "$HOOPPORT" "$PORT" compat regress_gateway_super compat \
        "$(printf '[policy.default_rules]\nenabled = false')"
    HOOP_LOG=info "$HOOP" serve -c "$gw/hoop.toml" >"$WORK/hoop.log" 2>&1 &
    hoop_pid=$!
    trap 'kill "$hoop_pid" 2>/dev/null || true; hoop_cluster stop "$CLUSTER" >/dev/null 2>&1 || true' EXIT
    for _ in $(seq 100); do "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$HOOPPORT" && break; sleep 0.1; done
    token=$("$HOOP" token mint -c "$gw/hoop.toml" --sub compat-agent --group compat --ttl 1h)
    before=$(start_time)
    log_from=$(wc -l <"$SERVERLOG")
    CONNECT="--host=127.0.0.1 --port=$HOOPPORT --user=compat-agent" RUN_ENV="PGPASSWORD=$token" run_suite hoop
    if [ "$suite" = regress ]; then
        dump_check
    fi
    after=$(start_time || echo unreachable)
    kill "$hoop_pid" 2>/dev/null || true
    cluster_stop
fi

# --- judge -----------------------------------------------------------------------
problems=("${dump_problems[@]}")
crashes=$(tail -n +"$((log_from + 1))" "$SERVERLOG" | grep -E 'PANIC|terminated by signal|server process .* was terminated' || true)
[ -z "$crashes" ] || problems+=("backend crash in the $mode run: $(head -n 3 <<<"$crashes" | tr '\n' ' ')")
[ "$before" = "$after" ] || problems+=("the postmaster restarted during the run ($before -> $after)")
if [ "$mode" = gateway ]; then
    refused=$(grep -c 'statement refused\|refused by rule' "$WORK/hoop.log" || true)
    printf 'upstream %s gateway: %s statements refused by the gateway (hoop.log)\n' "$version" "${refused:-0}"
    # A refusal is answered by the gateway; the server hears of one only
    # when it must fail work of the client's already under way (the
    # stand-in Describe's error): count those, and fail on them.
    heard=$(tail -n +"$((log_from + 1))" "$SERVERLOG" | grep -c 'hoop: refused statement' || true)
    printf 'upstream %s gateway: %s refusals the server had to fail itself (server log)\n' "$version" "${heard:-0}"
    [ "${heard:-0}" -eq 0 ] || problems+=("$heard refusals reached the server (\"hoop: refused statement\" in $SERVERLOG)")
    # Texts the gateway's grammar (PostgreSQL 18's) rejected are parsed by
    # the server too, whose own error answers them; those its grammar
    # accepted (an older version's) are refused with the gateway's error, and
    # logged by the server as a Describe of "hoop: syntax check".
    diverged=$(tail -n +"$((log_from + 1))" "$SERVERLOG" | grep -c 'statement "hoop: syntax check" does not exist' || true)
    printf 'upstream %s gateway: %s texts only the server'"'"'s grammar accepts, refused (server log)\n' "$version" "${diverged:-0}"
fi

# An entry NAME holds for every version, NAME@pgNN for that one only.
allowed() { grep -qE "^$1(@$version)?[[:space:]]" "$ALLOW" 2>/dev/null; }
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
    case "$t" in '' | '#'*) continue ;; *@*) [ "${t#*@}" = "$version" ] || continue ;; esac
    # Entries name regression tests; the isolation suite has none so far.
    [ "$suite" = regress ] || continue
    [ -f "$WORK/${t%@*}.diff" ] || stale+=("$t")
done <"$ALLOW"

if [ "$mode" = gateway ]; then how="directly and through the gateway"; else how="with and without hoop"; fi
printf 'upstream %s %s %s: %d tests, %d identical %s, %d allowlisted (%s)\n' \
    "$version" "$mode" "$suite" "$tests" "$same" "$how" "${#allowed_diffs[@]}" "${allowed_diffs[*]:-none}"
[ ${#stale[@]} -eq 0 ] || printf 'upstream %s: allowlist entries that no longer differ: %s\n' "$version" "${stale[*]}"
# The schedules hold about 220 regression tests and 120 isolation tests.
least=$([ "$suite" = regress ] && echo 150 || echo 100)
[ "$tests" -ge "$least" ] || problems+=("only $tests upstream $suite tests ran: see $WORK/plain.log")
[ ${#differing[@]} -eq 0 ] || problems+=("output differs only $([ "$mode" = gateway ] && echo 'through the gateway' || echo 'with hoop loaded'): ${differing[*]} (diffs: $WORK/<test>.diff)")
if [ ${#problems[@]} -gt 0 ]; then
    printf 'upstream %s FAILED:\n' "$version"
    printf '    %s\n' "${problems[@]}"
    exit 1
fi
echo "upstream $version: ok (no crash, postmaster up since $before)"
