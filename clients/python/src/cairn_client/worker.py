"""A worker of the job queue: :class:`Worker` claims jobs (long-polling), runs a handler on each, keeps their
leases with heartbeats while the handler runs, and acknowledges each job's outcome with its fencing token.

>>> from cairn_client import Client, Worker
>>> def send_receipt(job):                                              # doctest: +SKIP
...     mailer.send(job.payload["to"], render(job.payload))
>>> with Client("http://127.0.0.1:7070") as cairn:                      # doctest: +SKIP
...     Worker(cairn, "mail", send_receipt, concurrency=4).run(stop)

A job whose handler returns is completed; one whose handler raises is failed with the exception's text
(retried after its queue's backoff, or discarded after its last attempt). A job the server took back while
its handler ran (its lease lapsed: the worker was stalled or cut off from the server longer than the lease)
belongs to whoever claimed it since: its acknowledgement is refused (:class:`~cairn_client.StaleToken`,
:class:`~cairn_client.InvalidTransition`), logged, and the worker moves on. A job is therefore completed at
most once, but its handler may run more than once: make handlers idempotent.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from ._calls import queue_names
from .client import Client
from .errors import CairnError, InvalidTransition, NotFound, StaleToken, transient
from .models import QueueJob

__all__ = ["Handler", "Outcome", "Status", "Worker"]

log = logging.getLogger("cairn_client.worker")

#: What became of a job a :class:`Worker` ran (see :class:`Outcome`).
Status = Literal["completed", "failed", "lost", "unacknowledged"]
#: The refusals that say a job is no longer this worker's: another worker claimed it since (its lease
#: lapsed), it was taken back, cancelled, or purged.
LOST = (StaleToken, InvalidTransition, NotFound)
#: Longest wait between two attempts to reach the server.
MAX_BACKOFF = 2.0


def backoff(attempt: int) -> float:
    return min(MAX_BACKOFF, 0.05 * 2.0**attempt)


def error_text(e: BaseException) -> str:
    """An exception as Python prints its last line: ``ValueError: no such account``."""
    return "".join(traceback.format_exception_only(type(e), e)).strip()


@dataclass(frozen=True)
class Outcome:
    """What became of one job a :class:`Worker` ran.

    ``status``: ``completed`` (the handler returned; the completion was acknowledged), ``failed`` (the
    handler raised ``exception``; the failure was acknowledged: ``result`` is retryable or discarded),
    ``lost`` (the server refused the acknowledgement, ``ack_error``: the job's lease had lapsed and it was
    taken back, or it was cancelled or purged), ``unacknowledged`` (the server did not answer the
    acknowledgement for as long as the job's lease lasted, or refused it unexpectedly: ``ack_error``; a job
    whose acknowledgement did not arrive is taken back when its lease ends).
    """

    #: The job as claimed.
    job: QueueJob
    status: Status
    #: The job as the acknowledgement's answer gave it.
    result: QueueJob | None = None
    #: What the handler raised.
    exception: BaseException | None = None
    #: Why the acknowledgement did not go through.
    ack_error: CairnError | None = None


#: What a :class:`Worker` runs on each job; its return value is ignored.
Handler = Callable[[QueueJob], object]


class Worker:
    """Runs ``handler`` on the jobs of ``queues``: :meth:`run` until stopped, or :meth:`run_once`.

    ``client``: the :class:`~cairn_client.Client` (thread-safe; shared by the worker's threads).
    ``queues``: a queue's name, or several (the most urgent job of any comes first). ``handler(job)``: does
    the work; returning completes the job, raising an :class:`Exception` fails it with the exception's text.
    ``worker_name``: recorded in the jobs claimed (default: host, process id and a random suffix).
    ``lease``: seconds a claim leases a job for (default 60). ``heartbeat_every``: seconds between the
    heartbeats that renew the lease of every job running (default a third of ``lease``), so a handler may run
    far longer than ``lease`` while the worker lives. ``wait``: seconds a claim waits for a job (long poll;
    default 10; the server caps it at its ``max_wait_ms``). ``concurrency``: jobs run at once, each on a
    thread (default 1); one claim asks for as many jobs as there are free threads. ``on_outcome``: called
    with the :class:`Outcome` of every job, on the thread that ran it.

    An acknowledgement that gets no answer (the server restarting, say) is sent again, backing off up to
    2 s, for as long as the job's lease lasts; the fencing token makes that safe. ``stats`` counts the
    outcomes by status.
    """

    def __init__(
        self,
        client: Client,
        queues: str | Sequence[str],
        handler: Handler,
        *,
        worker_name: str | None = None,
        lease: float = 60.0,
        heartbeat_every: float | None = None,
        wait: float = 10.0,
        concurrency: int = 1,
        on_outcome: Callable[[Outcome], object] | None = None,
    ) -> None:
        if lease <= 0:
            raise ValueError(f"lease must be positive (seconds), not {lease!r}")
        beat = lease / 3 if heartbeat_every is None else heartbeat_every
        if not 0 < beat < lease:
            raise ValueError(
                f"heartbeat_every must be positive and below the lease ({lease} s), not {beat!r}"
            )
        if wait < 0:
            raise ValueError(f"wait must not be negative, not {wait!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency!r}")
        self.client = client
        self.queues = queue_names(queues)
        self.handler = handler
        self.worker_name = worker_name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease = lease
        self.heartbeat_every = beat
        self.wait = wait
        self.concurrency = concurrency
        self.on_outcome = on_outcome
        #: Outcomes so far, by status.
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        # The jobs whose handler runs, by id: the heartbeats renew their leases.
        self._running: dict[int, QueueJob] = {}

    def __repr__(self) -> str:
        return f"Worker({self.worker_name!r}, queues={self.queues!r})"

    @property
    def running(self) -> list[QueueJob]:
        """The jobs whose handler runs now."""
        with self._lock:
            return list(self._running.values())

    def run(self, stop: threading.Event | None = None) -> None:
        """Claims and runs jobs until ``stop`` is set (without one: forever). Returns once the claim in
        flight has ended (at most ``wait`` seconds after ``stop`` is set) and every job it holds has run and
        been acknowledged. A claim that cannot reach the server (no answer, 503, 5xx) is logged and sent
        again, backing off up to 2 s; any other refusal of a claim (a bad queue name, a token without the
        role) is raised."""
        stop = stop or threading.Event()
        free = threading.Semaphore(self.concurrency)
        attempt = 0
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=self.worker_name)
        # The pool's exit waits for the jobs running; the heartbeats go on until it has.
        with self._heartbeats(), pool:
            while not stop.is_set():
                if not free.acquire(timeout=0.1):
                    continue
                slots = 1
                while slots < self.concurrency and free.acquire(blocking=False):
                    slots += 1
                try:
                    jobs = self._claim(slots)
                except CairnError as e:
                    for _ in range(slots):
                        free.release()
                    if not transient(e):
                        raise
                    log.warning("%s: claim failed, trying again: %s", self.worker_name, e)
                    stop.wait(backoff(attempt))
                    attempt += 1
                    continue
                attempt = 0
                for _ in range(slots - len(jobs)):
                    free.release()
                for job in jobs:
                    pool.submit(self._run_and_release, job, free)

    def run_once(self) -> list[Outcome]:
        """One claim of up to ``concurrency`` jobs, waiting up to ``wait`` seconds for one; runs them (each
        on a thread, with heartbeats) and returns their outcomes once all are acknowledged; an empty list if
        no job came. The claim's errors are raised."""
        jobs = self._claim(self.concurrency)
        if not jobs:
            return []
        with self._heartbeats():
            if len(jobs) == 1:
                return [self._process(jobs[0])]
            with ThreadPoolExecutor(len(jobs), thread_name_prefix=self.worker_name) as pool:
                return list(pool.map(self._process, jobs))

    # -- one job ----------------------------------------------------------------------------------------

    def _claim(self, limit: int) -> list[QueueJob]:
        return self.client.claim_jobs(
            self.queues, self.worker_name, lease=self.lease, limit=limit, wait=self.wait
        )

    def _run_and_release(self, job: QueueJob, free: threading.Semaphore) -> None:
        try:
            self._process(job)
        except BaseException:
            log.exception("%s: job %d", self.worker_name, job.id)
        finally:
            free.release()

    def _process(self, job: QueueJob) -> Outcome:
        with self._lock:
            self._running[job.id] = job
        exception: Exception | None = None
        try:
            self.handler(job)
        except Exception as e:
            exception = e
        finally:
            with self._lock:
                self._running.pop(job.id, None)
        if exception is not None:
            text = error_text(exception)
            log.warning("%s: job %d (%s) failed: %s", self.worker_name, job.id, job.kind, text)
        outcome = self._acknowledge(job, exception)
        with self._lock:
            self.stats[outcome.status] += 1
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def _acknowledge(self, job: QueueJob, exception: Exception | None) -> Outcome:
        """Completes ``job`` (or fails it with ``exception``'s text), sending it again while the server
        does not answer, for as long as the job's lease lasts."""
        status: Status = "completed" if exception is None else "failed"
        text = "" if exception is None else error_text(exception)
        deadline = time.monotonic() + self.lease
        attempt = 0
        while True:
            try:
                result = self.client.complete(job) if exception is None else self.client.fail(job, text)
                return Outcome(job, status, result, exception)
            except LOST as e:
                # Sent again after its first attempt went through unanswered (here or by the client's
                # retries), an acknowledgement finds the job finished: the refusal hides a success.
                applied = self._applied(job, e, text)
                if applied is not None:
                    return Outcome(job, status, applied, exception)
                log.warning(
                    "%s: job %d (%s) is no longer this worker's, not %s: %s",
                    self.worker_name,
                    job.id,
                    job.kind,
                    status,
                    e,
                )
                return Outcome(job, "lost", None, exception, e)
            except CairnError as e:
                if not transient(e) or time.monotonic() > deadline:
                    log.error("%s: job %d (%s) not acknowledged: %s", self.worker_name, job.id, job.kind, e)
                    return Outcome(job, "unacknowledged", None, exception, e)
                time.sleep(backoff(attempt))
                attempt += 1

    def _applied(self, job: QueueJob, refusal: CairnError, text: str) -> QueueJob | None:
        """The job, if the acknowledgement refused with ``refusal`` had in fact gone through (its answer
        lost, the call sent again): the job is finished under this worker's token as the acknowledgement
        asked. Only a claim changes the token, so no other worker did it."""
        if not isinstance(refusal, InvalidTransition):
            return None
        try:
            now = self.client.get_job(job)
        except CairnError:
            return None
        if now.token != job.token:
            return None
        if not text:
            return now if now.state == "completed" else None
        # The failure recorded is this attempt's, with this worker's text (of which the server keeps the
        # first 4 KiB); the job may have come out of its backoff since.
        last = now.errors[-1] if now.errors else None
        if now.state == "running" or last is None or last.attempt != job.attempt:
            return None
        return now if text.startswith(last.error) else None

    # -- heartbeats -------------------------------------------------------------------------------------

    @contextmanager
    def _heartbeats(self) -> Iterator[None]:
        done = threading.Event()
        thread = threading.Thread(
            target=self._beat, args=(done,), name=f"{self.worker_name}-heartbeat", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _beat(self, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_every):
            for job in self.running:
                try:
                    self.client.heartbeat(job, self.lease)
                except LOST as e:
                    with self._lock:
                        running = self._running.pop(job.id, None) is not None
                    if running:
                        log.warning(
                            "%s: job %d (%s) was taken back while its handler ran: %s",
                            self.worker_name,
                            job.id,
                            job.kind,
                            e,
                        )
                except CairnError as e:
                    log.warning("%s: heartbeat of job %d failed: %s", self.worker_name, job.id, e)
