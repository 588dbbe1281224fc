"""The synchronous client: :class:`Client`, and the lazy objects its methods return."""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import _calls
from ._calls import (
    LOG_CHUNK,
    MAX_RUNS,
    Call,
    IfMatch,
    IndexLike,
    JobId,
    JobRef,
    MetricsLike,
    NewJobLike,
    Time,
)
from ._sse import EventParser, Resume, change_of
from .errors import ApiError, NotFound, PayloadTooLarge, TransportError, Unavailable, error_from_response
from .models import (
    Bucket,
    Change,
    ChangesPage,
    CollectionInfo,
    Declared,
    Document,
    Enqueued,
    Health,
    JobPage,
    JobState,
    LatestMetric,
    MetricBucket,
    MetricHistory,
    MetricsDeleted,
    MetricsLogged,
    NewJob,
    Page,
    QueueCounts,
    QueueJob,
    Record,
    TransactionResult,
    check_state,
)
from .retry import RetryPolicy, as_policy
from .run_metrics import MetricsBatcher
from .transactions import TransactionBuilder

__all__ = ["ChangeFeed", "ChangeStream", "Client", "JobList", "Query", "Transaction"]

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:7070"
#: Requests that failed before reaching the server: never applied, always safe to send again.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: Largest page the server gives (its default ``max_page``); iterators ask for pages of this size.
ITER_PAGE = 1000
#: The server sends a keep-alive comment on event streams every 15 s; a stream silent for longer is dead.
STREAM_READ_TIMEOUT = 45.0


def make_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(timeout, 10.0))


def request_kwargs(call: Call[Any], headers: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"headers": {**headers, **call.headers}}
    if call.params:
        out["params"] = call.params
    if call.body is not None:
        out["content"] = json.dumps(call.body, allow_nan=False, separators=(",", ":")).encode()
        out["headers"]["Content-Type"] = "application/json"
    return out


def transport_error(call: Call[Any], e: httpx.TransportError, sent: bool) -> TransportError:
    what = "may have reached the server" if sent else "was not sent"
    return TransportError(
        f"{call.method} {call.path}: {type(e).__name__}: {e} (the request {what})", sent=sent
    )


def pool_limits(max_connections: int) -> httpx.Limits:
    """A pool of ``max_connections``, every one kept alive."""
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)


class Settings:
    """What :class:`Client` and :class:`~cairn_client.AsyncClient` keep of their arguments: the server's
    URL, the retry policy, the timeouts and the headers of every request."""

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout: float | httpx.Timeout,
        retries: int | RetryPolicy,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry_policy = as_policy(retries)
        self._timeout = make_timeout(timeout)
        self._headers = {"Accept": "application/json", **(headers or {})}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"

    def _poll_timeout(self, wait: float) -> httpx.Timeout:
        """The timeouts of a long poll that may wait ``wait`` seconds before the server answers."""
        t = self._timeout
        return httpx.Timeout(t.connect, read=(t.read or 60.0) + wait, write=t.write, pool=t.pool)


class Client(Settings):
    """A client of one Cairn server, thread-safe, with a pool of keep-alive connections.

    ``url``: the server (default ``http://127.0.0.1:7070``). ``token``: a bearer token, if the server has
    tokens configured. ``timeout``: seconds per request (default 60; an :class:`httpx.Timeout` for finer
    control). ``retries``: attempts after a 503 or a failed connection (default 3), or a
    :class:`~cairn_client.RetryPolicy`; see :mod:`cairn_client.retry` for which requests are sent again.
    ``max_connections``: the pool's size (default 100). ``headers``: sent with every request.
    ``transport``: an httpx transport to use instead of the network (tests, proxies).

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = 60.0,
        retries: int | RetryPolicy = 3,
        max_connections: int = 100,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout, retries, headers)
        self._http = httpx.Client(
            base_url=self.url, timeout=self._timeout, limits=pool_limits(max_connections), transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the pool's connections."""
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- the request loop -------------------------------------------------------------------------------

    def _run(self, call: Call[T], *, timeout: httpx.Timeout | None = None) -> T:
        attempt = 0
        kwargs = request_kwargs(call, self._headers)
        if timeout is not None:
            kwargs["timeout"] = timeout
        while True:
            try:
                resp = self._http.request(call.method, call.path, **kwargs)
            except httpx.TransportError as e:
                sent = not isinstance(e, NOT_SENT)
                delay = self.retry_policy.delay(attempt) if (call.repeatable or not sent) else None
                if delay is None:
                    raise transport_error(call, e, sent) from e
                time.sleep(delay)
                attempt += 1
                continue
            if resp.status_code < 400:
                return call.parse(resp)
            err = error_from_response(resp)
            if isinstance(err, Unavailable) and (call.repeatable or not err.applied_unknown):
                delay = self.retry_policy.delay(attempt, err.retry_after)
                if delay is not None:
                    time.sleep(delay)
                    attempt += 1
                    continue
            raise err

    # -- server -----------------------------------------------------------------------------------------

    def health(self) -> Health:
        """``GET /healthz``: liveness and the last commit sequence (no token needed)."""
        return self._run(_calls.health())

    def stats(self) -> dict[str, Any]:
        """``GET /v1/stats``: the engine's figures, as ``cairn stats --json`` (unscoped tokens)."""
        return self._run(_calls.stats())

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text (unscoped tokens)."""
        return self._run(_calls.metrics())

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``: the API's OpenAPI document."""
        return self._run(_calls.openapi())

    # -- artifacts ----------------------------------------------------------------------------------------

    def buckets(self) -> list[Bucket]:
        """``GET /v1/artifacts/buckets``: every artifact bucket (a scoped token's: its project's) with its
        objects and bytes. Objects are read and written through the S3 API (see docs/python.md)."""
        return self._run(_calls.buckets())

    def bucket(self, name: str) -> Bucket:
        """``GET /v1/artifacts/buckets/{name}``: one bucket and its figures; :class:`NotFound` if absent."""
        return self._run(_calls.bucket(name))

    def set_retention(self, bucket: str, days: int | None) -> Bucket:
        """``PUT /v1/artifacts/buckets/{bucket}/retention``: objects older than ``days`` are deleted in the
        background; ``None`` keeps them forever (admin tokens)."""
        return self._run(_calls.set_retention(bucket, days))

    def artifact_stats(self) -> dict[str, Any]:
        """``GET /v1/artifacts/stats``: buckets, objects and bytes summed, and the blob store's health
        (unscoped tokens)."""
        return self._run(_calls.artifact_stats())

    def collect_garbage(self) -> dict[str, Any]:
        """``POST /v1/artifacts/gc``: retention and garbage collection of the blob files now; what was
        expired and reclaimed (unscoped admin tokens)."""
        return self._run(_calls.collect_garbage())

    def backup(self, to: str, *, check: bool = False) -> dict[str, Any]:
        """``POST /v1/admin/backup``: a consistent copy of the live store into ``to`` (an absolute path on the
        server's machine, new or empty), checked if ``check`` (unscoped admin tokens)."""
        return self._run(_calls.backup(to, check))

    def check(self) -> dict[str, Any]:
        """``POST /v1/admin/check``: ``cairn check`` of a consistent copy; the report's ``healthy`` says the
        result (unscoped admin tokens)."""
        return self._run(_calls.check())

    # -- collections ------------------------------------------------------------------------------------

    def collections(self) -> list[CollectionInfo]:
        """Every collection, its indexes and record count."""
        return self._run(_calls.collections())

    def declare_collection(self, name: str, indexes: Sequence[IndexLike] = ()) -> Declared:
        """Declares a collection with ``indexes`` (:class:`Index`, ``{"name", "fields"}`` or
        ``(name, fields)``); an existing one gets these indexes, new ones built online (unscoped admin)."""
        return self._run(_calls.declare(name, indexes))

    # -- records ----------------------------------------------------------------------------------------

    def get(self, collection: str, id: str) -> Record:
        """The record; :class:`NotFound` if there is none."""
        return self._run(_calls.get(collection, id))

    def find(self, collection: str, id: str) -> Record | None:
        """The record, or ``None`` if there is none."""
        try:
            return self.get(collection, id)
        except NotFound as e:
            if e.kind == "not-found" and e.id is not None:
                return None
            raise

    def put(
        self,
        collection: str,
        id: str,
        document: Document,
        *,
        if_match: IfMatch | None = None,
        create_only: bool = False,
    ) -> Record:
        """Creates or replaces a record (an upsert). ``if_match=version`` replaces only that version
        (``"*"``: any existing one); ``create_only`` creates only. :class:`PreconditionFailed` (with
        ``current_version``) when the condition does not hold."""
        return self._run(_calls.put(collection, id, document, if_match=if_match, create_only=create_only))

    def create(self, collection: str, id: str, document: Document) -> Record:
        """Creates a record; :class:`PreconditionFailed` if the id exists."""
        return self.put(collection, id, document, create_only=True)

    def delete(self, collection: str, id: str, *, if_match: IfMatch | None = None) -> None:
        """Deletes a record (at version ``if_match`` if given); :class:`NotFound` if there is none."""
        self._run(_calls.delete(collection, id, if_match=if_match))

    def query(
        self,
        collection: str,
        filters: Mapping[str, Any] | None = None,
        *,
        order_by: str | None = None,
        order: str = "asc",
        limit: int | None = None,
        page_size: int | None = None,
    ) -> Query:
        """The records equal to ``filters`` (dot-separated paths reach into objects), ordered by
        ``order_by`` (an index must provide it) ``asc`` or ``desc``, at most ``limit`` of them.

        Returns a lazy :class:`Query`: iterate it to follow the cursors page by page, or call
        :meth:`Query.page` and :meth:`Query.count`. Paging is consistent under concurrent writes."""
        _calls.query_params(filters, order_by, order, limit, None)  # Fail here on bad arguments.
        return Query(self, collection, dict(filters or {}), order_by, order, limit, page_size)

    def claim(
        self,
        collection: str,
        set: Mapping[str, Any],
        *,
        where: Mapping[str, Any] | None = None,
        order_by: str | None = None,
        order: str | None = None,
        queries: Sequence[Mapping[str, Any]] | None = None,
    ) -> Record | None:
        """Takes the first record matching ``where`` (in ``order_by`` order), or of the first of ``queries``
        (``{"where", "order_by", "order"}`` each) that has one, and sets ``set`` on it, atomically: concurrent
        workers never take the same record. ``None`` if nothing matched. A claim that lost every race is
        retried after the server's ``Retry-After`` (:class:`Contended` when retries run out)."""
        return self._run(_calls.claim(collection, set, where, order_by, order, queries))

    # -- transactions -----------------------------------------------------------------------------------

    def transaction(self) -> Transaction:
        """A transaction builder: add operations, then :meth:`Transaction.commit`; or use it as a context
        manager, committed when the block ends without an exception."""
        return Transaction(self)

    def commit(self, operations: list[dict[str, Any]]) -> TransactionResult:
        """Commits raw operations (``{"op", "collection", "id", "document"?, "if_match"?, "if_none_match"?}``)
        all or nothing."""
        return self._run(_calls.transaction(operations))

    # -- change feed ------------------------------------------------------------------------------------

    def changes_page(
        self,
        since: int = 0,
        *,
        collection: str | None = None,
        limit: int | None = None,
        wait: float = 0.0,
    ) -> ChangesPage:
        """One read of the change feed after ``since``, waiting up to ``wait`` seconds for a change (the
        server caps it at its ``max_wait_ms``)."""
        wait_ms = int(wait * 1000)
        call = _calls.changes(since, limit=limit, wait_ms=wait_ms, collection=collection)
        return self._run(call, timeout=self._poll_timeout(wait) if wait_ms else None)

    def changes(
        self,
        since: int = 0,
        *,
        collection: str | None = None,
        follow: bool = False,
        wait: float = 20.0,
        page_size: int | None = None,
    ) -> ChangeFeed:
        """The changes after ``since``, in commit order, read page by page. With ``follow`` the iterator
        never ends: it long-polls (``wait`` seconds a request) for new changes. Its ``since`` is where to
        resume it later."""
        return ChangeFeed(self, since, collection, follow, wait, page_size)

    def stream(
        self, since: int = 0, *, collection: str | None = None, reconnect_for: float | None = 60.0
    ) -> ChangeStream:
        """The live change stream (server-sent events) after ``since``. A dropped connection (a restart of
        the server, a network failure) is reopened where the stream stopped, without losing or repeating a
        change, for up to ``reconnect_for`` seconds of failed attempts (``None``: forever)."""
        return ChangeStream(self, since, collection, reconnect_for)

    # -- the job queue ----------------------------------------------------------------------------------

    def enqueue(
        self,
        queue: str,
        kind: str,
        payload: Any = None,
        *,
        priority: int = 0,
        run_at: datetime | int | None = None,
        max_attempts: int | None = None,
        unique_key: str | None = None,
        unique_period: float | None = None,
        unique_states: Sequence[JobState] | None = None,
    ) -> Enqueued:
        """``POST /v1/queue/jobs``: adds a job of ``kind`` to ``queue`` (arguments as :class:`NewJob`'s).
        ``Enqueued.job`` is the new job, available (or scheduled, for a future ``run_at``); with
        ``Enqueued.duplicate`` it is the job already holding ``unique_key``, and nothing was added."""
        job = NewJob(
            queue, kind, payload, priority, run_at, max_attempts, unique_key, unique_period, unique_states
        )
        return self._run(_calls.enqueue(job))

    def enqueue_many(self, jobs: Sequence[NewJobLike]) -> list[Enqueued]:
        """``POST /v1/queue/jobs/batch``: enqueues 1 to 1,000 jobs (:class:`NewJob`, or mappings of its
        fields) in one commit, all or none; the outcome of each, in order."""
        return self._run(_calls.enqueue_many(jobs))

    def claim_jobs(
        self,
        queues: str | Sequence[str],
        worker: str,
        *,
        lease: float = 30.0,
        limit: int = 1,
        wait: float = 0.0,
    ) -> list[QueueJob]:
        """``POST /v1/queue/claim``: up to ``limit`` of the most urgent available jobs of ``queues``
        (priority, then age), each running, leased to ``worker`` for ``lease`` seconds and carrying its
        fencing token. With none available, waits up to ``wait`` seconds for one (the server caps it at its
        ``max_wait_ms``); an empty list if none came. Keep a long job's lease with :meth:`heartbeat`: a job
        whose lease lapses is taken back (a failed attempt) and given to another worker."""
        call = _calls.claim_jobs(queues, worker, lease, limit, wait)
        return self._run(call, timeout=self._poll_timeout(wait) if wait > 0 else None)

    def complete(self, job: JobRef) -> QueueJob:
        """``POST /v1/queue/jobs/{id}/complete``: the claimed job (or ``(id, token)``) is done.
        :class:`StaleToken` if another worker claimed it since, :class:`InvalidTransition` if it is no
        longer running (its lease lapsed and it was taken back, or it was cancelled)."""
        return self._run(_calls.complete(job))

    def fail(self, job: JobRef, error: str) -> QueueJob:
        """``POST /v1/queue/jobs/{id}/fail``: the attempt failed with ``error`` (at most 4 KiB kept). The job
        is retried after its queue's backoff, or discarded after its last attempt. Refused as
        :meth:`complete` is."""
        return self._run(_calls.fail(job, error))

    def snooze(self, job: JobRef, delay: float) -> QueueJob:
        """``POST /v1/queue/jobs/{id}/snooze``: the job runs again in ``delay`` seconds, this attempt not
        counted. Refused as :meth:`complete` is."""
        return self._run(_calls.snooze(job, delay))

    def heartbeat(self, job: JobRef, lease: float) -> QueueJob:
        """``POST /v1/queue/jobs/{id}/heartbeat``: the job's lease now ends ``lease`` seconds from now.
        Refused as :meth:`complete` is."""
        return self._run(_calls.heartbeat(job, lease))

    def cancel(self, job: JobId) -> QueueJob:
        """``POST /v1/queue/jobs/{id}/cancel``: cancels a job that has not finished (a worker holding it can
        no longer complete it). :class:`InvalidTransition` for a finished job."""
        return self._run(_calls.cancel(job))

    def retry_job(self, job: JobId) -> QueueJob:
        """``POST /v1/queue/jobs/{id}/retry``: makes a finished job (a dead letter, say) available again,
        with one more attempt if it used them all. :class:`InvalidTransition` for one not finished."""
        return self._run(_calls.retry_job(job))

    def complete_many(self, jobs: Sequence[JobRef]) -> list[QueueJob | ApiError]:
        """``POST /v1/queue/complete``: completes 1 to 1,000 claimed jobs in one commit. A job refused does
        not stop the others: each one's outcome, in order, is the completed job or the exception a
        :meth:`complete` of it would have raised (:class:`StaleToken`, :class:`InvalidTransition`,
        :class:`NotFound`), returned, not raised."""
        return self._run(_calls.complete_many(jobs))

    def get_job(self, job: JobId) -> QueueJob:
        """``GET /v1/queue/jobs/{id}``: the job as it is now; :class:`NotFound` if there is none (never
        enqueued, or pruned or purged)."""
        return self._run(_calls.get_job(job))

    def purge_job(self, job: JobId) -> None:
        """``DELETE /v1/queue/jobs/{id}``: deletes a finished job; :class:`NotFinished` for one that is not
        (unscoped admin tokens)."""
        self._run(_calls.purge_job(job))

    def queues(self) -> list[QueueCounts]:
        """``GET /v1/queue/queues``: every queue, by name, with its counts per state."""
        return self._run(_calls.queues())

    def queue_counts(self, queue: str) -> QueueCounts:
        """``GET /v1/queue/queues/{queue}``: the queue's jobs per state (all zero for a queue never used)."""
        return self._run(_calls.queue_counts(queue))

    def list_jobs(
        self,
        queue: str,
        state: JobState = "available",
        *,
        limit: int | None = None,
        page_size: int | None = None,
    ) -> JobList:
        """The jobs of ``queue`` in ``state``, in claim order, at most ``limit`` of them. Returns a lazy
        :class:`JobList`: iterate it to read page after page (``page_size`` jobs each, default 1000), or
        call :meth:`JobList.page`."""
        check_state(state)
        return JobList(self, queue, state, limit, page_size)

    def purge_discarded(self, queue: str) -> int:
        """``DELETE /v1/queue/queues/{queue}/discarded``: deletes the queue's dead letters; how many (unscoped
        admin tokens)."""
        return self._run(_calls.purge_discarded(queue))

    # -- run metrics --------------------------------------------------------------------------------------

    def log_metrics(
        self,
        run: str,
        points: MetricsLike,
        *,
        step: int | None = None,
        timestamp: Time | None = None,
        chunk_size: int = LOG_CHUNK,
    ) -> MetricsLogged:
        """``POST /v1/runs/{run}/metrics``: logs ``points`` (:class:`MetricPoint`, ``(key, value, step)``,
        ``(key, value, step, timestamp)`` or mappings of those fields) or, as MLflow's ``log_metrics``, a
        mapping ``{key: value}`` at ``step`` (default 0). Points without a timestamp get ``timestamp`` (a
        datetime or milliseconds since the epoch; default now). Values are numbers (NaN, infinities and -0.0
        kept as they are). Each request of up to ``chunk_size`` points is one durable commit; a body over the
        server's limit (413) is sent again in halves. A batch of several requests is not atomic: when one is
        refused, the ones before it stay logged. For a training loop, :meth:`metrics_batcher` buffers and
        sends in the background."""
        batch = _calls.as_points(points, step, timestamp)
        todo = _calls.chunks(batch, chunk_size)
        logged = requests = sequence = 0
        while todo:
            part = todo.pop(0)
            try:
                receipt = self._run(_calls.log_metrics(run, part))
            except PayloadTooLarge:
                if len(part) == 1:
                    raise
                todo[:0] = [part[: len(part) // 2], part[len(part) // 2 :]]
                continue
            logged += receipt.points
            requests += 1
            sequence = receipt.sequence
        return MetricsLogged(logged, len({p.key for p in batch}), sequence, requests)

    def metrics_batcher(
        self,
        run: str,
        *,
        flush_points: int = 1000,
        flush_interval: float = 2.0,
        max_buffered: int = 100_000,
        chunk_size: int = LOG_CHUNK,
    ) -> MetricsBatcher:
        """A :class:`~cairn_client.MetricsBatcher` of ``run``: ``log`` buffers and returns, a thread sends
        batches of ``flush_points`` points or every ``flush_interval`` seconds, retrying until they are
        durable; past ``max_buffered`` points held, ``log`` blocks. Close it (or use it as a context manager)
        to log what waits."""
        return MetricsBatcher(
            self,
            run,
            flush_points=flush_points,
            flush_interval=flush_interval,
            max_buffered=max_buffered,
            chunk_size=chunk_size,
        )

    def history_page(
        self,
        run: str,
        key: str,
        *,
        min_step: int | None = None,
        max_step: int | None = None,
        min_time: Time | None = None,
        max_time: Time | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> MetricHistory:
        """``GET /v1/runs/{run}/metrics/{key}/history``: one page (``limit`` points, 1 to 100,000, default
        10,000) of the metric's points with steps in ``[min_step, max_step]`` and times in ``[min_time,
        max_time]`` (inclusive; datetimes or milliseconds since the epoch), ordered by step then log order;
        its ``next_cursor`` continues it (with the same bounds)."""
        return self._run(_calls.history_page(run, key, min_step, max_step, min_time, max_time, limit, cursor))

    def history(
        self,
        run: str,
        key: str,
        *,
        min_step: int | None = None,
        max_step: int | None = None,
        min_time: Time | None = None,
        max_time: Time | None = None,
        page_size: int = 10_000,
    ) -> MetricHistory:
        """Every point of the metric in the ranges, as :meth:`history_page` reads them, following the
        cursors (``page_size`` points a request): columns ``steps``, ``timestamps_ms`` and ``values``;
        iterate it for a :class:`MetricPoint` per point. An unknown run or key has none."""
        steps: list[int] = []
        times: list[int] = []
        values: list[float] = []
        cursor: str | None = None
        while True:
            page = self.history_page(
                run,
                key,
                min_step=min_step,
                max_step=max_step,
                min_time=min_time,
                max_time=max_time,
                limit=page_size,
                cursor=cursor,
            )
            steps += page.steps
            times += page.timestamps_ms
            values += page.values
            if page.next_cursor is None:
                return MetricHistory(run, key, steps, times, values)
            cursor = page.next_cursor

    def latest_metrics(self, run: str) -> dict[str, LatestMetric]:
        """``GET /v1/runs/{run}/metrics``: the latest point (highest step; of those, the last logged) and the
        point count of every metric of the run, by key."""
        return self._run(_calls.latest_metrics(run))

    def downsample(
        self,
        run: str,
        key: str,
        max_points: int,
        *,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> list[MetricBucket]:
        """``GET /v1/runs/{run}/metrics/{key}/downsample``: the metric's steps (all, or ``[min_step,
        max_step]``) in at most ``max_points`` (1 to 100,000) buckets of equal width, for a plot: each
        :class:`MetricBucket` has the count, NaN count, min, max, mean and last value of its points. Empty
        buckets are left out."""
        return self._run(_calls.downsample(run, key, max_points, min_step, max_step))

    def latest_of(self, key: str, runs: str | Sequence[str]) -> dict[str, LatestMetric | None]:
        """``GET /v1/metrics/{key}/latest``: the latest point of metric ``key`` in each of ``runs``, in the
        order given; ``None`` for a run without it. More than 1,000 runs take a request per 1,000."""
        ids = _calls.run_ids(runs)
        out: dict[str, LatestMetric | None] = {}
        for i in range(0, len(ids), MAX_RUNS):
            found = self._run(_calls.latest_of(key, ids[i : i + MAX_RUNS]))
            out.update(found)
        return out

    def compare(
        self,
        key: str,
        runs: str | Sequence[str],
        max_points: int,
        *,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> dict[str, list[MetricBucket]]:
        """``GET /v1/metrics/{key}/compare``: metric ``key`` of each of ``runs`` (1 to 1,000), downsampled as
        :meth:`downsample` does, from one snapshot, in the order given."""
        return self._run(_calls.compare(key, _calls.run_ids(runs), max_points, min_step, max_step))

    def delete_metrics(self, run: str) -> MetricsDeleted:
        """``DELETE /v1/runs/{run}/metrics``: removes every metric of the run; what went."""
        return self._run(_calls.delete_metrics(run))


class Query:
    """A query, run lazily: iterating it reads page after page, following ``next_cursor``."""

    def __init__(
        self,
        client: Client,
        collection: str,
        filters: dict[str, Any],
        order_by: str | None,
        order: str,
        limit: int | None,
        page_size: int | None,
    ) -> None:
        self.client = client
        self.collection = collection
        self.filters = filters
        self.order_by = order_by
        self.order = order
        self.limit = limit
        self.page_size = page_size

    def _page_call(self, cursor: str | None, limit: int | None) -> Call[Page]:
        return _calls.query_page(self.collection, self.filters, self.order_by, self.order, limit, cursor)

    def page(self, cursor: str | None = None) -> Page:
        """One page (``limit`` records, or ``page_size``, or the server's default), from ``cursor``."""
        size = self.page_size if self.limit is None else min(self.limit, self.page_size or self.limit)
        return self.client._run(self._page_call(cursor, size))

    def __iter__(self) -> Iterator[Record]:
        cursor: str | None = None
        left = self.limit
        size = self.page_size or ITER_PAGE
        while left is None or left > 0:
            page = self.client._run(self._page_call(cursor, size if left is None else min(size, left)))
            yield from page.records[:left]
            if left is not None:
                left -= len(page.records)
            if page.next_cursor is None or not page.records:
                return
            cursor = page.next_cursor

    def first(self) -> Record | None:
        """The first record, or ``None``."""
        page = self.client._run(self._page_call(None, 1))
        return page.records[0] if page.records else None

    def count(self) -> int:
        """How many records match the filters (ignoring ``limit``): one request. Without filters, the
        collection's kept count; a token limited to a project counts that project's records."""
        return self.client._run(_calls.count(self.collection, self.filters))


class JobList:
    """A queue's jobs in one state, read lazily: iterating it reads page after page, in claim order
    (priority, then age), following the server's cursor."""

    def __init__(
        self, client: Client, queue: str, state: JobState, limit: int | None, page_size: int | None
    ) -> None:
        self.client = client
        self.queue = queue
        self.state = state
        self.limit = limit
        self.page_size = page_size

    def _page_call(self, after: str | None, limit: int | None) -> Call[JobPage]:
        return _calls.jobs_page(self.queue, self.state, limit, after)

    def page(self, after: str | None = None) -> JobPage:
        """One page (``limit`` jobs, or ``page_size``, or the server's default), from the cursor ``after``."""
        size = self.page_size if self.limit is None else min(self.limit, self.page_size or self.limit)
        return self.client._run(self._page_call(after, size))

    def __iter__(self) -> Iterator[QueueJob]:
        after: str | None = None
        left = self.limit
        size = self.page_size or ITER_PAGE
        while left is None or left > 0:
            page = self.client._run(self._page_call(after, size if left is None else min(size, left)))
            yield from page.jobs[:left]
            if left is not None:
                left -= len(page.jobs)
            if page.next is None or not page.jobs:
                return
            after = page.next


class Transaction(TransactionBuilder):
    """A transaction of a :class:`Client`; see :class:`~cairn_client.transactions.TransactionBuilder`."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client

    def commit(self) -> TransactionResult:
        """Commits every operation, or none (the error says which failed)."""
        self.result = self.client.commit(self.operations)
        return self.result

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self.operations:
            self.commit()


class ChangeFeed(Iterator[Change]):
    """Changes read page by page (long-poll when following). ``since`` is the resume point: every change
    at or below it has been yielded, and no change above it."""

    def __init__(
        self,
        client: Client,
        since: int,
        collection: str | None,
        follow: bool,
        wait: float,
        page_size: int | None,
    ) -> None:
        self.client = client
        self.since = since
        self.collection = collection
        self.follow = follow
        self.wait = wait
        self.page_size = page_size
        self._buffer: list[Change] = []
        self._next_since = since

    def __iter__(self) -> ChangeFeed:
        return self

    def __next__(self) -> Change:
        while not self._buffer:
            self.since = self._next_since
            page = self.client.changes_page(
                self.since,
                collection=self.collection,
                limit=self.page_size,
                wait=self.wait if self.follow else 0.0,
            )
            self._buffer = list(reversed(page.changes))
            self._next_since = page.next_since
            if not page.changes:
                self.since = page.next_since
                if not self.follow:
                    raise StopIteration
        change = self._buffer.pop()
        if not self._buffer:
            self.since = self._next_since
        elif self._buffer[-1].seq != change.seq:
            self.since = change.seq
        return change


class ChangeStream(Iterator[Change]):
    """The live change stream over server-sent events, reconnecting after a dropped connection. Close it
    (or use it as a context manager) to end it. ``since`` is the resume point, as for :class:`ChangeFeed`."""

    def __init__(
        self, client: Client, since: int, collection: str | None, reconnect_for: float | None
    ) -> None:
        self.client = client
        self.collection = collection
        self.reconnect_for = reconnect_for
        self._resume = Resume(since=since)
        #: Connections opened so far (1 + reconnections).
        self.connections = 0
        self._events = self._run()

    @property
    def since(self) -> int:
        return self._resume.since

    def __iter__(self) -> ChangeStream:
        return self

    def __next__(self) -> Change:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def __enter__(self) -> ChangeStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self) -> tuple[list[tuple[str, str]], dict[str, str]]:
        c = self.client
        headers = {**c._headers, "Accept": "text/event-stream"}
        params = [("since", str(self._resume.resume_after()))]
        if self.collection is not None:
            params.append(("collection", self.collection))
        return params, headers

    def _run(self) -> Generator[Change, None, None]:
        c = self.client
        timeout = httpx.Timeout(
            c._timeout.connect, read=STREAM_READ_TIMEOUT, write=c._timeout.write, pool=None
        )
        failing_since: float | None = None
        attempt = 0
        while True:
            params, headers = self._request()
            retry_after: float | None = None
            try:
                with c._http.stream(
                    "GET", "/v1/changes", params=tuple(params), headers=headers, timeout=timeout
                ) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        err = error_from_response(resp)
                        if not isinstance(err, Unavailable):
                            raise err
                        retry_after = err.retry_after
                    else:
                        self.connections += 1
                        failing_since, attempt = None, 0
                        parser = EventParser()
                        for line in resp.iter_lines():
                            event = parser.feed(line)
                            if event is None:
                                continue
                            change = change_of(event)
                            if change is not None and self._resume.accept(change):
                                yield change
                        # The server ended the stream (shutting down): reconnect.
            except ApiError:
                raise
            except httpx.TransportError:
                pass
            now = time.monotonic()
            failing_since = failing_since or now
            if self.reconnect_for is not None and now - failing_since > self.reconnect_for:
                raise TransportError(
                    f"the change stream could not be reopened for {self.reconnect_for} s", sent=False
                )
            delay = retry_after if retry_after is not None else min(2.0, 0.05 * (2**attempt))
            attempt += 1
            time.sleep(delay)
