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
