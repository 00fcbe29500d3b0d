#!/usr/bin/env bash
# Policy + masking benchmark (not a timed test): a pgbench custom script
# selecting 100 rows including a card-number column (every row holds a
# Luhn-valid test PAN, so every row is rewritten by the gateway's masker),
# through hoop (rules + classification cache + masking) and directly to
# Postgres 15. Prints TPS of both and the ratio. Target: hoop >= 0.7x direct.
# Builds hoop in release mode. BENCH_SECONDS=5 shortens each run;
# BENCH_MODE=prepared|extended|simple (default prepared).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
HOOP_CACHE=${HOOP_CACHE:-/var/cache/hoop}
# shellcheck source=/dev/null
[ -r "$HOOP_CACHE/env.sh" ] && . "$HOOP_CACHE/env.sh"
PG=${HOOP_PG15_BIN:-/usr/lib/postgresql/15/bin}
T=${BENCH_SECONDS:-15}
MODE=${BENCH_MODE:-prepared}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
# shellcheck source=bench/lib.sh
. bench/lib.sh

[ "$(id -u)" = 0 ] || { echo "run as root (the cluster runs as the postgres user via runuser)"; exit 1; }
[ -x "$PG/pgbench" ] || { echo "pgbench missing in $PG: run scripts/setup.sh"; exit 1; }

echo "==> building hoop (release)"
cargo build --release -p hoop-proxy --bin hoop >/dev/null 2>&1 || cargo build --release -p hoop-proxy --bin hoop
HOOP="$CARGO_TARGET_DIR/release/hoop"

work=$(mktemp -d /tmp/hoop-bench-policy.XXXXXX)
chmod 755 "$work"
chown postgres "$work"
hoop_pid=
cleanup() {
    [ -n "$hoop_pid" ] && kill "$hoop_pid" 2>/dev/null || true
    bench_cluster_stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT_=$(free_port); HOOPPORT=$(free_port)
PW=bench-gateway-pw

echo "==> Postgres 15 on $PGPORT_"
bench_cluster_start 128MB
# 10,000 rows, each with a distinct Luhn-valid Visa test number.
python3 - >"$work/rows.tsv" <<'PY'
def luhn_digit(body):
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)
for i in range(1, 10001):
    body = "4" + str(100000000000000 + i * 7919)[-14:]
    print(f"{i}\t{body + luhn_digit(body)}\tholder {i}\t{i % 9000 + 0.5}\tnote {i}")
PY
chown postgres "$work/rows.tsv"
psql_su -d bench -c "CREATE TABLE public.payments(id int primary key, card_number text, cardholder text, amount numeric(12,2), note text)"
psql_su -d bench -c "\\copy public.payments from '$work/rows.tsv'"
psql_su -d bench -c "GRANT SELECT ON public.payments TO bench_agent, hoop_gateway; ANALYZE public.payments"

cat >"$work/select100.sql" <<'SQL'
\set lo random(1, 9900)
SELECT id, card_number, cardholder, amount FROM public.payments WHERE id BETWEEN :lo AND :lo + 99 AND amount <= 10000;
SQL

echo "==> hoop on $HOOPPORT (shipped rules, content strategy pan_last4)"
bench_hoop_start '[policy]
content_strategy = "pan_last4"'

# The gateway really masks: a raw PAN never comes back through it.
if PGPASSWORD=$TOKEN "$PG/psql" -X -A -t -h 127.0.0.1 -p "$HOOPPORT" -U bench -d bench \
    -c "SELECT card_number FROM public.payments WHERE id <= 3 AND amount <= 10000" | grep -Eq '^[0-9]{16}$'; then
    echo "!! raw card numbers came back through the gateway"; exit 1
fi

run_pgbench() { # PORT USER PASSWORD
    local out
    out=$(PGPASSWORD=$3 "$PG/pgbench" -n -f "$work/select100.sql" -c 4 -j 2 -T "$T" -M "$MODE" \
        -h 127.0.0.1 -p "$1" -U "$2" bench 2>&1) || { echo "$out" >&2; echo 0; return; }
    echo "$out" | sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -1
}

echo "==> pgbench -f select100.sql -c 4 -j 2 -T $T -M $MODE"
direct=$(PGOPTIONS="-c role=bench_agent" run_pgbench "$PGPORT_" hoop_gateway "$PW")
hoop=$(run_pgbench "$HOOPPORT" bench "$TOKEN")
echo
printf '%-10s %12s %12s %12s\n' mode direct hoop hoop/direct
ratio=$(python3 -c "d=float('$direct' or 0); h=float('$hoop' or 0); print(f'{h/d:.2f}' if d else 'n/a')")
printf '%-10s %12s %12s %12s\n' "$MODE" "$direct" "$hoop" "$ratio"
echo "target: hoop/direct >= 0.70 (100 rows per transaction, every row masked)"
