#!/usr/bin/env bash
# Crash soak of the hoop extension (a benchmark-style script; its short form
# is the `soak` test stage):
#
#   bench/soak.sh [seconds-per-run] [versions...]     (default: 60s; 15 17 18)
#
# For each Postgres version: a cluster with hoop preloaded and a masked table,
# and a bounded pgbench run (4 clients) of a mix that has crashed extensions
# before: masked reads, errors inside transactions (after TRUNCATE, with a
# cursor open, inside savepoints), PL/pgSQL exception blocks, DDL (temporary
# tables, views, ALTER TABLE, TRUNCATE), cursors, two-phase commit. First
# directly (an exempt role), then through `hoop serve` (a gateway session
# mapped to the same role), when HOOP_SOAK_GATEWAY is not 0.
#
# Errors are raised with SQLSTATE 40001 (serialization_failure), which pgbench
# counts as a failed transaction and goes on from (it rolls the transaction
# back), so every client keeps hitting the abort paths for the whole run.
#
# Fails if any backend PANICs, is killed by a signal, or the postmaster
# restarts (pg_postmaster_start_time() before and after), or if pgbench could
# not run the mix. Prints statements and transactions run per version.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
SECONDS_PER_RUN=${1:-60}
shift || true
VERSIONS=${*:-15 17 18}
CLIENTS=4
HOOP_CACHE=${HOOP_CACHE:-/var/cache/hoop}
# shellcheck source=/dev/null
. "$HOOP_CACHE/env.sh"
# shellcheck source=tests/kit/cluster.sh
. tests/kit/cluster.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
PGBENCH=${HOOP_PG15_BIN:-/usr/lib/postgresql/15/bin}/pgbench
[ "$(id -u)" = 0 ] || { echo "soak: run as root" >&2; exit 2; }
GATEWAY=${HOOP_SOAK_GATEWAY:-1}

work=$(mktemp -d /tmp/hoop-soak.XXXXXX)
chmod 755 "$work"
chown postgres "$work"
cleanup() {
    if [ -n "${hoop_pid:-}" ]; then kill "$hoop_pid" 2>/dev/null || true; fi
    for d in "$work"/pg*; do
        if [ -d "$d" ]; then hoop_cluster stop "$d" >/dev/null 2>&1 || true; fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ "$GATEWAY" != 0 ]; then
    echo "==> building hoop" >&2
    cargo build -q -p hoop-proxy --bin hoop >"$work/build.log" 2>&1 || { tail -n 20 "$work/build.log" >&2; exit 1; }
    HOOP="$CARGO_TARGET_DIR/debug/hoop"
    mkdir -p "$work/hoop"
    trusted=$(hoop_gateway_files "$work/hoop" "$HOOP" soak soak-gateway-pw | sed -n "s/.*hoop.trusted_keys = '\(.*\)'/\1/p")
fi

# --- the mix -------------------------------------------------------------------
mkdir -p "$work/mix"
cat >"$work/mix/read.sql" <<'SQL'
\set lo random(1, 4900)
SELECT id, card_number FROM soak_cards WHERE id BETWEEN :lo AND :lo + 20;
SELECT count(*), max(card_number) FROM soak_cards WHERE id < :lo;
SELECT to_jsonb(c) FROM soak_cards c WHERE id = :lo;
SQL
cat >"$work/mix/abort.sql" <<'SQL'
\set lo random(1, 4900)
BEGIN;
TRUNCATE soak_scratch;
SELECT card_number FROM soak_cards WHERE id = :lo;
SELECT soak_fail();
END;
SQL
cat >"$work/mix/savepoints.sql" <<'SQL'
\set lo random(1, 4900)
BEGIN;
SAVEPOINT a;
INSERT INTO soak_scratch VALUES (:lo, 'x');
SELECT soak_caught();
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
SELECT card_number FROM soak_cards WHERE id = :lo;
RELEASE SAVEPOINT b;
DECLARE c CURSOR FOR SELECT card_number FROM soak_cards WHERE id > :lo;
FETCH 5 FROM c;
CLOSE c;
COMMIT;
SQL
cat >"$work/mix/cursor_abort.sql" <<'SQL'
\set lo random(1, 4900)
BEGIN;
DECLARE c CURSOR WITH HOLD FOR SELECT card_number FROM soak_cards WHERE id > :lo;
FETCH 3 FROM c;
SAVEPOINT s;
SELECT soak_fail();
END;
SQL
cat >"$work/mix/ddl.sql" <<'SQL'
\set lo random(1, 4900)
BEGIN;
CREATE TEMP TABLE soak_tmp (a int, b text) ON COMMIT DROP;
INSERT INTO soak_tmp SELECT g, 'v' FROM generate_series(1, 10) g;
TRUNCATE soak_tmp;
CREATE TEMP VIEW soak_v AS SELECT card_number FROM soak_cards WHERE id = :lo;
SELECT * FROM soak_v;
ALTER TABLE soak_tmp ADD COLUMN c int;
DROP VIEW soak_v;
COMMIT;
SQL
cat >"$work/mix/twophase.sql" <<'SQL'
\set lo random(1, 4900)
BEGIN;
INSERT INTO soak_scratch VALUES (:lo, 'p');
PREPARE TRANSACTION 'soak_:client_id';
ROLLBACK PREPARED 'soak_:client_id';
SQL
MIX=(-f "$work/mix/read.sql@5" -f "$work/mix/abort.sql@3" -f "$work/mix/savepoints.sql@2"
    -f "$work/mix/cursor_abort.sql@2" -f "$work/mix/ddl.sql@1" -f "$work/mix/twophase.sql@1")
chmod -R a+rX "$work/mix"

# pgbench's summary: "number of transactions actually processed: N" and "failed: N".
summary() {
    local done failed
    done=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$1")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$1" | head -n 1)
    printf '%s transactions (%s rolled back by an error on purpose or by a deadlock)' "${done:-0}" "${failed:-0}"
}

failed=0
for v in $VERSIONS; do
    PGBIN=$(hoop_cluster bin --version "$v")
    echo "==> Postgres $v: installing the extension" >&2
    (cd extension && cargo pgrx install --pg-config "$PGBIN/pg_config") >"$work/install$v.log" 2>&1 ||
        { tail -n 20 "$work/install$v.log" >&2; exit 1; }
    hoop_cluster_start "$work/pg$v" --version "$v" --auth-local trust --conf - <<CONF
shared_preload_libraries = 'hoop'
hoop.exempt_roles = 'soak_agent'
hoop.trusted_keys = '${trusted:-}'
max_prepared_transactions = 20
log_min_messages = warning
CONF
    sock=$HOOP_CLUSTER_SOCKET
    port=$HOOP_CLUSTER_PORT
    server_log=$HOOP_CLUSTER_LOG
    psql=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres)
    "${psql[@]}" -d postgres <<SQL
CREATE ROLE soak_agent LOGIN;
CREATE ROLE hoop_gateway LOGIN NOINHERIT PASSWORD 'soak-gateway-pw';
GRANT soak_agent TO hoop_gateway;
CREATE DATABASE soak OWNER soak_agent;
SQL
    "${psql[@]}" -d soak -o /dev/null <<'SQL'
CREATE EXTENSION hoop;
SET ROLE soak_agent;
CREATE TABLE soak_cards (id int PRIMARY KEY, card_number text, note text);
INSERT INTO soak_cards
SELECT g, (ARRAY['4539148803436467', '5425233430109903', '378282246310005', '6011000990139424'])[1 + g % 4], 'n'
  FROM generate_series(1, 5000) g;
CREATE TABLE soak_scratch (id int, v text);
CREATE FUNCTION soak_fail() RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'soak: rolled back on purpose' USING ERRCODE = '40001'; END $$;
CREATE FUNCTION soak_caught() RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN
       BEGIN TRUNCATE soak_scratch; PERFORM 1/0; EXCEPTION WHEN division_by_zero THEN NULL; END;
       BEGIN PERFORM card_number FROM soak_cards WHERE id = 0/0; EXCEPTION WHEN division_by_zero THEN NULL; END;
     END $$;
RESET ROLE;
SELECT hoop_mask('soak_cards', 'card_number');
SQL
    started=$("${psql[@]}" -d soak -Atc 'SELECT pg_postmaster_start_time()')
    log_from=$(wc -l <"$server_log")

    runs=("direct")
    [ "$GATEWAY" != 0 ] && runs+=("gateway")
    for how in "${runs[@]}"; do
        if [ "$how" = direct ]; then
            conn=(-h "$sock" -p "$port" -U soak_agent soak)
            envs=()
        else
            hport=$(free_port)
            # The soak drives the extension through gateway sessions with
            # DDL, DO-free functions and two-phase commit: hoop-defaults
            # would hold its DDL for review.
            hoop_gateway_toml "$work/hoop" "$hport" "$port" soak soak_agent soak \
                "$(printf '[policy.default_rules]\nexempt_groups = ["soak"]')"
            HOOP_LOG=warn "$HOOP" serve -c "$work/hoop/hoop.toml" >"$work/hoop$v.log" 2>&1 &
            hoop_pid=$!
            for _ in $(seq 100); do "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$hport" && break; sleep 0.1; done
            conn=(-h 127.0.0.1 -p "$hport" -U soak-agent soak)
            envs=(PGPASSWORD="$("$HOOP" token mint -c "$work/hoop/hoop.toml" --sub soak --group soak --ttl 1h)")
        fi
        out="$work/pgbench-$v-$how.log"
        # pgbench exits non-zero when some transactions failed, which is the point.
        env "${envs[@]}" "$PGBENCH" -n -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" --max-tries=1 \
            --failures-detailed "${MIX[@]}" "${conn[@]}" >"$out" 2>&1 || true
        printf 'soak pg%s %-7s %s\n' "$v" "$how" "$(summary "$out")"
        if ! grep -q 'actually processed' "$out" || grep -q 'aborted in command' "$out"; then
            echo "soak pg$v $how: pgbench could not run the mix:" >&2
            grep -E 'aborted|error|FATAL' "$out" | head -n 5 >&2
            failed=1
        fi
        if [ "$how" = gateway ]; then
            kill "$hoop_pid" 2>/dev/null || true
            wait "$hoop_pid" 2>/dev/null || true
            hoop_pid=
        fi
    done

    after=$("${psql[@]}" -d soak -Atc 'SELECT pg_postmaster_start_time()' 2>/dev/null || echo "server down")
    crashes=$(tail -n +"$((log_from + 1))" "$server_log" | grep -E 'PANIC|terminated by signal|was terminated' || true)
    if [ "$after" != "$started" ] || [ -n "$crashes" ]; then
        echo "soak pg$v: THE SERVER CRASHED (postmaster start $started -> $after)" >&2
        head -n 5 <<<"$crashes" >&2
        failed=1
    else
        echo "soak pg$v: no crash, postmaster up since $started"
    fi
    hoop_cluster stop "$work/pg$v"
done
exit $failed
