"""SIGKILL of the real server while workers hold leases, down longer than a lease: restarted on the same data
directory and port, it takes back the jobs whose leases lapsed meanwhile and the workers go on (retrying
what got no answer); every job ends completed, no job's completion is acknowledged twice, and every
completion acknowledged before the kill is still there after it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from cairn_client import Client, NewJob, Outcome, QueueJob, RetryPolicy, Worker

from .conftest import QUICK_QUEUE
from .server import Server, on_postgres

pytestmark = pytest.mark.skipif(
    on_postgres(),
    reason="what the kill tests is the embedded store's recovery of the queue (its log, the leases stored in"
    " it); on PostgreSQL the queue's durability is the database's",
)

JOBS = 300
WORKERS = 4
LEASE = 2.0


def seconds(n: int) -> float:
    """How long job ``n`` takes: a few jobs outlast the server's outage, one in ten is slow."""
    if n % 60 == 5:
        return 4.0
    return 0.4 if n % 10 == 0 else 0.01


def test_sigkill_while_workers_hold_leases_loses_and_doubles_no_completion(
    binary: str, tmp_path: Path
) -> None:
    server = Server(binary, tmp_path / "data", QUICK_QUEUE).start()
    stop = threading.Event()
    lock = threading.Lock()
    handled: Counter[int] = Counter()
    outcomes: list[Outcome] = []
    threads: list[threading.Thread] = []
    clients: list[Client] = []
    try:
        with Client(server.url) as c:
            batch = [NewJob("kill", "k", {"n": n, "seconds": seconds(n)}) for n in range(JOBS)]
            ids = {e.job.id for e in c.enqueue_many(batch)}

        def handler(job: QueueJob) -> None:
            with lock:
                handled[job.id] += 1
            time.sleep(job.payload["seconds"])

        def record(outcome: Outcome) -> None:
            with lock:
                outcomes.append(outcome)

        def acknowledged() -> list[int]:
            with lock:
                return [o.job.id for o in outcomes if o.status == "completed"]

        workers: list[Worker] = []
        for w in range(WORKERS):
            # Few retries of their own: the worker retries what got no answer.
            clients.append(Client(server.url, retries=RetryPolicy(retries=2, backoff=0.05)))
            workers.append(
                Worker(
                    clients[-1],
                    "kill",
                    handler,
                    worker_name=f"w{w}",
                    lease=LEASE,
                    heartbeat_every=0.5,
                    wait=1.0,
                    on_outcome=record,
                )
            )
            threads.append(threading.Thread(target=workers[-1].run, args=(stop,)))
            threads[-1].start()

        def long_job_started() -> bool:
            now_ms = time.time() * 1000
            return any(
                j.payload["seconds"] > LEASE and now_ms - (j.attempted_at_ms or 0) < 500
                for w in workers
                for j in w.running
            )

        # A third of the jobs done, and a job longer than the outage just started.
        deadline = time.monotonic() + 30
        while len(acknowledged()) < JOBS // 3 or not long_job_started():
            assert time.monotonic() < deadline, f"{len(acknowledged())} jobs acknowledged"
            time.sleep(0.01)
        held = {j.id for w in workers for j in w.running}
        server.kill()
        before = set(acknowledged())
        # Down longer than a lease: the leases of the jobs running lapse, and they are taken back once the
        # server is up (their workers' acknowledgements are then refused, or given up).
        time.sleep(LEASE + 0.5)
        server.start()

        with Client(server.url) as c:
            for id in before:
                assert c.get_job(id).state == "completed", f"job {id}'s acknowledged completion was lost"
            deadline = time.monotonic() + 40
            while (counts := c.queue_counts("kill")).completed < JOBS:
                assert time.monotonic() < deadline, (
                    f"{counts}; outcomes {Counter(o.status for o in outcomes)}"
                )
                time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(30)
            assert not t.is_alive()

        with Client(server.url) as c:
            final = [c.get_job(id) for id in sorted(ids)]
            assert {j.state for j in final} == {"completed"}
            counts = c.queue_counts("kill")
            assert (counts.completed, counts.total) == (JOBS, JOBS)
        statuses = Counter(o.status for o in outcomes)
        acks = Counter(acknowledged())
        assert max(acks.values()) == 1, f"completions acknowledged twice: {acks.most_common(3)}"
        # A job without an acknowledged completion is one whose completion went through unanswered.
        assert JOBS - len(acks) <= statuses["unacknowledged"], statuses
        assert set(acks) <= ids
        assert set(handled) == ids
        assert held, "the kill came while workers held leases"
        assert statuses["failed"] == 0
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for client in clients:
            client.close()
        server.stop()
