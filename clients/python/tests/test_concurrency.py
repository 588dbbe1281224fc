"""Optimistic concurrency, paging under writes, and the change stream across a server restart."""

from __future__ import annotations

import queue
import random
import threading
from pathlib import Path

from cairn_client import Change, Client, PreconditionFailed

from .server import Server


def test_eight_threads_of_if_match_increments_end_at_200(client: Client, jobs: str) -> None:
    client.create(jobs, "counter", {"n": 0})
    conflicts = [0] * 8

    def increment(t: int) -> None:
        with Client(client.url) as c:
            done = 0
            while done < 25:
                r = c.get(jobs, "counter")
                try:
                    c.put(jobs, "counter", {"n": r.document["n"] + 1}, if_match=r.version)
                    done += 1
                except PreconditionFailed as e:
                    assert e.current_version is not None
                    assert e.current_version > r.version
                    conflicts[t] += 1

    threads = [threading.Thread(target=increment, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = client.get(jobs, "counter")
    assert final.document["n"] == 200
    assert final.version == 201


def test_paging_under_concurrent_inserts_returns_each_long_lived_record_once(
    client: Client, jobs: str
) -> None:
    long_lived = {f"r{i:05}" for i in range(0, 3000, 3)}  # 1,000 records spread over the id space
    with client.transaction() as tx:
        for id in sorted(long_lived):
            tx.put(jobs, id, {"status": "PENDING", "priority": int(id[1:]) % 97})
    stop = threading.Event()
    inserted: list[str] = []

    def insert() -> None:
        rng = random.Random(7)
        with Client(client.url) as c:
            while not stop.is_set() and len(inserted) < 2000:
                id = f"r{rng.randrange(3000):05}x{len(inserted)}"  # lands between and beside the others
                c.put(jobs, id, {"status": "PENDING", "priority": rng.randrange(97)})
                inserted.append(id)

    writer = threading.Thread(target=insert)
    writer.start()
    try:
        for query in (
            client.query(jobs, page_size=25),
            client.query(jobs, {"status": "PENDING"}, order_by="priority", page_size=25),
        ):
            seen: list[str] = [r.id for r in query]
            assert len(seen) == len(set(seen)), "a record came twice"
            assert long_lived <= set(seen), "a long-lived record was missed"
    finally:
        stop.set()
        writer.join()
    assert inserted, "the writer did not run alongside"


def test_stream_resumes_after_server_restart(binary: str, data_dir: Path, backend: str | None) -> None:
    server = Server(binary, data_dir, backend=backend).start()
    try:
        with Client(server.url) as c:
            c.declare_collection("events")
            for i in range(3):
                c.put("events", f"before-{i}", {"i": i})
            got: queue.Queue[Change] = queue.Queue()
            stream = c.stream(0, collection="events", reconnect_for=60)
            expected = 3 + 3 + 4

            def consume() -> None:
                for n, change in enumerate(stream, 1):
                    got.put(change)
                    if n == expected:
                        return

            consumer = threading.Thread(target=consume, daemon=True)
            consumer.start()
            first = [got.get(timeout=10) for _ in range(3)]
            with c.transaction() as tx:  # One commit of three changes.
                for i in range(3):
                    tx.put("events", f"txn-{i}", {"i": i})
            first += [got.get(timeout=10) for _ in range(3)]
            server.restart()  # SIGTERM ends the stream; the stream reconnects to the new process.
            for i in range(4):
                c.put("events", f"after-{i}", {"i": i})
            rest = [got.get(timeout=30) for _ in range(4)]
            consumer.join(timeout=10)
            assert not consumer.is_alive()
            ids = [ch.id for ch in first + rest]
            assert ids == [f"before-{i}" for i in range(3)] + [f"txn-{i}" for i in range(3)] + [
                f"after-{i}" for i in range(4)
            ]
            assert got.empty()
            assert stream.connections >= 2
            seqs = [ch.seq for ch in first + rest]
            assert seqs == sorted(seqs)
            stream.close()
    finally:
        server.stop()
