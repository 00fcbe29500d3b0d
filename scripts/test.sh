#!/usr/bin/env bash
# The README's Tests command: installs what is missing (scripts/setup.sh), then
# runs every test in the workspace, stage by stage:
#   sources   every pinned download is still served (scripts/sources.sh)
#   lint      cargo fmt --check, cargo clippy -D warnings (common, proxy, extension),
#             no import cycles between modules (scripts/cycles.py)
#   unit      cargo test for common, the policy engine, the audit store and
#             the reviews hub (the gateway's own tests run in e2e)
#   pgrx      cargo pgrx test on pg15, pg17, pg18, run as the postgres user
#   regress   the extension's SQL regression suite + attack corpus on pg15/17/18
#   upstream  PostgreSQL's own regression suite (18, 17 and 15) and its
#             isolation suite (18) with and without the extension loaded:
#             identical output but for an allowlist
#   compat    the same suites directly and through the gateway, identical but
#             for tests/compat-allowlist.txt; pg_dump, psql and pg_restore of
#             the regression database, identical directly and through it; and
#             18's regression suite again in a LATIN1 database (its clients
#             then send LATIN1)
#   soak      pgbench crash soak of the extension on pg15/17/18, directly and
#             through the gateway (bench/soak.sh, 10 s per run)
#   e2e       the gateway's tests (raw protocol, logins against a real
#             oidc-provider, on pg15/17/18) and pytest with real clients
#             (tests/run.sh)
# A failing stage is named at the end with the command to rerun it alone.
# HOOP_TEST_STAGES="unit pgrx" runs a subset.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

stages=${HOOP_TEST_STAGES:-sources lint unit pgrx regress upstream compat soak e2e}
pg_versions=${HOOP_PG_VERSIONS:-15 17 18}
failed=()
passed=()

# run_stage NAME CMD...: runs CMD, records the outcome, keeps going.
run_stage() {
    local name=$1
    shift
    printf '\n==> [%s] %s\n' "$name" "$*"
    local start=$SECONDS
    if "$@"; then
        passed+=("$name")
        printf '==> [%s] ok (%ss)\n' "$name" $((SECONDS - start))
    else
        failed+=("$name: $*")
        printf '==> [%s] FAILED (%ss)\n' "$name" $((SECONDS - start))
    fi
}

want() { case " $stages " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# First, before setup and whatever the cache holds: is every pinned download
# still served? (A warm cache would otherwise hide a vanished source.)
if want sources; then
    run_stage sources bash scripts/sources.sh
fi
# A full run builds about 25 GB (three Postgres versions of the extension,
# the gateway, release builds for the soak) and its clusters need room too:
# say so up front rather than as "No space left on device" mid-run.
free_kb=$(df -Pk "$root" | awk 'NR == 2 {print $4}')
if [ "${free_kb:-0}" -lt $((20 * 1024 * 1024)) ]; then
    echo "!! only $((free_kb / 1024 / 1024)) GB free on $(df -P "$root" | awk 'NR == 2 {print $6}'): a full run needs about 20 GB (target/ and the test clusters)" >&2
fi
bash scripts/setup.sh || exit 1
# shellcheck source=/dev/null
. "${HOOP_CACHE:-/var/cache/hoop}/env.sh"

if want lint; then
    run_stage fmt cargo fmt --all -- --check
    run_stage clippy cargo clippy --workspace --exclude hoop --all-targets -- -D warnings
    run_stage clippy-ext cargo clippy -p hoop --features "pg15 pg_test" --no-default-features --all-targets -- -D warnings
    run_stage cycles bash -c "python3 scripts/cycles.py --self-test && python3 scripts/cycles.py proxy/src extension/src"
fi
if want unit; then
    run_stage unit cargo test --workspace --exclude hoop --exclude hoop-proxy
fi
if want pgrx; then
    for v in $pg_versions; do
        install -d -o postgres -g postgres /tmp/hoop-pgrx
        run_stage "pgrx-pg$v" bash -c "cd '$root/extension' && cargo pgrx test pg$v --runas postgres --pgdata /tmp/hoop-pgrx/pg$v"
    done
fi
if want regress; then
    for v in $pg_versions; do
        run_stage "regress-pg$v" bash scripts/regress.sh "pg$v"
    done
fi
if want upstream; then
    # PostgreSQL's own regression suite, with and without the extension.
    for v in 18 17 15; do
        run_stage "upstream-pg$v" bash scripts/upstream.sh "pg$v"
    done
    run_stage upstream-pg18-isolation bash scripts/upstream.sh pg18 extension isolation
fi
if want compat; then
    # The same suite through the gateway (permissive profile) against directly.
    for v in 18 17 15; do
        run_stage "compat-pg$v" bash scripts/upstream.sh "pg$v" gateway
    done
    run_stage compat-pg18-isolation bash scripts/upstream.sh pg18 gateway isolation
    run_stage compat-pg18-latin1 env HOOP_REGRESS_ENCODING=LATIN1 \
        HOOP_UPSTREAM_DIR=/tmp/hoop-upstream-pg18-gateway-latin1 \
        bash scripts/upstream.sh pg18 gateway
fi
if want soak; then
    # A short crash soak of the extension (bench/soak.sh runs it longer).
    run_stage soak bash bench/soak.sh "${HOOP_SOAK_SECONDS:-10}" $pg_versions
fi
if want e2e; then
    run_stage e2e bash tests/run.sh
fi

printf '\n==> summary: %d stage(s) ok' "${#passed[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    printf ', %d FAILED:\n' "${#failed[@]}"
    printf '    %s\n' "${failed[@]}"
    printf 'Rerun one stage alone with HOOP_TEST_STAGES=<stage> bash scripts/test.sh\n'
    exit 1
fi
printf ' (%s)\n' "${passed[*]}"
