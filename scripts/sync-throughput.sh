#!/usr/bin/env bash
# Measures export and import throughput of `cairn export|import postgres|s3` with the release binary,
# against a throwaway PostgreSQL 15 cluster and moto's S3 server on loopback (both started here, stopped
# at exit). The store is `cairn demo`'s: JOBS synthetic jobs (default 100,000) with the status, owner,
# project and (status, priority) indexes. Prints seconds, records/s and MB/s (of the store's documents as
# JSON) per step. Results go in docs/sync.md ("Throughput").
#
# Usage: scripts/sync-throughput.sh [JOBS]
set -euo pipefail

cd "$(dirname "$0")/.."
jobs="${1:-100000}"
pg_bin="${CAIRN_PG_BIN:-/usr/lib/postgresql/15/bin}"
work="$(mktemp -d /tmp/cairn-sync-throughput.XXXXXX)"
chmod 755 "${work}"
pids=()
cleanup() {
    if [[ -f "${work}/pg/PG_VERSION" ]]; then
        as_pg "${pg_bin}/pg_ctl" -D "${work}/pg" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
    rm -rf "${work}"
}
trap cleanup EXIT

as_pg() {
    if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 600); do
        if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

cargo build --release -j2 -p cairn-server --quiet
cairn="$(pwd)/target/release/cairn"

pg_port="$(free_port)"
mkdir "${work}/pg" && chmod 700 "${work}/pg"
[[ "$(id -u)" == 0 ]] && chown postgres: "${work}/pg"
as_pg "${pg_bin}/initdb" -D "${work}/pg" -U postgres --auth=trust -E UTF8 --no-sync --no-instructions >/dev/null
as_pg "${pg_bin}/pg_ctl" -D "${work}/pg" -l "${work}/pg/log" -o "-p ${pg_port} -h 127.0.0.1 -k ${work}/pg" \
    -w -t 60 start >/dev/null
pg_url="postgres://postgres@127.0.0.1:${pg_port}/postgres"

s3_port="$(free_port)"
moto_server -H 127.0.0.1 -p "${s3_port}" >/dev/null 2>&1 &
pids+=($!)
wait_port "${s3_port}"
curl -sf -X PUT "http://127.0.0.1:${s3_port}/cairn-bench" >/dev/null
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
endpoint="http://127.0.0.1:${s3_port}"

"${cairn}" demo --data "${work}/src" --jobs "${jobs}" >/dev/null
# Records and bytes of JSON: what a snapshot into a local directory holds, decompressed.
"${cairn}" export s3 --data "${work}/src" --dest "file://${work}/probe" >/dev/null 2>&1
find "${work}/probe" -name '*.jsonl.zst' -exec zstd -qdc {} + >"${work}/probe.jsonl"
records="$(wc -l <"${work}/probe.jsonl")"
json_bytes="$(wc -c <"${work}/probe.jsonl")"
rm -rf "${work}/probe" "${work}/probe.jsonl"

step() {
    local name="$1"
    shift
    local start end
    start="$(date +%s.%N)"
    "$@" >/dev/null 2>"${work}/step.log" || { cat "${work}/step.log" >&2; exit 1; }
    end="$(date +%s.%N)"
    python3 -c "
s = ${end} - ${start}
print(f'| {\"${name}\":<22} | {s:7.2f} | {${records} / s:>10,.0f} | {${json_bytes} / s / 1e6:6.1f} |')"
}

echo "${records} records, $((json_bytes / 1000000)) MB of JSON lines; $(date -u +%Y-%m-%d), $(nproc) cores"
echo "| step                   | seconds |  records/s |   MB/s |"
echo "|------------------------|--------:|-----------:|-------:|"
step "export postgres" "${cairn}" export postgres --data "${work}/src" --url "${pg_url}"
step "import postgres" "${cairn}" import postgres --url "${pg_url}" --data "${work}/from-pg"
step "verify postgres" "${cairn}" verify --data "${work}/from-pg" --against "${pg_url}"
step "export s3" "${cairn}" export s3 --data "${work}/src" --dest s3://cairn-bench/t --endpoint "${endpoint}"
step "import s3" "${cairn}" import s3 --src s3://cairn-bench/t --data "${work}/from-s3" --endpoint "${endpoint}"
step "verify s3" "${cairn}" verify --data "${work}/from-s3" --against s3://cairn-bench/t --endpoint "${endpoint}"
