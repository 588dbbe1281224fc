"""The job queue through the client: every call against the real server, the exceptions of its refusals, and
the :class:`Worker` (concurrency, failures, heartbeats). Skipped on a backend without a job queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from cairn_client import (
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    InvalidTransition,
    NewJob,
    NotFinished,
    NotFound,
    Outcome,
    QueueJob,
    StaleToken,
    Worker,
)

from .conftest import ADMIN, READER, VISION, WRITER, skip_without_queue
from .server import Server


def claim_within(client: Client, queue: str, worker: str, seconds: float, lease: float = 30.0) -> QueueJob:
    """The first job claimed from ``queue`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        jobs = client.claim_jobs(queue, worker, lease=lease, wait=0.5)
        if jobs:
            return jobs[0]
        assert time.monotonic() < deadline, f"no job of {queue} within {seconds} s"


@dataclass
class Receipt:
    to: str
    order: int


def test_a_job_goes_from_enqueue_through_claim_to_completion(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        done = c.enqueue(queue, "send_receipt", Receipt("a@b", 42), max_attempts=3)
        assert not done.duplicate
        job = done.job
        assert (job.queue, job.kind, job.state, job.attempt, job.max_attempts) == (
            queue,
            "send_receipt",
            "available",
            0,
            3,
        )
        assert job.payload == {"to": "a@b", "order": 42}
        assert job.decode(Receipt) == Receipt("a@b", 42)
        assert job.token == 0
        assert job.lease_until_ms is None
        assert job.unique_key is None
        assert abs(job.inserted_at - datetime.now(timezone.utc)) < timedelta(minutes=1)
        assert c.get_job(job.id) == job
        assert c.queue_counts(queue).available == 1

        claimed = c.claim_jobs([queue], "w1", lease=30)
        assert [j.id for j in claimed] == [job.id]
        running = claimed[0]
        assert (running.state, running.attempt, running.token, running.worker) == ("running", 1, 1, "w1")
        assert running.lease_until_ms is not None
        assert running.attempted_at_ms is not None
        assert 29_000 <= running.lease_until_ms - running.attempted_at_ms <= 30_000
        assert c.claim_jobs(queue, "w2") == [], "one job, claimed once"
        counts = c.queue_counts(queue)
        assert (counts.available, counts.running, counts.total) == (0, 1, 1)
        assert counts.get("running") == 1

        beat = c.heartbeat(running, 120)
        assert beat.lease_until_ms is not None
        assert beat.lease_until_ms >= running.lease_until_ms + 80_000
        finished = c.complete((running.id, running.token))
        assert (finished.state, finished.finished) == ("completed", True)
        assert finished.finished_at_ms is not None
        assert finished.lease_until_ms is None
        with pytest.raises(InvalidTransition) as e:
            c.complete(running)
        assert (e.value.from_state, e.value.to_state, e.value.job_id) == ("completed", "completed", job.id)
        assert isinstance(e.value, Conflict)
        mine = [q for q in c.queues() if q.queue == queue]
        assert len(mine) == 1
        assert (mine[0].completed, mine[0].total) == (1, 1)


def test_snooze_cancel_and_scheduled_jobs(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        c.enqueue(queue, "k")
        job = c.claim_jobs(queue, "w", lease=10)[0]
        snoozed = c.snooze(job, 0.2)
        assert (snoozed.state, snoozed.attempt) == ("scheduled", 0), "a snooze gives the attempt back"
        assert snoozed.due_at_ms is not None
        assert c.claim_jobs(queue, "w") == [], "snoozed"
        again = c.claim_jobs(queue, "w", wait=5)[0]
        assert (again.id, again.attempt, again.token) == (job.id, 1, 2)
        cancelled = c.cancel(again)
        assert cancelled.state == "cancelled"
        with pytest.raises(InvalidTransition):
            c.complete(again)
        with pytest.raises(InvalidTransition) as e:
            c.cancel(again.id)
        assert e.value.from_state == "cancelled"

        at = datetime.now(timezone.utc) + timedelta(milliseconds=400)
        later = c.enqueue(queue, "later", run_at=at).job
        assert later.state == "scheduled"
        assert later.scheduled_at_ms == round(at.timestamp() * 1000)
        assert c.claim_jobs(queue, "w") == [], "not before its time"
        on_time = c.claim_jobs(queue, "w", wait=5)[0]
        assert on_time.id == later.id
        assert on_time.attempted_at is not None
        assert on_time.attempted_at >= at - timedelta(milliseconds=1)


def test_batches_and_complete_many_with_a_stale_token(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        jobs: list[NewJob | dict[str, Any]] = [
            NewJob(queue, "k", {"n": 0}),
            {"queue": queue, "kind": "k", "payload": {"n": 1}},
        ]
        results = c.enqueue_many(jobs + [NewJob(queue, "k", {"n": n}) for n in range(2, 5)])
        assert [r.job.payload["n"] for r in results] == [0, 1, 2, 3, 4]
        assert not any(r.duplicate for r in results)
        ids = [r.job.id for r in results]
        assert ids == sorted(ids)
        with pytest.raises(BadRequest):
            c.enqueue_many([NewJob(queue, "k"), NewJob(queue, "k", priority=99)])
        assert c.queue_counts(queue).total == 5, "a batch with a bad job adds none"

        claimed = c.claim_jobs(queue, "w", limit=3)
        assert [j.id for j in claimed] == ids[:3]
        outcome = c.complete_many([claimed[0], (claimed[1].id, claimed[1].token - 1), claimed[2]])
        assert isinstance(outcome[0], QueueJob)
        assert outcome[0].state == "completed"
        stale = outcome[1]
        assert isinstance(stale, StaleToken)
        assert (stale.current, stale.presented, stale.job_id, stale.status) == (1, 0, claimed[1].id, 409)
        assert isinstance(outcome[2], QueueJob)
        assert outcome[2].state == "completed"
        c.cancel(ids[3])
        outcome = c.complete_many([claimed[1], claimed[0], (ids[3], 0), (ids[-1] + 10**9, 1)])
        assert isinstance(outcome[0], QueueJob)
        assert isinstance(outcome[1], InvalidTransition)
        assert outcome[1].from_state == "completed"
        assert isinstance(outcome[2], InvalidTransition)
        assert isinstance(outcome[3], NotFound)
        counts = c.queue_counts(queue)
        assert (counts.completed, counts.cancelled, counts.available, counts.running) == (3, 1, 1, 0)


def test_claims_take_the_most_urgent_first_and_pages_follow_claim_order(
    queue_server: Server, queue: str
) -> None:
    with Client(queue_server.url) as c:
        priorities = [5, 0, 9, 0, 3] * 5
        results = c.enqueue_many([NewJob(queue, "k", i, priority=p) for i, p in enumerate(priorities)])
        want = [r.job.id for r in sorted(results, key=lambda r: (r.job.priority, r.job.id))]
        listing = c.list_jobs(queue, page_size=10)
        assert [j.id for j in listing] == want
        page = listing.page()
        assert len(page.jobs) == 10
        assert page.next is not None
        assert [j.id for j in listing.page(page.next).jobs] == want[10:20]
        assert [j.id for j in c.list_jobs(queue, limit=7, page_size=3)] == want[:7]
        assert list(c.list_jobs(queue, "running")) == []

        first = c.claim_jobs(queue, "w", limit=3)
        assert [j.id for j in first] == want[:3]
        assert [j.priority for j in first] == [0, 0, 0]
        rest: list[int] = []
        while jobs := c.claim_jobs(queue, "w"):
            rest.append(jobs[0].id)
        assert rest == want[3:]
        assert [j.id for j in c.list_jobs(queue, "running")] == want


def test_a_unique_key_gives_one_job(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        first = c.enqueue(queue, "report", {"n": 1}, unique_key="report-7")
        again = c.enqueue(queue, "report", {"n": 2}, unique_key="report-7")
        assert (first.duplicate, again.duplicate) == (False, True)
        assert again.job == first.job
        assert again.job.unique_key == "report-7"
        batch = c.enqueue_many([{"queue": queue, "kind": "report", "unique_key": "report-7"}])
        assert batch[0].duplicate
        assert batch[0].job.id == first.job.id
        assert c.queue_counts(queue).total == 1
        # Once the job finished, the key is free again (by default only unfinished jobs hold it).
        c.complete(c.claim_jobs(queue, "w")[0])
        fresh = c.enqueue(queue, "report", unique_key="report-7")
        assert not fresh.duplicate
        assert fresh.job.id != first.job.id
        # With completed jobs counting, the completed job is returned instead of a new one.
        c.enqueue(queue, "other", unique_key="report-8")
        done = c.complete(c.claim_jobs(queue, "w")[0])
        assert done.kind == "report"
        other = c.claim_jobs(queue, "w")[0]
        c.complete(other)
        held = c.enqueue(queue, "other", unique_key="report-8", unique_states=["completed"])
        assert held.duplicate
        assert (held.job.id, held.job.state) == (other.id, "completed")
        # A unique period: a job enqueued longer ago than the period does not count.
        c.enqueue(queue, "period", unique_key="p", unique_period=0.2)
        assert c.enqueue(queue, "period", unique_key="p", unique_period=0.2).duplicate
        time.sleep(0.3)
        assert not c.enqueue(queue, "period", unique_key="p", unique_period=0.2).duplicate
        with pytest.raises(ValueError, match="unique_key"):
            c.enqueue(queue, "k", unique_period=5)


def test_a_waiting_claim_is_woken_by_an_enqueue(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:

        def enqueue_later() -> None:
            time.sleep(0.3)
            with Client(queue_server.url) as other:
                other.enqueue(queue, "wake")

        thread = threading.Thread(target=enqueue_later)
        start = time.monotonic()
        thread.start()
        jobs = c.claim_jobs([queue, f"{queue}-other"], "w", wait=15)
        waited = time.monotonic() - start
        thread.join()
        assert [j.kind for j in jobs] == ["wake"]
        assert 0.25 <= waited < 5, waited
        start = time.monotonic()
        assert c.claim_jobs(queue, "w", wait=0.3) == []
        assert time.monotonic() - start >= 0.25


def test_a_lapsed_lease_makes_the_token_stale(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        c.enqueue(queue, "k", max_attempts=5)
        first = c.claim_jobs(queue, "w1", lease=0.15)[0]
        # The lease lapses, the job is rescued (retryable, available after the 100 ms backoff), and another
        # worker claims it.
        second = claim_within(c, queue, "w2", 10)
        assert second.id == first.id
        assert (second.token, second.attempt, second.worker) == (2, 2, "w2")
        assert second.errors[0].attempt == 1
        assert "lease expired" in second.errors[0].error
        calls: list[Callable[[], object]] = [
            lambda: c.complete(first),
            lambda: c.fail(first, "x"),
            lambda: c.heartbeat(first, 10),
            lambda: c.snooze(first, 1),
        ]
        for call in calls:
            with pytest.raises(StaleToken) as e:
                call()
            assert (e.value.current, e.value.presented, e.value.job_id) == (2, 1, first.id)
        assert c.complete(second).state == "completed"


def test_failures_go_to_the_dead_letters_and_back(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        job = c.enqueue(queue, "k", max_attempts=2).job
        for attempt in (1, 2):
            running = claim_within(c, queue, "w", 10)
            assert running.attempt == attempt
            failed = c.fail(running, f"boom {attempt}")
            assert failed.state == ("retryable" if attempt == 1 else "discarded")
        dead = c.get_job(job.id)
        assert [(e.attempt, e.error) for e in dead.errors] == [(1, "boom 1"), (2, "boom 2")]
        assert dead.errors[1].at >= dead.errors[0].at
        assert [j.id for j in c.list_jobs(queue, "discarded")] == [job.id]
        assert c.queue_counts(queue).discarded == 1

        back = c.retry_job(job.id)
        assert back.state == "available"
        with pytest.raises(InvalidTransition):
            c.retry_job(job.id)
        last = c.claim_jobs(queue, "w")[0]
        assert last.attempt == 3, "one more attempt"
        assert c.fail(last, "again").state == "discarded"

        other = c.enqueue(queue, "k").job
        c.claim_jobs(queue, "w")
        with pytest.raises(NotFinished) as e:
            c.purge_job(other)
        assert (e.value.state, e.value.job_id) == ("running", other.id)
        assert c.purge_discarded(queue) == 1
        with pytest.raises(NotFound) as nf:
            c.get_job(job.id)
        assert nf.value.job_id == job.id
        counts = c.queue_counts(queue)
        assert (counts.discarded, counts.running, counts.total) == (0, 1, 1)
        cancelled = c.cancel(other)
        c.purge_job(cancelled)
        assert c.queue_counts(queue).total == 0


def test_errors_map_to_their_classes(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        refused: list[Callable[[], object]] = [
            lambda: c.enqueue(queue, "k", priority=10),
            lambda: c.enqueue("no spaces", "k"),
            lambda: c.enqueue(queue, ""),
            lambda: c.enqueue(queue, "k", max_attempts=0),
            lambda: c.claim_jobs([], "w"),
            lambda: c.claim_jobs(queue, "", lease=1),
            lambda: c.claim_jobs(queue, "w", limit=1001),
            lambda: c.queue_counts("bad name"),
        ]
        for bad in refused:
            with pytest.raises(BadRequest):
                bad()
        with pytest.raises(ValueError, match="lease"):
            c.claim_jobs(queue, "w", lease=0)
        with pytest.raises(ValueError, match="wait"):
            c.claim_jobs(queue, "w", wait=-1)
        with pytest.raises(ValueError, match="no job state"):
            c.list_jobs(queue, "sleeping")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least one"):
            c.enqueue_many([])

        job = c.enqueue(queue, "k").job
        with pytest.raises(NotFound):
            c.get_job(job.id + 10**9)
        with pytest.raises(NotFound):
            c.complete((job.id + 10**9, 1))
        with pytest.raises(InvalidTransition) as e:
            c.complete(job)
        assert (e.value.from_state, e.value.to_state) == ("available", "completed")
        with pytest.raises(NotFinished):
            c.purge_job(job.id)
        assert c.get_job(job.id) == job, "refusals change nothing"


def test_queue_routes_need_an_unscoped_token_of_the_right_role(auth_server: Server) -> None:
    skip_without_queue(auth_server, ADMIN)
    queue = f"auth-{time.monotonic_ns()}"
    with Client(auth_server.url, token=READER) as reader:
        with pytest.raises(Forbidden):
            reader.enqueue(queue, "k")
        assert reader.queue_counts(queue).total == 0
    with Client(auth_server.url, token=VISION) as scoped:
        with pytest.raises(Forbidden):
            scoped.queues()
        with pytest.raises(Forbidden):
            scoped.enqueue(queue, "k")
    with Client(auth_server.url, token=WRITER) as writer:
        writer.enqueue(queue, "k")
        job = writer.claim_jobs(queue, "w")[0]
        writer.complete(job)
        with pytest.raises(Forbidden):
            writer.purge_job(job)
        with pytest.raises(Forbidden):
            writer.purge_discarded(queue)
    with Client(auth_server.url, token=ADMIN) as admin:
        admin.purge_job(job)
        assert admin.purge_discarded(queue) == 0


# -- the worker --------------------------------------------------------------------------------------------


def test_a_worker_runs_200_jobs_on_4_threads_each_once(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        c.enqueue_many([NewJob(queue, "square", {"n": n}) for n in range(200)])
        handled: list[int] = []
        lock = threading.Lock()
        threads: set[str] = set()

        def handler(job: QueueJob) -> None:
            time.sleep(0.005)
            with lock:
                handled.append(job.payload["n"])
                threads.add(threading.current_thread().name)

        worker = Worker(c, queue, handler, worker_name="squares", lease=30, wait=1, concurrency=4)
        stop = threading.Event()
        runner = threading.Thread(target=worker.run, args=(stop,))
        runner.start()
        try:
            deadline = time.monotonic() + 60
            while c.queue_counts(queue).completed < 200:
                assert time.monotonic() < deadline, f"{c.queue_counts(queue)}"
                time.sleep(0.05)
        finally:
            stop.set()
            runner.join(30)
        assert not runner.is_alive()
        assert sorted(handled) == list(range(200)), "every job handled, none twice"
        assert worker.stats == {"completed": 200}
        assert len(threads) > 1, "jobs ran side by side"
        counts = c.queue_counts(queue)
        assert (counts.completed, counts.total) == (200, 200)
        assert {j.worker for j in c.list_jobs(queue, "completed")} == {"squares"}


def test_a_worker_fails_the_jobs_whose_handler_raises(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        job = c.enqueue(queue, "charge", {"account": 7}, max_attempts=2).job
        outcomes: list[Outcome] = []

        def handler(job: QueueJob) -> None:
            raise ValueError(f"no account {job.payload['account']}")

        worker = Worker(c, [queue], handler, wait=5, on_outcome=outcomes.append)
        first = worker.run_once()
        assert [o.status for o in first] == ["failed"]
        assert isinstance(first[0].exception, ValueError)
        assert first[0].result is not None
        assert first[0].result.state == "retryable"
        second = worker.run_once()  # after the 100 ms backoff
        assert [o.status for o in second] == ["failed"]
        assert outcomes == first + second
        dead = c.get_job(job.id)
        assert dead.state == "discarded"
        assert [e.error for e in dead.errors] == ["ValueError: no account 7"] * 2
        assert worker.stats == {"failed": 2}


def test_heartbeats_keep_a_job_longer_than_its_lease(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        job = c.enqueue(queue, "slow").job
        seen: list[QueueJob] = []

        def handler(job: QueueJob) -> None:
            time.sleep(2.5)  # Past the 1 s lease: maintenance runs every 50 ms and would take it back.
            seen.append(c.get_job(job.id))

        worker = Worker(c, queue, handler, lease=1.0, heartbeat_every=0.25)
        outcomes = worker.run_once()
        assert [o.status for o in outcomes] == ["completed"]
        done = c.get_job(job.id)
        assert (done.state, done.attempt, done.token, done.errors) == ("completed", 1, 1, [])
        assert seen[0].lease_until_ms is not None
        assert seen[0].attempted_at_ms is not None
        assert seen[0].lease_until_ms > seen[0].attempted_at_ms + 2_000, "the lease was renewed"
        assert worker.running == []


def test_a_worker_moves_on_when_its_job_was_taken_back(queue_server: Server, queue: str) -> None:
    with Client(queue_server.url) as c:
        job = c.enqueue(queue, "k").job

        def handler(job: QueueJob) -> None:
            c.cancel(job)  # As an operator would, while the handler runs.

        outcomes = Worker(c, queue, handler).run_once()
        assert [o.status for o in outcomes] == ["lost"]
        assert isinstance(outcomes[0].ack_error, InvalidTransition)
        assert c.get_job(job.id).state == "cancelled"


class LosesAnAnswer(httpx.BaseTransport):
    """Sends every request to the server; the answer to the first request whose path ends with ``suffix``
    is lost on the way back, as when the connection breaks after the server applied it."""

    def __init__(self, suffix: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.suffix = suffix
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith(self.suffix) and not self.lost:
            self.lost += 1
            response.read()
            response.close()
            raise httpx.RemoteProtocolError("connection reset after the request", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("fails", [False, True])
def test_an_acknowledgement_whose_answer_was_lost_counts_once(
    queue_server: Server, queue: str, fails: bool
) -> None:
    transport = LosesAnAnswer("/fail" if fails else "/complete")
    with Client(queue_server.url, transport=transport) as c:
        job = c.enqueue(queue, "k", max_attempts=1).job

        def handler(job: QueueJob) -> None:
            if fails:
                raise RuntimeError("x" * 5000)  # The server keeps 4 KiB of it.

        outcomes = Worker(c, queue, handler).run_once()
        assert transport.lost == 1, "the first answer was lost; the client sent it again"
        # Sent again, the acknowledgement is refused (the job is finished): the worker finds it applied.
        assert [o.status for o in outcomes] == ["failed" if fails else "completed"]
        assert outcomes[0].ack_error is None
        assert outcomes[0].result is not None
        assert outcomes[0].result.state == ("discarded" if fails else "completed")
        assert c.get_job(job.id).token == 1
