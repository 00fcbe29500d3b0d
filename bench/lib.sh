# Shared by the bench/ scripts (sourced, not run): a throw-away Postgres 15
# cluster and a hoop gateway in front of it. Callers set PG (Postgres bin dir),
# HOOP (the hoop binary), work (a scratch dir owned by postgres), PGPORT_,
# HOOPPORT and PW (the gateway role's password) first.

# bench_cluster_start SHARED_BUFFERS: initdb, SCRAM on loopback, start; creates
# the gateway login role, the mapped role bench_agent and database bench.
bench_cluster_start() {
    install -d -o postgres -g postgres "$work/pg"
    runuser -u postgres -- "$PG/initdb" -D "$work/pg" -U postgres --no-sync \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    cat >>"$work/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT_
unix_socket_directories = '$work/pg'
max_connections = 100
shared_buffers = $1
CONF
    printf 'local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$work/pg/pg_hba.conf"
    runuser -u postgres -- "$PG/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w start >/dev/null
    psql_su -d postgres -c "CREATE ROLE hoop_gateway LOGIN NOINHERIT PASSWORD '$PW'; CREATE ROLE bench_agent NOLOGIN; GRANT bench_agent TO hoop_gateway;"
    psql_su -d postgres -c "CREATE DATABASE bench"
}

psql_su() { runuser -u postgres -- "$PG/psql" -X -q -v ON_ERROR_STOP=1 -h "$work/pg" -p "$PGPORT_" "$@"; }

# bench_hoop_start [EXTRA_TOML]: writes a config (development issuer, group
# bench -> role bench_agent, plaintext on loopback), starts `hoop serve`,
# waits for it, and sets hoop_pid and TOKEN.
bench_hoop_start() {
    mkdir -p "$work/hoop"
    echo "$PW" >"$work/hoop/pw"
    "$HOOP" keys generate --out "$work/hoop" --kid bench >/dev/null
    head -c 32 /dev/urandom | base64 >"$work/hoop/dev.key"
    cat >"$work/hoop/hoop.toml" <<TOML
[listen]
address = "127.0.0.1:$HOOPPORT"
allow_plaintext = "loopback"
[upstream]
host = "127.0.0.1"
port = $PGPORT_
user = "hoop_gateway"
password = { file = "pw" }
[identity]
audience = "hoop"
[identity.dev_issuer]
key_file = "dev.key"
[[role_mapping]]
group = "bench"
role = "bench_agent"
[session]
signing_key = { file = "session-signing.key" }
key_id = "bench"
${1:-}
TOML
    HOOP_LOG=warn "$HOOP" serve -c "$work/hoop/hoop.toml" >"$work/hoop.log" 2>&1 &
    hoop_pid=$!
    for _ in $(seq 50); do "$PG/pg_isready" -q -h 127.0.0.1 -p "$HOOPPORT" && break; sleep 0.1; done
    TOKEN=$("$HOOP" token mint -c "$work/hoop/hoop.toml" --sub bench --group bench --ttl 1h)
}
