#!/usr/bin/env bash
# The Python client's checks (clients/python): ruff, mypy --strict, and pytest against the real `cairn serve`,
# twice: on the embedded store (CAIRN_TEST_BACKEND=embedded), then on PostgreSQL (CAIRN_TEST_BACKEND=postgres,
# a fresh database per server in the cluster of CAIRN_TEST_POSTGRES; scripts/test.sh starts one for its whole
# run, and without it this script starts its own with scripts/postgres-for-tests.sh).
# Installs the client (editable) with its test dependencies into the virtual environment that
# scripts/test.sh uses (target/test-venv, CAIRN_VENV to move it), creating it if missing, and builds the
# `cairn` binary the tests start (CAIRN_BIN to use another). Build parallelism: CAIRN_JOBS (default 2).
set -euo pipefail

cd "$(dirname "$0")/.."
jobs="${CAIRN_JOBS:-2}"
venv="${CAIRN_VENV:-target/test-venv}"

if [ ! -x "${venv}/bin/python" ]; then
    python3 -m venv "${venv}"
fi
if ! "${venv}/bin/python" -c 'import cairn_client, pytest, anyio, mypy, ruff, boto3, awscli' >/dev/null 2>&1; then
    echo "test-python.sh: installing clients/python with its test dependencies into ${venv}" >&2
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check -e './clients/python[test]'
fi

if [ -z "${CAIRN_BIN:-}" ]; then
    cargo build -j "${jobs}" -p cairn-server --bin cairn
    target="${CARGO_TARGET_DIR:-target}"
    CAIRN_BIN="$(cd "${target}/debug" && pwd)/cairn"
    export CAIRN_BIN
fi

bin="$(cd "${venv}/bin" && pwd)"
cd clients/python
"${bin}/ruff" check .
"${bin}/ruff" format --check .
"${bin}/mypy" --strict src tests
# Both runs happen even if the first fails.
status=0
echo "test-python.sh: pytest on the embedded backend" >&2
CAIRN_TEST_BACKEND=embedded "${bin}/python" -m pytest -q || status=1
echo "test-python.sh: pytest on the PostgreSQL backend" >&2
CAIRN_TEST_BACKEND=postgres ../../scripts/postgres-for-tests.sh "${bin}/python" -m pytest -q || status=1
exit "${status}"
