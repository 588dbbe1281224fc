#!/usr/bin/env bash
# Runs Cairn's test suite: every test of the workspace (with cargo-nextest when it is installed), the
# doctests, and the API docs with warnings denied. Every step runs even if an earlier one fails; the
# script exits non-zero if any failed.
#
# A fresh machine needs a Rust toolchain (rustup.rs), Python 3 with pip (the sync tests' S3 server, moto,
# is installed below) and PostgreSQL 15's binaries; cargo-nextest is optional
# (`cargo install cargo-nextest --locked`). Build parallelism: CAIRN_JOBS (default 2).
set -euo pipefail

cd "$(dirname "$0")/.."
jobs="${CAIRN_JOBS:-2}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
fi

# The sync tests (sync/tests/) start real servers on loopback: PostgreSQL 15 from
# /usr/lib/postgresql/15/bin (or CAIRN_PG_BIN) and moto's S3 server, installed here when missing.
if ! command -v moto_server >/dev/null 2>&1 && ! python3 -c 'import moto.server' >/dev/null 2>&1; then
    echo "test.sh: installing moto's S3 server for the sync tests (python3 -m pip install 'moto[server]')" >&2
    python3 -m pip install --quiet 'moto[server]' ||
        python3 -m pip install --quiet --user 'moto[server]' ||
        python3 -m pip install --quiet --break-system-packages 'moto[server]' ||
        echo "test.sh: could not install moto; the object store sync tests will fail" >&2
    # pip --user puts the script in ~/.local/bin.
    export PATH="${PATH}:$(python3 -m site --user-base 2>/dev/null || echo "${HOME}/.local")/bin"
fi

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

if ((${#failed[@]} > 0)); then
    echo "test.sh: failed: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all passed"
