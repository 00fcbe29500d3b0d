#!/usr/bin/env bash
# Does hoop work on a fresh machine? Builds a brand-new Debian 12 root with
# debootstrap (from the mirror apt already uses), makes the host's Rust
# toolchain available read-only inside it, copies the committed tree in, and
# runs the README's two commands there with an empty cache:
#   1. bash scripts/demo.sh, then a masked read through the gateway (smoke check);
#   2. bash scripts/test.sh with HOOP_TEST_STAGES (default: a subset, below).
# Prints each step's wall time. Not part of CI: it takes a while (see README).
#
#   bash scripts/fresh-machine.sh                 # root in /var/tmp/hoop-fresh
#   HOOP_FRESH_ROOT=/some/dir HOOP_TEST_STAGES="sources unit" bash scripts/fresh-machine.sh
#   HOOP_FRESH_KEEP=1 ...                         # keep the root afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=scripts/pins.sh
. scripts/pins.sh

ROOT=${HOOP_FRESH_ROOT:-/var/tmp/hoop-fresh}
STAGES=${HOOP_TEST_STAGES:-sources lint unit regress upstream}
mirror=$(debian_mirror)
[ "$(id -u)" = 0 ] || { echo "fresh-machine: run as root (debootstrap, chroot, mounts)" >&2; exit 1; }
[ -n "$mirror" ] || { echo "fresh-machine: no Debian mirror configured" >&2; exit 1; }
# The active toolchain's own bin directory (cargo, rustc, rustfmt, clippy),
# not ~/.cargo/bin: that also holds what the host installed with cargo
# (cargo-pgrx), which a fresh machine must install itself.
toolchain=$(rustc --print sysroot)
[ -x "$toolchain/bin/cargo" ] || { echo "fresh-machine: no cargo in $toolchain/bin" >&2; exit 1; }

timings=()
timed() { # timed NAME CMD...
    local name=$1 start=$SECONDS
    shift
    printf '\n==> fresh-machine: %s\n' "$name"
    if "$@"; then
        timings+=("$(printf '%-44s %5ss' "$name" $((SECONDS - start)))")
    else
        timings+=("$(printf '%-44s %5ss  FAILED' "$name" $((SECONDS - start)))")
        report
        exit 1
    fi
}
report() {
    printf '\n==> fresh-machine timings (root %s)\n' "$ROOT"
    printf '    %s\n' "${timings[@]}"
}

mounts=()
cleanup() {
    if [ -n "${demo_pid:-}" ]; then stop_demo; fi
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
    [ -n "${HOOP_FRESH_KEEP:-}" ] || rm -rf "$ROOT"
}
trap cleanup EXIT
bind() { # bind SRC DEST [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounts+=("$2")
    [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2"
    return 0
}

bootstrap() {
    command -v debootstrap >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null
    }
    rm -rf "$ROOT" && mkdir -p "$ROOT"
    # git and ca-certificates only: what a developer's clone needs; everything
    # else must come from the project's own scripts.
    debootstrap --variant=minbase --include=ca-certificates,git bookworm "$ROOT" "$mirror" \
        >"$ROOT.debootstrap.log" 2>&1 || { tail -n 20 "$ROOT.debootstrap.log"; return 1; }
    # The same apt sources as the host (bookworm, updates, security).
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        cp /etc/apt/sources.list.d/debian.sources "$ROOT/etc/apt/sources.list.d/"
        rm -f "$ROOT/etc/apt/sources.list"
    fi
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    # The machine's own trust store: local CAs (an egress proxy's, say) are
    # part of its network configuration, like the mirror.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
        chroot "$ROOT" update-ca-certificates >/dev/null 2>&1
    fi
}

enter_setup() {
    bind /proc "$ROOT/proc"
    bind /sys "$ROOT/sys"
    bind /dev "$ROOT/dev"
    bind /dev/pts "$ROOT/dev/pts"
    mkdir -p "$ROOT/dev/shm" && mount -t tmpfs tmpfs "$ROOT/dev/shm" && mounts+=("$ROOT/dev/shm")
    # The host's Rust toolchain, read-only; CARGO_HOME stays inside the root
    # (empty registry, cargo-pgrx installed by setup).
    bind "$toolchain" "$ROOT/opt/rust/toolchain" ro
    # The committed tree, as a fresh clone would have it.
    rm -rf "$ROOT/root/hoop"
    git clone -q "$repo" "$ROOT/root/hoop"
}

in_root() { # in_root CMD: runs a bash command as root inside the fresh root
    chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/root/.cargo/bin:/opt/rust/toolchain/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        CARGO_HOME=/root/.cargo HOOP_TEST_STAGES="$STAGES" \
        ${NODE_EXTRA_CA_CERTS:+NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS} \
        ${SSL_CERT_FILE:+SSL_CERT_FILE=$SSL_CERT_FILE} ${PIP_CERT:+PIP_CERT=$PIP_CERT} \
        /bin/bash -c "$1"
}

# Ctrl-C for the demo: SIGINT to `hoop demo` itself (the subshell that
# started it in the root passes no signal on), then wait for it to stop
# everything it started.
stop_demo() {
    pkill -INT -f "^/root/hoop/target/release/hoop demo" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
    demo_pid=
}

demo_smoke() {
    in_root 'cd /root/hoop && bash scripts/demo.sh' >"$ROOT.demo.log" 2>&1 &
    demo_pid=$!
    local waited=0
    until grep -q 'PGPASSWORD=' "$ROOT.demo.log" 2>/dev/null; do
        if ! kill -0 "$demo_pid" 2>/dev/null || [ $waited -gt 3600 ]; then
            tail -n 30 "$ROOT.demo.log"
            return 1
        fi
        sleep 5
        waited=$((waited + 5))
    done
    local out
    out=$(in_root 'cd /root/hoop && PGPASSWORD=$(hoop token mint -c .hoop/demo/hoop.toml --sub fresh-agent --group fraud-agents) \
        psql -XAt "host=127.0.0.1 port=6432 dbname=payments user=fresh-agent" -c "SELECT card_number FROM payments WHERE amount < 1000 ORDER BY id LIMIT 3"')
    printf '%s\n' "$out"
    stop_demo
    # Three rows, each a masked card number (BIN + last four at most), none raw.
    [ "$(grep -c . <<<"$out")" = 3 ] || { echo "expected 3 rows through the gateway" >&2; return 1; }
    if grep -qE '[0-9]{13,19}' <<<"$out"; then echo "a raw card number came through" >&2; return 1; fi
    grep -q '\*' <<<"$out" || { echo "rows are not masked" >&2; return 1; }
}

timed "debootstrap Debian 12 (minbase)" bootstrap
timed "mounts, toolchain, clone" enter_setup
timed "Quick start: scripts/demo.sh + masked read" demo_smoke
timed "Tests: scripts/test.sh ($STAGES)" in_root 'cd /root/hoop && bash scripts/test.sh'
report
