#!/usr/bin/env bash
# s3_load against Cairn's S3 API and its peers, for docs/benchmarks.md ("Artifacts over the S3 API"):
# release builds of `cairn` and `s3_load`, then for each peer RUNS consecutive runs, each on a fresh
# directory, and the machine's limit for large writes (`dd` with conv=fdatasync):
#
#   cairn      `cairn serve --data DIR --s3-listen ADDR` with one admin token as the access key (every object
#              synced before its answer)
#   s3s-fs     s3s-fs (`cargo install s3s-fs@0.14.1 --features binary`), plain files, no fsync
#   moto       moto's server (pip install 'moto[server]'), objects in memory
#
#     benches/s3-peers.sh [PEER...]    (default: cairn s3s-fs moto)
#
# RUNS (3), SECONDS_PER_WORKLOAD (5), CONCURRENCY (16), LIST_KEYS (100000), DELETE_KEYS (10000). Prints each
# run's table, the disk bytes of the peer's directory after the run (which ends by deleting every other
# 1 MiB object) and, for Cairn, after garbage collection (`POST /v1/artifacts/gc`) with the live bytes it
# reports; then per workload the runs' ops/s or MB/s and their median.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${RUNS:-3}"
seconds="${SECONDS_PER_WORKLOAD:-5}"
concurrency="${CONCURRENCY:-16}"
list_keys="${LIST_KEYS:-100000}"
delete_keys="${DELETE_KEYS:-10000}"
if [ "$#" -gt 0 ]; then peers=("$@"); else peers=(cairn s3s-fs moto); fi
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -j "${CAIRN_JOBS:-2}" -p cairn-server --bin cairn -p cairn-bench --bin s3_load
bin="$(cd "${target}/release" && pwd)"
scratch="$(mktemp -d)"
server=""
# One key pair for every peer: the access key is Cairn's token name, the secret its token's SHA-256.
token="bench-token"
secret="$(printf %s "${token}" | sha256sum | cut -d' ' -f1)"
cleanup() {
    if [ -n "${server}" ]; then kill -TERM "${server}" 2>/dev/null || true; wait "${server}" 2>/dev/null || true; fi
    rm -rf "${scratch}"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 300); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "s3-peers.sh: nothing listens on port $1" >&2
    return 1
}

# Starts a peer on a fresh directory; sets server (pid), endpoint and dir.
start_peer() {
    local peer="$1" port
    port="$(free_port)"
    dir="${scratch}/${peer}"
    rm -rf "${dir}" && mkdir -p "${dir}"
    case "${peer}" in
        cairn)
            cat >"${scratch}/cairn.toml" <<TOML
[[tokens]]
name = "bench"
sha256 = "${secret}"
role = "admin"
TOML
            "${bin}/cairn" serve --data "${dir}" --listen 127.0.0.1:0 --s3-listen "127.0.0.1:${port}" \
                --config "${scratch}/cairn.toml" >"${scratch}/server.out" 2>"${scratch}/server.err" &
            ;;
        s3s-fs)
            mkdir -p "${dir}/bench"
            s3s-fs --host 127.0.0.1 --port "${port}" --access-key bench --secret-key "${secret}" "${dir}" \
                >"${scratch}/server.out" 2>&1 &
            ;;
        moto)
            moto_server -H 127.0.0.1 -p "${port}" >"${scratch}/server.out" 2>&1 &
            ;;
        *) echo "s3-peers.sh: unknown peer ${peer}" >&2; exit 2 ;;
    esac
    server="$!"
    endpoint="http://127.0.0.1:${port}"
    wait_port "${port}"
}

stop_peer() {
    kill -TERM "${server}" 2>/dev/null || true
    wait "${server}" 2>/dev/null || true
    server=""
}

declare -A results
for peer in "${peers[@]}"; do
    for run in $(seq 1 "${runs}"); do
        start_peer "${peer}"
        echo "== ${peer}, run ${run}"
        "${bin}/s3_load" --endpoint "${endpoint}" --name "${peer}" --concurrency "${concurrency}" \
            --seconds "${seconds}" --list-keys "${list_keys}" --delete-keys "${delete_keys}" \
            --access-key bench --secret-key "${secret}" | tee "${scratch}/table"
        if [ "${peer}" != moto ]; then
            echo "disk after the run: $(du -sb "${dir}" | cut -f1) bytes"
        fi
        if [ "${peer}" = cairn ]; then
            http="$(grep -m1 -oE 'http://[0-9.]+:[0-9]+' "${scratch}/server.out")"
            gc="$(curl -sf -X POST -H "Authorization: Bearer ${token}" "${http}/v1/artifacts/gc")"
            echo "after garbage collection: $(du -sb "${dir}/blobs" | cut -f1) bytes of blob files," \
                "$(echo "${gc}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["blobs"]["live_bytes"])') live;" \
                "whole directory $(du -sb "${dir}" | cut -f1) bytes"
        fi
        # Median inputs: ops/s for the small and listing rows, MB/s for the large ones.
        while IFS='|' read -r _ workload _ ops mbs _; do
            workload="$(echo "${workload}" | xargs)"
            case "${workload}" in
                put-1m|get-1m|put-64m|get-64m) value="$(echo "${mbs}" | xargs)" ;;
                put-4k|get-4k|list|delete) value="$(echo "${ops}" | xargs)" ;;
                *) continue ;;
            esac
            results["${peer}/${workload}"]+="${value} "
        done <"${scratch}/table"
        stop_peer
    done
done

echo "== dd of 64 MiB with conv=fdatasync (the machine's limit for one large durable write)"
for run in $(seq 1 "${runs}"); do
    dd if=/dev/zero of="${scratch}/dd" bs=1M count=64 conv=fdatasync 2>&1 | tail -1
    rm -f "${scratch}/dd"
done

echo "== medians of ${runs} runs (ops/s for 4k, list and delete; MB/s for 1m and 64m)"
printf '| workload |'; for peer in "${peers[@]}"; do printf ' %s |' "${peer}"; done; echo
printf '|---|'; for _ in "${peers[@]}"; do printf -- '---:|'; done; echo
for workload in put-4k get-4k put-1m get-1m put-64m get-64m list delete; do
    printf '| %s |' "${workload}"
    for peer in "${peers[@]}"; do
        median="$(echo "${results["${peer}/${workload}"]:-}" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}')"
        printf ' %s |' "${median}"
    done
    echo
done
