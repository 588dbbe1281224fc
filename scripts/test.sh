#!/usr/bin/env bash
# Runs Cairn's test suite: every test of the workspace (with cargo-nextest when it is installed), the
# doctests, and the API docs with warnings denied. Every step runs even if an earlier one fails; the
# script exits non-zero if any failed.
#
# A fresh machine needs a Rust toolchain (rustup.rs), Python 3 with venv and pip (the sync tests' S3 server,
# moto, is installed below in a virtual environment) and PostgreSQL 15's binaries; cargo-nextest is optional
# (`cargo install cargo-nextest --locked`). Build parallelism: CAIRN_JOBS (default 2).
set -euo pipefail

cd "$(dirname "$0")/.."
jobs="${CAIRN_JOBS:-2}"

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
    # nextest does not run doctests.
    step doctests cargo test --workspace --doc --no-fail-fast -j "${jobs}"
else
    echo "test.sh: cargo-nextest not found; using cargo test" >&2
    step tests cargo test --workspace --no-fail-fast -j "${jobs}"
fi
step docs env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -j "${jobs}"
# The Python client (clients/python): ruff, mypy --strict and pytest against the real server, in the same
# virtual environment.
step python ./scripts/test-python.sh

if ((${#failed[@]} > 0)); then
    echo "test.sh: failed: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all passed"
