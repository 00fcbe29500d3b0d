# Sourced by shell scripts (bench/, scripts/): `hoop_cluster ARGS…` runs the
# test kit's `hoop-cluster` command (tests/kit), built on first use into
# $CARGO_TARGET_DIR (default: the checkout's target/). See
# tests/kit/src/bin/hoop-cluster.rs for its commands; typically
#   eval "$(hoop_cluster start "$work/pg" --owner $$ --set "shared_buffers = 128MB")"
# sets HOOP_CLUSTER_{VERSION,BIN,DIR,DATA,SOCKET,LOG,PORT,SUPERUSER}.
hoop_cluster() {
    if [ -z "${HOOP_CLUSTER_TOOL:-}" ]; then
        local root
        root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
        (cd "$root" && cargo build -q -p hoop-testkit --bin hoop-cluster) >&2 || {
            echo "hoop_cluster: building tests/kit failed" >&2
            return 1
        }
        HOOP_CLUSTER_TOOL="${CARGO_TARGET_DIR:-$root/target}/debug/hoop-cluster"
    fi
    "$HOOP_CLUSTER_TOOL" "$@"
}
