#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for CAIRN_FUZZ_SECONDS (default 30) each, starting from a copy of the
# committed seed corpus (fuzz/corpus/TARGET/seed-*) in a temporary directory, so the repository's corpus is
# never modified. Fails if any target finds a crash; the crashing input is kept in fuzz/artifacts/TARGET/
# (reproduce with `cargo fuzz run --sanitizer none TARGET FILE`, minimize with `cargo fuzz tmin`).
#
# Installs cargo-fuzz if it is missing. The stable toolchain runs the targets without a sanitizer
# (`--sanitizer none`). Build parallelism: CAIRN_JOBS (default 2).
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
jobs="${CAIRN_JOBS:-2}"
seconds="${CAIRN_FUZZ_SECONDS:-30}"
export CARGO_BUILD_JOBS="${jobs}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked -j "${jobs}"
fi

echo "==> fuzz build"
cargo fuzz build --sanitizer none

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
failed=()
for target in $(cargo fuzz list); do
    corpus="${work}/${target}"
    mkdir -p "${corpus}"
    cp corpus/"${target}"/seed-* "${corpus}/"
    log="${work}/${target}.log"
    echo "==> fuzz ${target}: ${seconds} s"
    if cargo fuzz run --sanitizer none "${target}" "${corpus}" -- -max_total_time="${seconds}" >"${log}" 2>&1; then
        done_line="$(grep -E '^Done [0-9]+ runs' "${log}" | tail -n 1)"
        stats="$(grep -E '^#[0-9]+' "${log}" | tail -n 1 | grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*|exec/s: [0-9]+' | paste -sd ' ')"
        echo "==> fuzz ${target}: ok (${done_line}; ${stats})"
    else
        echo "==> fuzz ${target}: FAILED" >&2
        grep -E -A4 "panicked at|ERROR: libFuzzer" "${log}" >&2 || true
        grep -E -A2 "^(Failing input|Reproduce with|Minimize test case with):" "${log}" >&2 || tail -n 40 "${log}" >&2
        mkdir -p artifacts && cp "${log}" "artifacts/${target}.log"
        echo "fuzz.sh: full log in fuzz/artifacts/${target}.log" >&2
        failed+=("${target}")
    fi
done

if ((${#failed[@]} > 0)); then
    echo "fuzz.sh: crashes found in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: every target ran ${seconds} s without a crash"
