#!/usr/bin/env bash
# Runs Cairn's test suite: every test of the workspace (with cargo-nextest when it is installed), the
# doctests, and the API docs with warnings denied. Every step runs even if an earlier one fails; the
# script exits non-zero if any failed.
#
# A fresh machine needs only a Rust toolchain (rustup.rs); cargo-nextest is optional
# (`cargo install cargo-nextest --locked`). Build parallelism: CAIRN_JOBS (default 2).
set -euo pipefail

cd "$(dirname "$0")/.."
jobs="${CAIRN_JOBS:-2}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
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
