#!/usr/bin/env bash
# Audit benchmark (not a timed test). In one run, side by side:
#   (a) records/s into the audit store: SQLite synchronous=FULL (the
#       default), SQLite NORMAL and PostgreSQL, with 8, 64 and 256
#       concurrent writers, each waiting for its record to be durable before
#       sending the next (as the relay waits for begin_statement). Fresh
#       store per figure; the Postgres store is a throwaway cluster.
#   (b) what recording statements costs the relay: pgbench -S -c 8 -j 2
#       through hoop gateways in front of one Postgres 15, one with [audit]
#       as default (SQLite FULL) and one with `record_statements = false`,
#       simple and prepared protocol; for comparison a third records into
#       SQLite NORMAL (no fsync per statement: what the disk's fsync costs).
# Targets: SQLite FULL >= 20,000 records/s with group commit; relay with
# recording >= 0.9x relay without.
# Builds hoop and the throughput example in release mode.
# BENCH_SECONDS=5 shortens each run (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
HOOP_CACHE=${HOOP_CACHE:-/var/cache/hoop}
# shellcheck source=/dev/null
[ -r "$HOOP_CACHE/env.sh" ] && . "$HOOP_CACHE/env.sh"
PG=${HOOP_PG15_BIN:-/usr/lib/postgresql/15/bin}
T=${BENCH_SECONDS:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
# shellcheck source=bench/lib.sh
. bench/lib.sh

[ "$(id -u)" = 0 ] || { echo "run as root (clusters run as the postgres user via runuser)"; exit 1; }
[ -x "$PG/pgbench" ] || { echo "pgbench missing in $PG: run scripts/setup.sh"; exit 1; }

echo "==> building hoop and the audit throughput example (release)"
build() { cargo build --release "$@" >/dev/null 2>&1 || cargo build --release "$@"; }
build -p hoop-proxy --bin hoop
build -p hoop-audit --example throughput
HOOP="$CARGO_TARGET_DIR/release/hoop"
THROUGHPUT="$CARGO_TARGET_DIR/release/examples/throughput"

work=$(mktemp -d /tmp/hoop-bench-audit.XXXXXX)
chmod 755 "$work"
# Postgres runs as postgres and writes its log here.
chown postgres "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    bench_cluster_stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# (a) ------------------------------------------------------------------------
echo "==> audit store: records/s, ${T}s per figure (9 figures)"
# The example starts its own Postgres cluster (as the crate's tests do: tests/kit).
"$THROUGHPUT" --seconds "$T" --writers 8,64,256 \
    --stores sqlite-full,sqlite-normal,postgres | tee "$work/throughput.txt"

# (b) ------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT_=$(free_port); PW=bench-gateway-pw

echo "==> Postgres 15 on $PGPORT_"
bench_cluster_start 256MB
runuser -u postgres -- "$PG/pgbench" -i -q -s 10 -h "$work/pg" -p "$PGPORT_" bench >/dev/null 2>&1
psql_su -d bench -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_agent, hoop_gateway;"

# bench_hoop_start writes under $work/hoop: each gateway gets its own $work
# (so its own config, keys and audit.db).
base=$work
declare -A port token
for variant in on normal off; do
    work=$base/$variant
    mkdir -p "$work"
    HOOPPORT=$(free_port)
    case $variant in
        on) bench_hoop_start ;;
        normal) bench_hoop_start "$(printf '[audit]\nsqlite_synchronous = "normal"')" ;;
        off) bench_hoop_start "$(printf '[audit]\nrecord_statements = false')" ;;
    esac
    pids+=("$hoop_pid")
    port[$variant]=$HOOPPORT
    token[$variant]=$TOKEN
    echo "==> hoop (statement recording: $variant) on $HOOPPORT"
done
work=$base

run_pgbench() { # PORT PASSWORD MODE
    local out
    out=$(PGPASSWORD=$2 "$PG/pgbench" -n -S -c 8 -j 2 -T "$T" -M "$3" -h 127.0.0.1 -p "$1" -U agent bench 2>&1) \
        || { echo "$out" >&2; echo 0; return; }
    echo "$out" | sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -1
}

declare -A tps
for mode in simple prepared; do
    echo "==> pgbench -S -c 8 -j 2 -T $T -M $mode"
    for variant in on normal off; do
        tps[${variant}_$mode]=$(run_pgbench "${port[$variant]}" "${token[$variant]}" "$mode")
    done
done

echo
echo "audit store, records/s (W writers, each waiting for its record to be durable):"
awk 'NR > 1 && $3 != "skipped" { rate[$2, $1] = $3; if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
     END {
         printf "%-8s %14s %14s %14s\n", "writers", "sqlite-full", "sqlite-normal", "postgres"
         for (i = 1; i <= n; i++) {
             w = order[i]
             printf "%-8s %14s %14s %14s\n", w, rate[w, "sqlite-full"], rate[w, "sqlite-normal"], rate[w, "postgres"]
         }
     }' "$work/throughput.txt"
echo "(target: sqlite-full >= 20000 records/s with group commit)"

echo
echo "relay through hoop, pgbench -S -c 8 -j 2 -T $T, TPS:"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2fx", a/b; else print "n/a" }'; }
printf '%-10s %14s %14s %10s %16s %12s\n' mode recording-on recording-off on/off on-NORMAL NORMAL/off
for mode in simple prepared; do
    on=${tps[on_$mode]}; off=${tps[off_$mode]}; normal=${tps[normal_$mode]}
    printf '%-10s %14.0f %14.0f %10s %16.0f %12s\n' "$mode" "$on" "$off" "$(ratio "$on" "$off")" \
        "$normal" "$(ratio "$normal" "$off")"
done
echo "(target: on/off >= 0.90x; on = [audit] default, SQLite synchronous=FULL)"
