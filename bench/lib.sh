# Shared by the bench/ scripts (sourced, not run): a throw-away Postgres
# cluster (the test kit's, tests/kit: version $HOOP_PG_VERSION, else 15) and a
# hoop gateway in front of it. Callers set PG (Postgres bin dir, for the
# clients), HOOP (the hoop binary), work (a scratch dir owned by postgres),
# PGPORT_, HOOPPORT and PW (the gateway role's password) first.

# shellcheck source=tests/kit/cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tests/kit/cluster.sh"

# bench_cluster_start SHARED_BUFFERS: a cluster in $work/pg (data in
# $work/pg/data, its socket in $work/pg, log $work/pg/log), SCRAM on
# loopback, started; creates the gateway login role, the mapped role
# bench_agent and database bench. It is stopped and removed by
# bench_cluster_stop, or when the calling script exits.
bench_cluster_start() {
    hoop_cluster_start "$work/pg" --port "$PGPORT_" \
        --set "max_connections = 100" --set "shared_buffers = $1"
    psql_su -d postgres -c "CREATE ROLE hoop_gateway LOGIN NOINHERIT PASSWORD '$PW'; CREATE ROLE bench_agent NOLOGIN; GRANT bench_agent TO hoop_gateway;"
    psql_su -d postgres -c "CREATE DATABASE bench"
}

bench_cluster_stop() { hoop_cluster stop "$work/pg"; }

psql_su() { runuser -u postgres -- "$PG/psql" -X -q -v ON_ERROR_STOP=1 -h "$work/pg" -p "$PGPORT_" "$@"; }

# bench_hoop_start [EXTRA_TOML]: writes a config with the test kit
# (hoop_gateway_toml: development issuer, group bench -> role bench_agent,
# plaintext on loopback), starts `hoop serve`, waits for it, and sets
# hoop_pid and TOKEN.
bench_hoop_start() {
    hoop_gateway_files "$work/hoop" "$HOOP" bench "$PW" >/dev/null
    hoop_gateway_toml "$work/hoop" "$HOOPPORT" "$PGPORT_" bench bench_agent bench "${1:-}"
    HOOP_LOG=warn "$HOOP" serve -c "$work/hoop/hoop.toml" >"$work/hoop.log" 2>&1 &
    hoop_pid=$!
    for _ in $(seq 50); do "$PG/pg_isready" -q -h 127.0.0.1 -p "$HOOPPORT" && break; sleep 0.1; done
    TOKEN=$("$HOOP" token mint -c "$work/hoop/hoop.toml" --sub bench --group bench --ttl 1h)
}
