#!/usr/bin/env bash
# Gateway benchmark (not a timed test). In one run, side by side against one
# Postgres 15 cluster:
#   pgbench -S -c 8 -j 2 -T $T, simple and prepared protocol, and pgbench's
#   TPC-B script (-c 8, prepared): directly, through PgBouncer (session
#   mode), through hoop with recording off, through hoop with its defaults
#   (every statement recorded). Beside each proxy's TPS: its CPU time per
#   transaction (user + system, all threads, from /proc/<pid>/stat), which
#   is far steadier than TPS on a shared machine, then the same split into
#   user and system time (the kernel's share of the socket calls is in
#   system time; the proxy's own code in user time).
#   One client, one statement at a time (-S, -c 1): p50 and p99 latency, and
#   what each proxy adds to direct, and one fsync on the audit store's disk
#   (pg_test_fsync) to judge the latency target by.
#   Then streams a 1,000,000-row result through hoop and prints the
#   gateway's peak RSS (VmHWM), and streams another through PgBouncer and
#   both hoops, printing each proxy's CPU time for it.
# Targets (issue #14): hoop defaults >= 1.0x PgBouncer's TPS and <= 20 us of
# CPU per transaction; recording off <= PgBouncer's CPU; added one-client p50
# <= one fsync + 50 us; TPC-B >= 0.8x direct; peak RSS < 64 MB.
# Installs PgBouncer (Debian) if missing; builds hoop in release mode.
# BENCH_SECONDS=5 shortens each run; BENCH_HOOP=/path/to/hoop measures that
# build instead of building this checkout (before/after comparisons).
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

if [ -n "${BENCH_HOOP:-}" ]; then
    # Another build of hoop (an earlier commit, say) measured by this script.
    HOOP=$BENCH_HOOP
    echo "==> hoop: $HOOP"
else
    echo "==> building hoop (release)"
    cargo build --release -p hoop-proxy --bin hoop >/dev/null 2>&1 || cargo build --release -p hoop-proxy --bin hoop
    HOOP="$CARGO_TARGET_DIR/release/hoop"
fi

work=$(mktemp -d /tmp/hoop-bench.XXXXXX)
chmod 755 "$work"
# Postgres and PgBouncer run as postgres and write their logs here.
chown postgres "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/pgbouncer.pid" ] && kill "$(cat "$work/pgbouncer.pid")" 2>/dev/null || true
    bench_cluster_stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT_=$(free_port); HOOPPORT=$(free_port); HOOPPORT2=$(free_port); BOUNCERPORT=$(free_port)
PW=bench-gateway-pw

echo "==> Postgres 15 on $PGPORT_"
bench_cluster_start 256MB
runuser -u postgres -- "$PG/pgbench" -i -q -s 10 -h "$work/pg" -p "$PGPORT_" bench >/dev/null 2>&1
psql_su -d bench -c "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO bench_agent, hoop_gateway;"

echo "==> hoop on $HOOPPORT (defaults: every statement recorded)"
bench_hoop_start
pids+=("$hoop_pid")
echo "==> hoop on $HOOPPORT2 ([audit] record_statements = false)"
cp -r "$work/hoop" "$work/hoop2"
sed -i "s/127.0.0.1:$HOOPPORT/127.0.0.1:$HOOPPORT2/" "$work/hoop2/hoop.toml"
rm -f "$work/hoop2"/*.db*
printf '[audit]\nrecord_statements = false\n' >>"$work/hoop2/hoop.toml"
HOOP_LOG=warn "$HOOP" serve -c "$work/hoop2/hoop.toml" >"$work/hoop2.log" 2>&1 &
hoop2_pid=$!
pids+=("$hoop2_pid")
for _ in $(seq 50); do "$PG/pg_isready" -q -h 127.0.0.1 -p "$HOOPPORT2" && break; sleep 0.1; done
TOKEN2=$("$HOOP" token mint -c "$work/hoop2/hoop.toml" --sub bench --group bench --ttl 1h)

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

# CPU ticks (user + system, all threads) of a process so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The same, user and system apart: "USER SYSTEM".
cpu_split() { awk '{print $14, $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# run_pgbench PORT USER PASSWORD PID ARGS...: prints "TPS CPU_US_PER_TX
# USER_US_PER_TX SYSTEM_US_PER_TX" (CPU "-" when PID is empty: nothing to
# measure between client and server).
run_pgbench() {
    local port=$1 user=$2 password=$3 pid=$4 out before after tps
    shift 4
    [ -n "$pid" ] && before=$(cpu_split "$pid")
    out=$(PGPASSWORD=$password "$PG/pgbench" -n "$@" -T "$T" -h 127.0.0.1 -p "$port" -U "$user" bench 2>&1) \
        || { echo "$out" | tail -5 >&2; echo "0 - - -"; return; }
    tps=$(echo "$out" | sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -1)
    local tx
    tx=$(echo "$out" | sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p')
    if [ -n "$pid" ]; then
        after=$(cpu_split "$pid")
        echo "$tps $(echo "$before $after" | awk -v n="$tx" -v hz="$TICK" '
            function per(t) { return sprintf("%.1f", t / hz * 1e6 / n) }
            { if (n > 0) print per($3 + $4 - $1 - $2), per($3 - $1), per($4 - $2); else print "- - -" }')"
    else
        echo "$tps - - -"
    fi
}

# latency PORT USER PASSWORD MODE: one client, -S, per-transaction log;
# prints "P50_US P99_US".
latency() {
    local dir
    dir=$(mktemp -d "$work/lat.XXXXXX")
    (cd "$dir" && PGPASSWORD=$3 "$PG/pgbench" -n -S -c 1 -M "$4" -T "$T" -l \
        -h 127.0.0.1 -p "$1" -U "$2" bench >/dev/null 2>&1) || { echo "- -"; return; }
    cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '
        { v[NR] = $1 }
        END { if (NR == 0) { print "- -"; exit }
              printf "%d %d\n", v[int(NR * 0.50) + 1], v[int(NR * 0.99) + 1] }'
}

bouncer_pid=$(cat "$work/pgbouncer.pid")
paths=(direct pgbouncer hoop_norec hoop)
declare -A port=([direct]=$PGPORT_ [pgbouncer]=$BOUNCERPORT [hoop_norec]=$HOOPPORT2 [hoop]=$HOOPPORT)
declare -A user=([direct]=hoop_gateway [pgbouncer]=hoop_gateway [hoop_norec]=agent [hoop]=agent)
declare -A pass=([direct]=$PW [pgbouncer]=$PW [hoop_norec]=$TOKEN2 [hoop]=$TOKEN)
declare -A pid=([direct]="" [pgbouncer]=$bouncer_pid [hoop_norec]=$hoop2_pid [hoop]=$hoop_pid)
declare -A label=([direct]=direct [pgbouncer]="PgBouncer (session)" \
    [hoop_norec]="hoop, record_statements=false" [hoop]="hoop, defaults")
declare -A res
for mode in simple prepared; do
    echo "==> pgbench -S -c 8 -j 2 -T $T -M $mode"
    for p in "${paths[@]}"; do
        res[$p,$mode]=$(run_pgbench "${port[$p]}" "${user[$p]}" "${pass[$p]}" "${pid[$p]}" -S -c 8 -j 2 -M "$mode")
    done
done
echo "==> pgbench TPC-B -c 8 -j 2 -T $T -M prepared"
for p in "${paths[@]}"; do
    res[$p,tpcb]=$(run_pgbench "${port[$p]}" "${user[$p]}" "${pass[$p]}" "${pid[$p]}" -c 8 -j 2 -M prepared)
done
echo "==> one client, -S, -T $T: latency"
for mode in simple prepared; do
    for p in "${paths[@]}"; do
        res[$p,lat_$mode]=$(latency "${port[$p]}" "${user[$p]}" "${pass[$p]}" "$mode")
    done
done

field() { echo "${res[$1]}" | awk -v i="$2" '{print $i}'; }
echo
printf '| %-30s | %11s | %12s | %13s | %12s | %11s | %12s |\n' path "simple TPS" "CPU us/tx" "prepared TPS" "CPU us/tx" "TPC-B TPS" "CPU us/tx"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' "--------------------------------" -------------:  --------------: ---------------: --------------: -------------: --------------:
for p in "${paths[@]}"; do
    printf '| %-30s | %11.0f | %12s | %13.0f | %12s | %11.0f | %12s |\n' "${label[$p]}" \
        "$(field "$p,simple" 1)" "$(field "$p,simple" 2)" \
        "$(field "$p,prepared" 1)" "$(field "$p,prepared" 2)" \
        "$(field "$p,tpcb" 1)" "$(field "$p,tpcb" 2)"
done
echo
echo "Proxy CPU split, user / system us per transaction (simple; prepared; TPC-B):"
for p in pgbouncer hoop_norec hoop; do
    printf '  %-30s %s / %s; %s / %s; %s / %s\n' "${label[$p]}" \
        "$(field "$p,simple" 3)" "$(field "$p,simple" 4)" \
        "$(field "$p,prepared" 3)" "$(field "$p,prepared" 4)" \
        "$(field "$p,tpcb" 3)" "$(field "$p,tpcb" 4)"
done
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2fx", a/b; else print "n/a" }'; }
for mode in simple prepared; do
    echo "hoop defaults, $mode: $(ratio "$(field "hoop,$mode" 1)" "$(field "direct,$mode" 1)") of direct, $(ratio "$(field "hoop,$mode" 1)" "$(field "pgbouncer,$mode" 1)") of PgBouncer"
done
echo "hoop defaults, TPC-B: $(ratio "$(field hoop,tpcb 1)" "$(field direct,tpcb 1)") of direct"
echo
printf '| %-30s | %13s | %13s | %15s | %15s |\n' "one client, -S" "simple p50 us" "simple p99 us" "prepared p50 us" "prepared p99 us"
printf '|%s|%s|%s|%s|%s|\n' "--------------------------------" ---------------: ---------------: -----------------: -----------------:
for p in "${paths[@]}"; do
    printf '| %-30s | %13s | %13s | %15s | %15s |\n' "${label[$p]}" \
        "$(field "$p,lat_simple" 1)" "$(field "$p,lat_simple" 2)" \
        "$(field "$p,lat_prepared" 1)" "$(field "$p,lat_prepared" 2)"
done
# The latency target's "one fsync": pg_test_fsync (shipped with Postgres)
# on the file system of hoop's audit store, fdatasync after one 8 kB write
# (its mean over 2 s; the tool runs its other tests too, about 30 s).
fsync_us=$("$PG/pg_test_fsync" -s 2 -f "$work/hoop/fsync-probe" 2>/dev/null |
    awk '/fdatasync/ && /usecs\/op/ { print $(NF-1); exit }') || fsync_us=""
rm -f "$work/hoop/fsync-probe"
for p in pgbouncer hoop_norec hoop; do
    echo "${label[$p]} adds (p50/p99): simple $(( $(field "$p,lat_simple" 1) - $(field direct,lat_simple 1) ))/$(( $(field "$p,lat_simple" 2) - $(field direct,lat_simple 2) )) us, prepared $(( $(field "$p,lat_prepared" 1) - $(field direct,lat_prepared 1) ))/$(( $(field "$p,lat_prepared" 2) - $(field direct,lat_prepared 2) )) us"
done

if [ -n "$fsync_us" ]; then
    echo "one fsync on the audit store's disk (pg_test_fsync, fdatasync after one 8 kB write, mean): $fsync_us us"
    for mode in simple prepared; do
        added=$(( $(field "hoop,lat_$mode" 1) - $(field "direct,lat_$mode" 1) ))
        echo "  hoop defaults, $mode: adds $added us at p50 against a target of $fsync_us + 50 us: $(
            awk -v a="$added" -v f="$fsync_us" 'BEGIN { print (a <= f + 50) ? "met" : "missed" }')"
    done
else
    echo "one fsync: pg_test_fsync did not run; the latency target cannot be judged"
fi

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

echo
echo "==> streaming 1,000,000 rows (SELECT aid, abalance, filler, md5(aid::text)): each proxy's CPU"
stream_sql="select aid, abalance, filler, md5(aid::text) from pgbench_accounts"
printf '| %-30s | %25s | %9s |\n' path "CPU ms per 1,000,000 rows" "wall s"
printf '|%s|%s|%s|\n' "--------------------------------" --------------------------: ----------:
for p in pgbouncer hoop_norec hoop; do
    before=$(cpu_ticks "${pid[$p]}")
    start=$(date +%s.%N)
    PGPASSWORD=${pass[$p]} "$PG/psql" -X -q -h 127.0.0.1 -p "${port[$p]}" -U "${user[$p]}" -d bench \
        -c "$stream_sql" -o /dev/null
    end=$(date +%s.%N)
    after=$(cpu_ticks "${pid[$p]}")
    printf '| %-30s | %25.0f | %9.1f |\n' "${label[$p]}" \
        "$(awk -v a="$before" -v b="$after" -v hz="$TICK" 'BEGIN{print (b-a)/hz*1000}')" \
        "$(awk -v s="$start" -v e="$end" 'BEGIN{print e-s}')"
done

