#!/usr/bin/env bash
# http_load against `cairn serve` on each storage backend, for docs/benchmarks.md ("HTTP server on each
# backend"): release builds of `cairn` and `http_load`, a PostgreSQL 15 cluster of its own with fsync on
# (scripts/postgres-for-tests.sh with CAIRN_PG_FSYNC=1: commits as durable as the embedded store's), and
# for each configuration RUNS consecutive runs, each on a fresh data directory or database:
#
#   embedded     one server, `serve --data DIR`
#   postgres     one server, `serve --backend URL`
#   postgres-2   two servers on one database, http_load's tasks spread across them
#
#     benches/http-backends.sh [CONFIG...]    (default: all three)
#
# RUNS (3), SECONDS_PER_WORKLOAD (5), CONCURRENCY (64), RECORDS (10000). Prints each run's table, the CPU
# seconds each party used during the run (servers, PostgreSQL, http_load), and per workload the three
# requests/s and their median.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${RUNS:-3}"
seconds="${SECONDS_PER_WORKLOAD:-5}"
concurrency="${CONCURRENCY:-64}"
records="${RECORDS:-10000}"
if [ "$#" -gt 0 ]; then configs=("$@"); else configs=(embedded postgres postgres-2); fi
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -j "${CAIRN_JOBS:-2}" -p cairn-server --bin cairn -p cairn-bench --bin http_load
bin="$(cd "${target}/release" && pwd)"

CAIRN_PG_FSYNC=1
export CAIRN_PG_FSYNC
unset CAIRN_TEST_POSTGRES
# shellcheck source=../scripts/postgres-for-tests.sh
source scripts/postgres-for-tests.sh
postmaster="$(head -1 "${cairn_pg_dir}/data/postmaster.pid")"
scratch="$(mktemp -d)"
pids=()

stop_servers() {
    for p in "${pids[@]}"; do
        kill -TERM "${p}" 2>/dev/null || true
        wait "${p}" 2>/dev/null || true
    done
    pids=()
}
cleanup() {
    stop_servers
    rm -rf "${scratch}"
    cairn_pg_stop
}
trap cleanup EXIT

# Starts `cairn serve ARGS...` on a free port; appends its pid to pids and its URL to urls.
urls=()
start_server() {
    local n="${#pids[@]}"
    "${bin}/cairn" serve --listen 127.0.0.1:0 "$@" >"${scratch}/out.${n}" 2>"${scratch}/err.${n}" &
    pids+=("$!")
    local line=""
    for _ in $(seq 1 300); do
        line="$(grep -m1 -E '^listening on http://[0-9.]+:[0-9]+$' "${scratch}/out.${n}" 2>/dev/null || true)"
        [ -n "${line}" ] && break
        sleep 0.1
    done
    case "${line}" in
        "listening on "*) urls+=("${line#listening on }") ;;
        *) echo "cairn serve $* did not start: $(cat "${scratch}/err.${n}")" >&2; exit 1 ;;
    esac
}

# CPU seconds (user + system) of a process, and of the PostgreSQL cluster (the postmaster and its children).
cpu_of() { ps -o times= -p "$1" | tr -d ' '; }
cpu_of_postgres() { ps -o times= --ppid "${postmaster}" -p "${postmaster}" | awk '{s += $1} END {print s + 0}'; }

summary="${scratch}/summary"
: >"${summary}"
for config in "${configs[@]}"; do
    for run in $(seq 1 "${runs}"); do
        urls=()
        case "${config}" in
            embedded) start_server --data "${scratch}/data-${run}" ;;
            postgres | postgres-2)
                db="bench_${config/-/_}_${run}"
                psql -q -d "${CAIRN_TEST_POSTGRES}" -v ON_ERROR_STOP=1 \
                    -c "CREATE DATABASE ${db} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
                url="${CAIRN_TEST_POSTGRES%/*}/${db}"
                start_server --backend "${url}"
                if [ "${config}" = postgres-2 ]; then start_server --backend "${url}"; fi
                ;;
            *) echo "unknown configuration ${config} (embedded, postgres, postgres-2)" >&2; exit 2 ;;
        esac
        pg_before="$(cpu_of_postgres)"
        started="$(date +%s)"
        out="${scratch}/${config}-${run}.txt"
        if ! /usr/bin/time -f "%U %S" -o "${scratch}/load-cpu" "${bin}/http_load" --url "$(IFS=,; echo "${urls[*]}")" \
            --backend "${config}" --records "${records}" --concurrency "${concurrency}" --seconds "${seconds}" \
            | tee "${out}"; then
            echo "http_load failed against ${urls[*]}; the servers' logs:" >&2
            tail -n 20 "${scratch}"/err.* >&2
            exit 1
        fi
        elapsed=$(($(date +%s) - started))
        for i in "${!pids[@]}"; do
            if ! kill -0 "${pids[$i]}" 2>/dev/null; then
                echo "server ${urls[$i]} is gone; its log:" >&2
                tail -n 20 "${scratch}/err.${i}" >&2
                exit 1
            fi
        done
        servers_cpu=0
        for p in "${pids[@]}"; do servers_cpu=$((servers_cpu + $(cpu_of "${p}"))); done
        pg_cpu=$(($(cpu_of_postgres) - pg_before))
        load_cpu="$(awk '{printf "%.0f", $1 + $2}' "${scratch}/load-cpu")"
        echo "cpu seconds over ${elapsed} s: servers ${servers_cpu}, postgres ${pg_cpu}, http_load ${load_cpu}"
        stop_servers
        grep '^| [A-Za-z]' "${out}" | grep -v '^| workload' | awk -F'|' -v c="${config}" \
            '{gsub(/^ +| +$/, "", $2); gsub(/ /, "", $4); print c "|" $2 "|" $4}' >>"${summary}"
        echo
    done
done

echo "| configuration | workload | requests/s of the runs | median |"
echo "|---|---|---:|---:|"
awk -F'|' '
    { key = $1 "|" $2; if (!(key in n)) order[++k] = key; v[key, ++n[key]] = $3 }
    END {
        for (i = 1; i <= k; i++) {
            key = order[i]; m = n[key]; list = ""
            for (j = 1; j <= m; j++) { a[j] = v[key, j] + 0; list = list (j > 1 ? " / " : "") a[j] }
            for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
            split(key, parts, "|")
            printf "| %s | %s | %s | %s |\n", parts[1], parts[2], list, a[int((m + 1) / 2)]
        }
    }' "${summary}"
