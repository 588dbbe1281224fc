"""The client's overhead: records/s of GETs and conditional PUTs through ``cairn_client`` against the same
workload through ``http_load`` (benches/src/bin/http_load.rs), and the peak memory of iterating a query over
100,000 records.

    cargo build --release -p cairn-server --bin cairn -p cairn-bench --bin http_load
    python clients/python/bench/overhead.py --bin target/release   # or $CARGO_TARGET_DIR/release

Starts its own ``cairn serve`` on a free loopback port over a temporary directory. Each run: ``http_load``
(which loads the 10,000 job records of collection ``load_jobs``) then the client, each workload for
``--seconds``, at each concurrency (threads sharing one ``Client``, or tasks sharing one ``AsyncClient``).
Prints a markdown table per run and the median ratio over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cairn_client import AsyncClient, Client
from server import Server

COLLECTION = "load_jobs"


def doc(i: int, priority: int) -> dict[str, object]:
    return {
        "name": f"train-resnet50-{i}",
        "owner": "alice",
        "project": "vision",
        "status": "PENDING",
        "priority": priority,
        "resources": {"gpus": 4, "memory_gb": 64},
        "submitted_at": 1_767_225_600_000 + i,
    }


def rid(i: int) -> str:
    return f"job-{i:08}"


def http_load(binary: Path, url: str, records: int, conc: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [
            str(binary),
            "--url",
            url,
            "--records",
            str(records),
            "--concurrency",
            str(conc),
            "--seconds",
            str(seconds),
            "--workloads",
            "get,if-match",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rates: dict[str, float] = {}
    for line in out.splitlines():
        m = re.match(r"\| (GET by id|PUT with If-Match) \| (\d+) \| (\d+) \|.*\| (\d+) \|$", line)
        if m:
            if int(m.group(4)):
                raise RuntimeError(f"http_load reported errors: {line}")
            rates["get" if m.group(1).startswith("GET") else "put"] = float(m.group(3))
    return rates


def client_sync(url: str, records: int, conc: int, seconds: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    with Client(url, max_connections=conc) as c:
        for workload in ("get", "put"):
            counts = [0] * conc
            until = time.monotonic() + seconds

            def task(
                n: int, workload: str = workload, until: float = until, counts: list[int] = counts
            ) -> None:
                rng = random.Random(n)
                owned = list(range(n, records, conc))
                versions: dict[int, int] = {}
                while time.monotonic() < until:
                    if workload == "get":
                        c.get(COLLECTION, rid(rng.randrange(records)))
                    else:
                        i = owned[rng.randrange(len(owned))]
                        if i not in versions:
                            versions[i] = c.get(COLLECTION, rid(i)).version
                        versions[i] = c.put(
                            COLLECTION, rid(i), doc(i, rng.randrange(1000)), if_match=versions[i]
                        ).version
                    counts[n] += 1

            threads = [threading.Thread(target=task, args=(n,)) for n in range(conc)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rates[workload] = sum(counts) / (time.monotonic() - t0)
    return rates


async def client_async(url: str, records: int, conc: int, seconds: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    async with AsyncClient(url, max_connections=conc) as c:
        for workload in ("get", "put"):
            counts = [0] * conc
            until = time.monotonic() + seconds

            async def task(
                n: int, workload: str = workload, until: float = until, counts: list[int] = counts
            ) -> None:
                rng = random.Random(n)
                owned = list(range(n, records, conc))
                versions: dict[int, int] = {}
                while time.monotonic() < until:
                    if workload == "get":
                        await c.get(COLLECTION, rid(rng.randrange(records)))
                    else:
                        i = owned[rng.randrange(len(owned))]
                        if i not in versions:
                            versions[i] = (await c.get(COLLECTION, rid(i))).version
                        r = await c.put(COLLECTION, rid(i), doc(i, rng.randrange(1000)), if_match=versions[i])
                        versions[i] = r.version
                    counts[n] += 1

            t0 = time.monotonic()
            await asyncio.gather(*(task(n) for n in range(conc)))
            rates[workload] = sum(counts) / (time.monotonic() - t0)
    return rates


def rss_child(url: str, collection: str, mode: str) -> None:
    """In a fresh process: peak RSS before and after reading every record of ``collection``."""
    with Client(url) as c:
        c.health()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.monotonic()
        n = sum(1 for _ in c.query(collection)) if mode == "iterate" else len(list(c.query(collection)))
        secs = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"records": n, "seconds": secs, "rss_before_kib": before, "rss_peak_kib": after}))


def load(url: str, collection: str, n: int) -> None:
    with Client(url) as c:
        c.declare_collection(collection)
        for first in range(0, n, 1000):
            tx = c.transaction()
            for i in range(first, min(n, first + 1000)):
                tx.put(collection, rid(i), doc(i, i % 1000))
            tx.commit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--bin", type=Path, required=True, help="directory holding the release cairn and http_load"
    )
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rss-records", type=int, default=100_000)
    ap.add_argument("--rss-child", nargs=3, metavar=("URL", "COLLECTION", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(str(args.bin / "cairn"), Path(tmp) / "data").start()
        try:
            ratios: dict[str, list[float]] = {}
            for run in range(1, args.runs + 1):
                print(f"\nrun {run}\n")
                print("| workload | concurrency | http_load records/s | client records/s | ratio |")
                print("|---|---:|---:|---:|---:|")
                for conc in [int(x) for x in args.concurrency.split(",")]:
                    native = http_load(args.bin / "http_load", server.url, args.records, conc, args.seconds)
                    for kind, rates in (
                        ("Client", client_sync(server.url, args.records, conc, args.seconds)),
                        (
                            "AsyncClient",
                            asyncio.run(client_async(server.url, args.records, conc, args.seconds)),
                        ),
                    ):
                        for w in ("get", "put"):
                            ratio = rates[w] / native[w]
                            key = f"{w} {kind} c{conc}"
                            ratios.setdefault(key, []).append(ratio)
                            name = "GET by id" if w == "get" else "PUT with If-Match"
                            cells = f"{native[w]:,.0f} | {rates[w]:,.0f} | {ratio:.2f}"
                            print(f"| {name}, {kind} | {conc} | {cells} |")
            print("\nmedian ratios (client / http_load):")
            for key, rs in ratios.items():
                print(f"  {key}: {statistics.median(rs):.2f}  ({', '.join(f'{r:.2f}' for r in rs)})")
            load(server.url, "rss_jobs", args.rss_records)
            for mode in ("iterate", "list"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--bin",
                        str(args.bin),
                        "--rss-child",
                        server.url,
                        "rss_jobs",
                        mode,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                print(f"rss {mode}: {out.strip()}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
