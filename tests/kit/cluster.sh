# Sourced by shell scripts (bench/, scripts/): the test kit (tests/kit) for
# shells, so they run the same clusters the Rust and Python tests do.
#
#   hoop_cluster ARGS…               the `hoop-cluster` command, built on first
#                                    use into $CARGO_TARGET_DIR (default: the
#                                    checkout's target/); see
#                                    tests/kit/src/bin/hoop-cluster.rs
#   hoop_cluster_start DIR [OPTS…]   `hoop-cluster start DIR OPTS… --owner $$`
#                                    (the cluster is stopped and DIR removed
#                                    when this script exits, however it ends),
#                                    then sets HOOP_CLUSTER_{VERSION,BIN,DIR,
#                                    DATA,SOCKET,LOG,PORT,SUPERUSER}; fails
#                                    (set -e stops) when it cannot
#   hoop_cluster stop DIR [--keep]   stop (and remove DIR, unless --keep)
#   hoop_gateway_files DIR HOOP KID PASSWORD
#                                    a gateway's files in DIR for a cluster:
#                                    the upstream password (pw), session keys
#                                    (`HOOP keys generate --kid KID`, whose
#                                    output it prints: the line the extension's
#                                    hoop.trusted_keys needs) and the
#                                    development issuer's key (dev.key)
#   hoop_gateway_toml DIR PORT UPSTREAM_PORT GROUP ROLE KID [EXTRA_TOML]
#                                    DIR/hoop.toml for those files: plaintext
#                                    on loopback at 127.0.0.1:PORT, upstream
#                                    user hoop_gateway at 127.0.0.1:
#                                    UPSTREAM_PORT, the development issuer,
#                                    group GROUP -> ROLE, the audit store
#                                    next to it; EXTRA_TOML appended
hoop_cluster() {
    if [ -z "${HOOP_CLUSTER_TOOL:-}" ]; then
        local root
        root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
        (cd "$root" && cargo build -q -p hoop-testkit --bin hoop-cluster) </dev/null >&2 || {
            echo "hoop_cluster: building tests/kit failed" >&2
            return 1
        }
        HOOP_CLUSTER_TOOL="${CARGO_TARGET_DIR:-$root/target}/debug/hoop-cluster"
    fi
    "$HOOP_CLUSTER_TOOL" "$@"
}

hoop_cluster_start() {
    local vars
    vars=$(hoop_cluster start "$@" --owner $$) || return 1
    eval "$vars"
}

hoop_gateway_files() {
    local dir=$1 hoop=$2 kid=$3 password=$4
    mkdir -p "$dir"
    echo "$password" >"$dir/pw"
    head -c 32 /dev/urandom | base64 >"$dir/dev.key"
    "$hoop" keys generate --out "$dir" --kid "$kid"
}

hoop_gateway_toml() {
    local dir=$1 port=$2 upstream_port=$3 group=$4 role=$5 kid=$6 extra=${7:-}
    cat >"$dir/hoop.toml" <<TOML
[listen]
address = "127.0.0.1:$port"
allow_plaintext = "loopback"
[upstream]
host = "127.0.0.1"
port = $upstream_port
user = "hoop_gateway"
password = { file = "pw" }
[identity]
audience = "hoop"
[identity.dev_issuer]
key_file = "dev.key"
[[role_mapping]]
group = "$group"
role = "$role"
[session]
signing_key = { file = "session-signing.key" }
key_id = "$kid"
$extra
TOML
}
