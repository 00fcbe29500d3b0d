#!/usr/bin/env bash
# The README's Quick start: installs what is missing (scripts/setup.sh),
# installs the hoop extension into Postgres 15, builds `hoop` (release), then
# runs `hoop demo` in the repository root (state in .hoop/demo/). Ctrl-C stops
# the gateway and the demo cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/setup.sh
# shellcheck source=/dev/null
. "${HOOP_CACHE:-/var/cache/hoop}/env.sh"
PG_CONFIG="${HOOP_PG15_BIN:-/usr/lib/postgresql/15/bin}/pg_config"

echo "==> installing the hoop extension into Postgres 15"
if ! (cd extension && cargo pgrx install --release --pg-config "$PG_CONFIG" >"${HOOP_CACHE:-/var/cache/hoop}/logs/extension-install.log" 2>&1); then
    echo "!! installing the extension failed (log: ${HOOP_CACHE:-/var/cache/hoop}/logs/extension-install.log):" >&2
    tail -n 20 "${HOOP_CACHE:-/var/cache/hoop}/logs/extension-install.log" >&2
    echo "!! the demo will run WITHOUT in-database masking; it says so when it starts" >&2
fi

echo "==> building hoop (release)"
cargo build --release -p hoop-proxy --bin hoop
bin="${CARGO_TARGET_DIR:-$root/target}/release"
# So the printed `hoop token mint ...` lines work from any shell.
ln -sf "$bin/hoop" /usr/local/bin/hoop
echo "==> hoop installed as /usr/local/bin/hoop -> $bin/hoop"
exec "$bin/hoop" demo
