#!/usr/bin/env bash
# Gateway benchmark (not a timed test). In one run, side by side:
#   pgbench -S -c 8 -j 2 -T 20, simple and prepared protocol:
#     directly to Postgres 15, through hoop, through PgBouncer (session mode)
#   then streams a 1,000,000-row result through hoop and prints the
#   gateway's peak RSS (VmHWM).
# Targets: hoop >= 0.8x direct and >= 1.0x PgBouncer; peak RSS flat, < 64 MB.
# Installs PgBouncer (Debian) if missing; builds hoop in release mode.
# BENCH_SECONDS=5 shortens each run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
HOOP_CACHE=${HOOP_CACHE:-/var/cache/hoop}
# shellcheck source=/dev/null
[ -r "$HOOP_CACHE/env.sh" ] && . "$HOOP_CACHE/env.sh"
PG=${HOOP_PG15_BIN:-/usr/lib/postgresql/15/bin}
T=${BENCH_SECONDS:-20}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
# shellcheck source=bench/lib.sh
. bench/lib.sh

[ "$(id -u)" = 0 ] || { echo "run as root (clusters run as the postgres user via runuser)"; exit 1; }
[ -x "$PG/pgbench" ] || { echo "pgbench missing in $PG: run scripts/setup.sh"; exit 1; }
if ! command -v pgbouncer >/dev/null; then
    echo "==> apt-get install pgbouncer"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pgbouncer >/dev/null
fi
# Debian starts a pgbouncer service on install; the benchmark runs its own.
systemctl stop pgbouncer >/dev/null 2>&1 || true

echo "==> building hoop (release)"
cargo build --release -p hoop-proxy --bin hoop >/dev/null 2>&1 || cargo build --release -p hoop-proxy --bin hoop
HOOP="$CARGO_TARGET_DIR/release/hoop"

work=$(mktemp -d /tmp/hoop-bench.XXXXXX)
chmod 755 "$work"
# Postgres and PgBouncer run as postgres and write their logs here.
chown postgres "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/pgbouncer.pid" ] && kill "$(cat "$work/pgbouncer.pid")" 2>/dev/null || true
    runuser -u postgres -- "$PG/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT_=$(free_port); HOOPPORT=$(free_port); BOUNCERPORT=$(free_port)
PW=bench-gateway-pw

echo "==> Postgres 15 on $PGPORT_"
bench_cluster_start 256MB
runuser -u postgres -- "$PG/pgbench" -i -q -s 10 -h "$work/pg" -p "$PGPORT_" bench >/dev/null 2>&1
psql_su -d bench -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_agent, hoop_gateway;"

echo "==> hoop on $HOOPPORT"
bench_hoop_start
pids+=("$hoop_pid")

echo "==> PgBouncer (session mode) on $BOUNCERPORT"
cat >"$work/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PGPORT_ dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCERPORT
unix_socket_dir =
auth_type = plain
auth_file = $work/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
INI
echo "\"hoop_gateway\" \"$PW\"" >"$work/userlist.txt"
chown postgres "$work/pgbouncer.ini" "$work/userlist.txt"
runuser -u postgres -- pgbouncer -d "$work/pgbouncer.ini"
sleep 1

run_pgbench() { # NAME PORT USER PASSWORD MODE
    local out
    out=$(PGPASSWORD=$4 "$PG/pgbench" -n -S -c 8 -j 2 -T "$T" -M "$5" -h 127.0.0.1 -p "$2" -U "$3" bench 2>&1) \
        || { echo "$out" >&2; echo 0; return; }
    echo "$out" | sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -1
}

declare -A tps
for mode in simple prepared; do
    echo "==> pgbench -S -c 8 -j 2 -T $T -M $mode"
    tps[direct_$mode]=$(run_pgbench direct "$PGPORT_" hoop_gateway "$PW" "$mode")
    tps[hoop_$mode]=$(run_pgbench hoop "$HOOPPORT" agent "$TOKEN" "$mode")
    tps[pgbouncer_$mode]=$(run_pgbench pgbouncer "$BOUNCERPORT" hoop_gateway "$PW" "$mode")
done

echo
printf '%-10s %12s %12s %12s %14s %16s\n' mode direct hoop pgbouncer hoop/direct hoop/pgbouncer
for mode in simple prepared; do
    d=${tps[direct_$mode]}; h=${tps[hoop_$mode]}; b=${tps[pgbouncer_$mode]}
    printf '%-10s %12.0f %12.0f %12.0f %14s %16s\n' "$mode" "$d" "$h" "$b" \
        "$(awk -v a="$h" -v b="$d" 'BEGIN{ if (b>0) printf "%.2fx", a/b; else print "n/a" }')" \
        "$(awk -v a="$h" -v b="$b" 'BEGIN{ if (b>0) printf "%.2fx", a/b; else print "n/a" }')"
done

echo
echo "==> streaming 1,000,000 rows through hoop"
rss_before=$(awk '/VmRSS/{print $2}' "/proc/$hoop_pid/status")
start=$(date +%s.%N)
rows=$(PGPASSWORD=$TOKEN "$PG/psql" -X -q -A -t -h 127.0.0.1 -p "$HOOPPORT" -U agent -d bench \
    -c "\\copy (select a.aid, a.bid, a.abalance, a.filler from pgbench_accounts a) to stdout" | wc -l)
rows2=$(PGPASSWORD=$TOKEN "$PG/psql" -X -q -A -t -h 127.0.0.1 -p "$HOOPPORT" -U agent -d bench \
    -c "select aid, abalance, filler from pgbench_accounts" | wc -l)
end=$(date +%s.%N)
hwm=$(awk '/VmHWM/{print $2}' "/proc/$hoop_pid/status")
echo "rows via COPY: $rows, rows via SELECT: $rows2 ($(awk -v s="$start" -v e="$end" 'BEGIN{printf "%.1f", e-s}') s)"
echo "hoop RSS before: $((rss_before / 1024)) MB; peak RSS (VmHWM) over the whole run: $((hwm / 1024)) MB (target < 64 MB)"
