#!/usr/bin/env bash
# One throwaway PostgreSQL 15 cluster for a whole test run: initdb in a temporary directory (C locale, fsync
# off, max_connections 300, trust authentication), listening on 127.0.0.1 on a free port, stopped with
# `pg_ctl stop -m immediate` and removed when the run ends. The tests find it through
#
#     CAIRN_TEST_POSTGRES=postgres://postgres@127.0.0.1:PORT/postgres
#
# and make a fresh database per test in it (crate cairn-pgcluster, `Postgres::shared()`; the Python tests'
# conftest.py). Binaries from /usr/lib/postgresql/15/bin (CAIRN_PG_BIN to move it); as root the cluster runs
# as the `postgres` user, since initdb refuses root.
#
# Two uses:
#
#     source scripts/postgres-for-tests.sh       # in a bash script: starts it, exports CAIRN_TEST_POSTGRES,
#                                                # stops it when that script exits (an EXIT trap)
#     scripts/postgres-for-tests.sh CMD ARGS...  # runs CMD with CAIRN_TEST_POSTGRES set, then stops it
#
# Either way, a CAIRN_TEST_POSTGRES already set is used as it is and nothing is started. CAIRN_PG_FSYNC=1
# keeps fsync on (for benchmarks: commits as durable as the embedded store's).

cairn_pg_bin="${CAIRN_PG_BIN:-/usr/lib/postgresql/15/bin}"
cairn_pg_dir=""

cairn_pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cairn_pg_stop() {
    if [ -n "${cairn_pg_dir}" ] && [ -d "${cairn_pg_dir}/data" ]; then
        cairn_pg_as_owner "${cairn_pg_bin}/pg_ctl" -D "${cairn_pg_dir}/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "${cairn_pg_dir}"
    fi
    cairn_pg_dir=""
}

cairn_pg_start() {
    if [ -n "${CAIRN_TEST_POSTGRES:-}" ]; then
        echo "postgres-for-tests: using CAIRN_TEST_POSTGRES=${CAIRN_TEST_POSTGRES}" >&2
        return 0
    fi
    if [ ! -x "${cairn_pg_bin}/initdb" ]; then
        echo "postgres-for-tests: ${cairn_pg_bin}/initdb not found; install PostgreSQL 15 (apt-get install postgresql-15) or set CAIRN_PG_BIN" >&2
        return 1
    fi
    cairn_pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/cairn-test-pg.XXXXXX")"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "${cairn_pg_dir}"
    fi
    local port
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    if ! cairn_pg_as_owner "${cairn_pg_bin}/initdb" -D "${cairn_pg_dir}/data" -U postgres --auth=trust -E UTF8 \
        --locale=C --no-sync --no-instructions >"${cairn_pg_dir}/initdb.log" 2>&1; then
        cat "${cairn_pg_dir}/initdb.log" >&2
        cairn_pg_stop
        return 1
    fi
    local fsync="-F"
    if [ "${CAIRN_PG_FSYNC:-0}" = 1 ]; then
        fsync=""
    fi
    if ! cairn_pg_as_owner "${cairn_pg_bin}/pg_ctl" -D "${cairn_pg_dir}/data" -l "${cairn_pg_dir}/log" -w -t 60 \
        -o "-p ${port} -h 127.0.0.1 -k ${cairn_pg_dir} ${fsync} -c max_connections=300" start >/dev/null; then
        cat "${cairn_pg_dir}/log" >&2
        cairn_pg_stop
        return 1
    fi
    export CAIRN_TEST_POSTGRES="postgres://postgres@127.0.0.1:${port}/postgres"
    echo "postgres-for-tests: PostgreSQL 15 at ${CAIRN_TEST_POSTGRES} (${cairn_pg_dir})" >&2
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: the cluster lives as long as the sourcing script.
    cairn_pg_start || return 1
    trap cairn_pg_stop EXIT
else
    set -euo pipefail
    if [ "$#" -eq 0 ]; then
        echo "usage: source scripts/postgres-for-tests.sh, or scripts/postgres-for-tests.sh CMD ARGS..." >&2
        exit 2
    fi
    cairn_pg_start
    trap cairn_pg_stop EXIT
    status=0
    "$@" || status=$?
    exit "${status}"
fi
