#!/usr/bin/env bash
# Runs Cairn's test suite: every test of the workspace (with cargo-nextest when it is installed), the
# doctests, and the API docs with warnings denied. Every step runs even if an earlier one fails; the
# script exits non-zero if any failed.
#
# A fresh machine needs a Rust toolchain (rustup.rs), Python 3 with venv and pip (the sync tests' S3 server,
# moto, is installed below in a virtual environment) and PostgreSQL 15's binaries; cargo-nextest is optional
# (`cargo install cargo-nextest --locked`). Build parallelism: CAIRN_JOBS (default 2).
#
# The run starts one PostgreSQL 15 cluster for every test that needs one (scripts/postgres-for-tests.sh:
# /usr/lib/postgresql/15/bin, a temporary directory, a free loopback port, stopped when this script exits)
# and passes it on as CAIRN_TEST_POSTGRES; each test makes a fresh database in it. The HTTP contract suite
# (server/tests/http.rs), the S3, job queue and run metrics conformance suites (server/tests/s3.rs,
# queue.rs, run_metrics.rs) and the Python client's tests run twice, on the embedded store and on
# PostgreSQL (CAIRN_TEST_BACKEND=postgres).
set -euo pipefail

cd "$(dirname "$0")/.."
jobs="${CAIRN_JOBS:-2}"
# No incremental compilation: the suite builds each crate once, and incremental state would add about 3 GiB
# to a clean clone's target/ (CARGO_INCREMENTAL=1 to keep it).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
fi

# The sync tests (sync/tests/) start real servers on loopback: PostgreSQL 15 from
# /usr/lib/postgresql/15/bin (or CAIRN_PG_BIN) and moto's S3 server. The Python test dependencies live in a
# virtual environment this script creates (target/test-venv, CAIRN_VENV to move it); its bin/ goes first on
# PATH, so the tests find moto_server there. The Python client's step (scripts/test-python.sh) installs the
# client and its test tools (pytest, anyio, mypy, ruff) into the same environment.
venv="${CAIRN_VENV:-target/test-venv}"
if [ ! -x "${venv}/bin/moto_server" ]; then
    echo "test.sh: creating ${venv} with moto's S3 server for the sync tests" >&2
    python3 -m venv "${venv}"
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]'
fi
export PATH="$(cd "${venv}/bin" && pwd):${PATH}"

# One PostgreSQL cluster for the whole run (CAIRN_TEST_POSTGRES), stopped on exit.
source scripts/postgres-for-tests.sh

failed=()
step() {
    local name="$1"
    shift
    echo "==> ${name}: $*"
    if "$@"; then
        echo "==> ${name}: ok"
    else
        echo "==> ${name}: FAILED" >&2
        failed+=("${name}")
    fi
}

if cargo nextest --version >/dev/null 2>&1; then
    step tests cargo nextest run --workspace --no-fail-fast --build-jobs "${jobs}"
    # The HTTP contract, S3, job queue and run metrics conformance suites again, on the PostgreSQL backend (a
    # database of the run's cluster per test; the S3 suite's bytes in a temporary directory).
    # Selected by a filter over the workspace rather than with `-p`, so that it reuses the binaries built
    # above (a package on its own unifies features differently and rebuilds tokio and its neighbours).
    step http-postgres env CAIRN_TEST_BACKEND=postgres cargo nextest run --workspace --no-fail-fast \
        --build-jobs "${jobs}" -E 'package(cairn-server) and (binary(http) or binary(s3) or binary(queue) or binary(run_metrics))'
    # nextest does not run doctests.
    step doctests cargo test --workspace --doc --no-fail-fast -j "${jobs}"
else
    echo "test.sh: cargo-nextest not found; using cargo test" >&2
    step tests cargo test --workspace --no-fail-fast -j "${jobs}"
    step http-postgres env CAIRN_TEST_BACKEND=postgres cargo test -p cairn-server --test http --test s3 --test queue \
        --test run_metrics --no-fail-fast -j "${jobs}"
fi
step docs env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -j "${jobs}"
# The Python client (clients/python): ruff, mypy --strict and pytest against the real server, in the same
# virtual environment; pytest twice, on the embedded store and on PostgreSQL. The server is the `cairn`
# binary the workspace's tests built (the server's process tests start it), so that no second build in
# the dev profile is needed; without it, test-python.sh builds one.
target_dir="${CARGO_TARGET_DIR:-target}"
if [ -z "${CAIRN_BIN:-}" ] && [ -x "${target_dir}/debug/cairn" ] && ((${#failed[@]} == 0)); then
    CAIRN_BIN="$(cd "${target_dir}/debug" && pwd)/cairn"
    export CAIRN_BIN
fi
step python ./scripts/test-python.sh

if ((${#failed[@]} > 0)); then
    echo "test.sh: failed: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all passed"
