#!/usr/bin/env bash
# Long mode of the reliability tests (docs/testing.md): the crash simulation, the SIGKILL test, the power
# cuts on the real file-system path (FUSE) and the model test with large counts, then the I/O-error test and
# the corruption sweep (fixed size), and the server soak. Counts can be raised further through the same variables:
#
#   CAIRN_CRASH_ITERATIONS  power cuts per durability mode    (default here 3000; normal run 300)
#   CAIRN_KILL_CYCLES       SIGKILLs of the writer process    (default here 200; normal run 30)
#   CAIRN_FUSE_CYCLES       power cuts under FsStorage (FUSE) (default here 2000; normal run 200)
#   PROPTEST_CASES          model-test cases per property     (default here 1024; normal run 128)
#   CAIRN_SOAK_SECONDS      server soak with SIGKILLs          (default here 600; normal run 40)
#   CAIRN_JOBS              build parallelism                 (default 2)
#
# The FUSE test needs root (or CAP_SYS_ADMIN) and /dev/fuse; without them it prints why and skips.
#
# With these defaults it takes about 9 minutes on two shared cores (a cold build adds its own time).
# Exits non-zero if any test fails.
set -euo pipefail

cd "$(dirname "$0")/.."
export CAIRN_CRASH_ITERATIONS="${CAIRN_CRASH_ITERATIONS:-3000}"
export CAIRN_KILL_CYCLES="${CAIRN_KILL_CYCLES:-200}"
export CAIRN_FUSE_CYCLES="${CAIRN_FUSE_CYCLES:-2000}"
export PROPTEST_CASES="${PROPTEST_CASES:-1024}"
export CAIRN_SOAK_SECONDS="${CAIRN_SOAK_SECONDS:-600}"
jobs="${CAIRN_JOBS:-2}"

echo "long-tests: CAIRN_CRASH_ITERATIONS=${CAIRN_CRASH_ITERATIONS} CAIRN_KILL_CYCLES=${CAIRN_KILL_CYCLES}" \
    "CAIRN_FUSE_CYCLES=${CAIRN_FUSE_CYCLES} PROPTEST_CASES=${PROPTEST_CASES}" \
    "CAIRN_SOAK_SECONDS=${CAIRN_SOAK_SECONDS} ($(date -u +%Y-%m-%dT%H:%MZ))"
start=$(date +%s)
for t in crash kill power_loss model faults corruption; do
    t0=$(date +%s)
    cargo test -j "${jobs}" -p cairn-tests --test "${t}" -- --nocapture
    echo "long-tests: ${t} passed in $(($(date +%s) - t0)) s"
done
t0=$(date +%s)
cargo test -j "${jobs}" -p cairn-server --test soak -- --nocapture
echo "long-tests: server soak passed in $(($(date +%s) - t0)) s"
echo "long-tests: all passed in $(($(date +%s) - start)) s"
