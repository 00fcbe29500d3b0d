#!/usr/bin/env bash
# Benchmark of the hoop extension on Postgres 15, or the version
# $HOOP_PG_VERSION names (a benchmark, not a test):
#
#   bench/extension.sh [seconds-per-run]     (default 15)
#
# (a) pgbench -S (select-only, prepared) against a cluster with hoop in
#     shared_preload_libraries and the extension installed (one masked table
#     elsewhere in the database, so every hook does its real work) vs the same
#     cluster without hoop. Target: ratio >= 0.97.
# (b) Reading 100,000 rows (id, card_number) of a table whose card_number is
#     masked with pan_last4, vs the same rows from an identical unmasked table,
#     both through pgbench as an exempt role. Target: ratio >= 0.8. Also the
#     reading backend's CPU time per read (utime + stime from /proc/<pid>/stat),
#     which a busy machine disturbs far less than reads per second: the client
#     and other processes compete for the same cores.
#
# Runs are interleaved (3 rounds, or $HOOP_BENCH_ROUNDS) and the median is
# reported. Needs root (it installs a release build of the extension and
# runs Postgres as postgres).
set -euo pipefail

SECONDS_PER_RUN=${1:-15}
ROUNDS=${HOOP_BENCH_ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/kit/cluster.sh
. "$ROOT/tests/kit/cluster.sh"
PGVERSION=${HOOP_PG_VERSION:-15}
PGBIN=$(hoop_cluster bin)
WORK=${HOOP_BENCH_DIR:-/tmp/hoop-bench}
CLIENTS=2

[ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 2; }
[ -x "$PGBIN/pgbench" ] || { echo "bench: $PGBIN/pgbench not found (scripts/setup.sh installs it)" >&2; exit 2; }

echo "==> installing a release build of the extension into Postgres $PGVERSION" >&2
(cd "$ROOT/extension" && cargo pgrx install --release --pg-config "$PGBIN/pg_config") >/tmp/hoop-bench-build.log 2>&1 ||
    { tail -n 30 /tmp/hoop-bench-build.log >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"
chown postgres "$WORK"
CLUSTER="$WORK/cluster"

echo "==> initdb and data (pgbench scale 10, 100,000-row card tables)" >&2
hoop_cluster_start "$CLUSTER" --auth-local trust --conf - <<CONF
listen_addresses = ''
shared_buffers = 256MB
synchronous_commit = off
max_parallel_workers_per_gather = 0
hoop.exempt_roles = 'bench_reader'
include_if_exists = 'preload.conf'
CONF
PGDATA=$HOOP_CLUSTER_DATA

with_hoop() { echo "shared_preload_libraries = 'hoop'" >"$PGDATA/preload.conf"; chown postgres "$PGDATA/preload.conf"; }
without_hoop() { : >"$PGDATA/preload.conf"; chown postgres "$PGDATA/preload.conf"; }
# The cluster starts again as it was made; stop keeps it for the next round.
start() { hoop_cluster start "$CLUSTER" >/dev/null; }
stop() { hoop_cluster stop "$CLUSTER" --keep >/dev/null 2>&1 || true; }
trap 'hoop_cluster stop "$CLUSTER" >/dev/null 2>&1 || true' EXIT
PSQL=("$PGBIN/psql" -X -q -h "$HOOP_CLUSTER_SOCKET" -p "$HOOP_CLUSTER_PORT" -U postgres -v ON_ERROR_STOP=1)
PGBENCH=("$PGBIN/pgbench" -h "$HOOP_CLUSTER_SOCKET" -p "$HOOP_CLUSTER_PORT" -U postgres)

stop
with_hoop
start
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
"${PGBENCH[@]}" -i -q -s 10 bench >/dev/null 2>&1
"${PSQL[@]}" -d bench <<'SQL'
-- With asynchronous commit, VACUUM right after the load may find the rows'
-- commits not yet flushed, leave their hint bits unset and the pages not
-- all-visible: then one table is read with a visibility check per row and
-- the other without, depending on timing.
SET synchronous_commit = on;
CREATE EXTENSION hoop;
CREATE ROLE bench_reader;
CREATE TABLE cards_plain (id bigint PRIMARY KEY, card_number text);
INSERT INTO cards_plain
SELECT g, (ARRAY['4539148803436467', '5425233430109903', '378282246310005', '6011000990139424'])[1 + g % 4]
  FROM generate_series(1, 100000) g;
CREATE TABLE cards_masked AS SELECT * FROM cards_plain;
ALTER TABLE cards_masked ADD PRIMARY KEY (id);
SELECT hoop_mask('cards_masked', 'card_number', 'pan_last4');
-- Elsewhere in the database: pgbench's tables are not protected.
CREATE TABLE vault (id int, pan text);
SELECT hoop_mask('vault', 'pan', 'pan_last4');
GRANT SELECT ON cards_plain, cards_masked TO bench_reader;
VACUUM ANALYZE;
SQL
"${PSQL[@]}" -d bench -At -c "SELECT string_agg(format('%s %s/%s', relname, relallvisible, relpages), ', ' ORDER BY relname) FROM pg_class WHERE relname IN ('cards_plain', 'cards_masked')" |
    sed 's/^/==> all-visible pages: /' >&2
printf 'SET ROLE bench_reader;\nSELECT id, card_number FROM cards_plain;\n' >"$WORK/plain.sql"
printf 'SET ROLE bench_reader;\nSELECT id, card_number FROM cards_masked;\n' >"$WORK/masked.sql"
stop

tps() {
    # tps OUTPUT-OF-PGBENCH
    sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$1" | head -n 1
}
# median VALUE…: of the numeric values ("-", a run not sampled, is skipped).
median() {
    local values=()
    for v in "$@"; do [ "$v" = - ] || values+=("$v"); done
    [ ${#values[@]} -gt 0 ] || { echo nan; return; }
    printf '%s\n' "${values[@]}" | sort -g | sed -n "$(( (${#values[@]} + 1) / 2 ))p"
}

# read_run SQL-FILE: one pgbench client reading for SECONDS_PER_RUN; prints
# "<reads/s> <backend CPU ms per read>" ("-" for the CPU when its backend
# could not be sampled). The backend is found by an application_name unique
# to the run (a backend of the previous run may still be exiting); pgbench's
# own first connection has that name too, so a backend that is gone is
# looked up again and the largest CPU figure seen is kept. The reader's CPU
# is sampled every 0.1 s until it exits (the last 0.1 s is missed, alike for
# both tables).
read_run() {
    local out="$WORK/read.out" pid="" ticks="" now stat app
    app="hoop-bench-read-$RANDOM$RANDOM"
    PGAPPNAME=$app "${PGBENCH[@]}" -n -c 1 -T "$SECONDS_PER_RUN" -f "$1" bench >"$out" 2>&1 &
    local client=$!
    while kill -0 "$client" 2>/dev/null; do
        if [ -z "$pid" ]; then
            pid=$("${PSQL[@]}" -d postgres -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$app' AND backend_type = 'client backend' LIMIT 1" 2>/dev/null || true)
        fi
        if [ -n "$pid" ]; then
            if stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
                now=$(awk '{print $14 + $15}' <<<"$stat")
                if [ -z "$ticks" ] || [ "$now" -gt "$ticks" ]; then ticks=$now; fi
            else
                # Gone: pgbench's first connection (it checks the server
                # before its clients connect), or the reader at the very end.
                pid=""
            fi
        fi
        sleep 0.1
    done
    wait "$client" || { cat "$out" >&2; return 1; }
    local reads
    reads=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    python3 -c "import sys; t = sys.argv[2]; print(sys.argv[1], f'{int(t) * 1000 / int(sys.argv[3]) / int(sys.argv[4]):.2f}' if t else '-')" \
        "$(tps "$(cat "$out")")" "${ticks}" "$(getconf CLK_TCK)" "$reads"
}

select_with=()
select_without=()
read_plain=()
read_masked=()
cpu_plain=()
cpu_masked=()
for round in $(seq "$ROUNDS"); do
    echo "==> round $round/$ROUNDS" >&2
    without_hoop
    start
    out=$("${PGBENCH[@]}" -S -M prepared -n -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_PER_RUN" bench 2>&1)
    select_without+=("$(tps "$out")")
    stop
    with_hoop
    start
    out=$("${PGBENCH[@]}" -S -M prepared -n -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_PER_RUN" bench 2>&1)
    select_with+=("$(tps "$out")")
    read -r tps_run cpu_run <<<"$(read_run "$WORK/plain.sql")"
    read_plain+=("$tps_run")
    cpu_plain+=("$cpu_run")
    read -r tps_run cpu_run <<<"$(read_run "$WORK/masked.sql")"
    read_masked+=("$tps_run")
    cpu_masked+=("$cpu_run")
    stop
done

a_without=$(median "${select_without[@]}")
a_with=$(median "${select_with[@]}")
b_plain=$(median "${read_plain[@]}")
b_masked=$(median "${read_masked[@]}")
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.3f}')" "$1" "$2"; }
ra=$(ratio "$a_with" "$a_without")
rb=$(ratio "$b_masked" "$b_plain")
c_plain=$(median "${cpu_plain[@]}")
c_masked=$(median "${cpu_masked[@]}")
# CPU per read: less is faster, so plain / masked compares like reads/s.
rc=$(ratio "$c_plain" "$c_masked")
verdict() { python3 -c "import sys; print('ok' if float(sys.argv[1]) >= float(sys.argv[2]) else 'BELOW TARGET')" "$1" "$2"; }

echo
echo "hoop extension benchmark (Postgres $PGVERSION, $CLIENTS clients for pgbench -S, ${SECONDS_PER_RUN}s runs, median of $ROUNDS)"
printf '%-44s %16s %16s %8s %8s  %s\n' "" "baseline" "hoop" "ratio" "target" ""
printf '%-44s %16s %16s %8s %8s  %s\n' "(a) pgbench -S, tps (not loaded / preloaded)" "$a_without" "$a_with" "$ra" ">=0.97" "$(verdict "$ra" 0.97)"
printf '%-44s %16s %16s %8s %8s  %s\n' "(b) read 100,000 rows, reads/s (plain/masked)" "$b_plain" "$b_masked" "$rb" ">=0.80" "$(verdict "$rb" 0.8)"
printf '%-44s %16s %16s %8s %8s  %s\n' "    backend CPU ms per read (plain/masked)" "$c_plain" "$c_masked" "$rc" ">=0.80" "$(verdict "$rc" 0.8)"
echo "raw runs: a_without=${select_without[*]} a_with=${select_with[*]} b_plain=${read_plain[*]} b_masked=${read_masked[*]}"
echo "          cpu_plain=${cpu_plain[*]} cpu_masked=${cpu_masked[*]}"
