"""The asynchronous client: :class:`AsyncClient`, the same surface as :class:`~cairn_client.Client` with
coroutines and async iterators (any event loop httpx supports: asyncio, trio)."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import anyio
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
from .client import (
    DEFAULT_URL,
    ITER_PAGE,
    NOT_SENT,
    STREAM_READ_TIMEOUT,
    Settings,
    pool_limits,
    request_kwargs,
    transport_error,
)
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
from .retry import RetryPolicy
from .run_metrics import AsyncMetricsBatcher
from .transactions import TransactionBuilder

__all__ = [
    "AsyncChangeFeed",
    "AsyncChangeStream",
    "AsyncClient",
    "AsyncJobList",
    "AsyncQuery",
    "AsyncTransaction",
]

T = TypeVar("T")


class AsyncClient(Settings):
    """The asynchronous twin of :class:`~cairn_client.Client`: the same arguments and methods, awaited.
    Use it as an async context manager, or ``await client.aclose()``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = 60.0,
        retries: int | RetryPolicy = 3,
        max_connections: int = 100,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout, retries, headers)
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=self._timeout, limits=pool_limits(max_connections), transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the pool's connections."""
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    async def _run(self, call: Call[T], *, timeout: httpx.Timeout | None = None) -> T:
        attempt = 0
        kwargs = request_kwargs(call, self._headers)
        if timeout is not None:
            kwargs["timeout"] = timeout
        while True:
            try:
                resp = await self._http.request(call.method, call.path, **kwargs)
            except httpx.TransportError as e:
                sent = not isinstance(e, NOT_SENT)
                delay = self.retry_policy.delay(attempt) if (call.repeatable or not sent) else None
                if delay is None:
                    raise transport_error(call, e, sent) from e
                await anyio.sleep(delay)
                attempt += 1
                continue
            if resp.status_code < 400:
                return call.parse(resp)
            err = error_from_response(resp)
            if isinstance(err, Unavailable) and (call.repeatable or not err.applied_unknown):
                delay = self.retry_policy.delay(attempt, err.retry_after)
                if delay is not None:
                    await anyio.sleep(delay)
                    attempt += 1
                    continue
            raise err

    async def health(self) -> Health:
        return await self._run(_calls.health())

    async def stats(self) -> dict[str, Any]:
        return await self._run(_calls.stats())

    async def metrics(self) -> str:
        return await self._run(_calls.metrics())

    async def openapi(self) -> dict[str, Any]:
        return await self._run(_calls.openapi())

    async def buckets(self) -> list[Bucket]:
        return await self._run(_calls.buckets())

    async def bucket(self, name: str) -> Bucket:
        return await self._run(_calls.bucket(name))

    async def set_retention(self, bucket: str, days: int | None) -> Bucket:
        return await self._run(_calls.set_retention(bucket, days))

    async def artifact_stats(self) -> dict[str, Any]:
        return await self._run(_calls.artifact_stats())

    async def collect_garbage(self) -> dict[str, Any]:
        return await self._run(_calls.collect_garbage())

    async def backup(self, to: str, *, check: bool = False) -> dict[str, Any]:
        return await self._run(_calls.backup(to, check))

    async def check(self) -> dict[str, Any]:
        return await self._run(_calls.check())

    async def collections(self) -> list[CollectionInfo]:
        return await self._run(_calls.collections())

    async def declare_collection(self, name: str, indexes: Sequence[IndexLike] = ()) -> Declared:
        return await self._run(_calls.declare(name, indexes))

    async def get(self, collection: str, id: str) -> Record:
        return await self._run(_calls.get(collection, id))

    async def find(self, collection: str, id: str) -> Record | None:
        try:
            return await self.get(collection, id)
        except NotFound as e:
            if e.kind == "not-found" and e.id is not None:
                return None
            raise

    async def put(
        self,
        collection: str,
        id: str,
        document: Document,
        *,
        if_match: IfMatch | None = None,
        create_only: bool = False,
    ) -> Record:
        return await self._run(
            _calls.put(collection, id, document, if_match=if_match, create_only=create_only)
        )

    async def create(self, collection: str, id: str, document: Document) -> Record:
        return await self.put(collection, id, document, create_only=True)

    async def delete(self, collection: str, id: str, *, if_match: IfMatch | None = None) -> None:
        await self._run(_calls.delete(collection, id, if_match=if_match))

    def query(
        self,
        collection: str,
        filters: Mapping[str, Any] | None = None,
        *,
        order_by: str | None = None,
        order: str = "asc",
        limit: int | None = None,
        page_size: int | None = None,
    ) -> AsyncQuery:
        """A lazy query: ``async for`` it, or ``await`` its :meth:`AsyncQuery.page` and
        :meth:`AsyncQuery.count`."""
        _calls.query_params(filters, order_by, order, limit, None)
        return AsyncQuery(self, collection, dict(filters or {}), order_by, order, limit, page_size)

    async def claim(
        self,
        collection: str,
        set: Mapping[str, Any],
        *,
        where: Mapping[str, Any] | None = None,
        order_by: str | None = None,
        order: str | None = None,
        queries: Sequence[Mapping[str, Any]] | None = None,
    ) -> Record | None:
        return await self._run(_calls.claim(collection, set, where, order_by, order, queries))

    def transaction(self) -> AsyncTransaction:
        """A transaction builder: ``async with client.transaction() as tx:`` commits when the block ends
        without an exception; or ``await tx.commit()``."""
        return AsyncTransaction(self)

    async def commit(self, operations: list[dict[str, Any]]) -> TransactionResult:
        return await self._run(_calls.transaction(operations))

    async def changes_page(
        self,
        since: int = 0,
        *,
        collection: str | None = None,
        limit: int | None = None,
        wait: float = 0.0,
    ) -> ChangesPage:
        wait_ms = int(wait * 1000)
        call = _calls.changes(since, limit=limit, wait_ms=wait_ms, collection=collection)
        return await self._run(call, timeout=self._poll_timeout(wait) if wait_ms else None)

    def changes(
        self,
        since: int = 0,
        *,
        collection: str | None = None,
        follow: bool = False,
        wait: float = 20.0,
        page_size: int | None = None,
    ) -> AsyncChangeFeed:
        return AsyncChangeFeed(self, since, collection, follow, wait, page_size)

    def stream(
        self, since: int = 0, *, collection: str | None = None, reconnect_for: float | None = 60.0
    ) -> AsyncChangeStream:
        return AsyncChangeStream(self, since, collection, reconnect_for)

    async def enqueue(
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
        job = NewJob(
            queue, kind, payload, priority, run_at, max_attempts, unique_key, unique_period, unique_states
        )
        return await self._run(_calls.enqueue(job))

    async def enqueue_many(self, jobs: Sequence[NewJobLike]) -> list[Enqueued]:
        return await self._run(_calls.enqueue_many(jobs))

    async def claim_jobs(
        self,
        queues: str | Sequence[str],
        worker: str,
        *,
        lease: float = 30.0,
        limit: int = 1,
        wait: float = 0.0,
    ) -> list[QueueJob]:
        call = _calls.claim_jobs(queues, worker, lease, limit, wait)
        return await self._run(call, timeout=self._poll_timeout(wait) if wait > 0 else None)

    async def complete(self, job: JobRef) -> QueueJob:
        return await self._run(_calls.complete(job))

    async def fail(self, job: JobRef, error: str) -> QueueJob:
        return await self._run(_calls.fail(job, error))

    async def snooze(self, job: JobRef, delay: float) -> QueueJob:
        return await self._run(_calls.snooze(job, delay))

    async def heartbeat(self, job: JobRef, lease: float) -> QueueJob:
        return await self._run(_calls.heartbeat(job, lease))

    async def cancel(self, job: JobId) -> QueueJob:
        return await self._run(_calls.cancel(job))

    async def retry_job(self, job: JobId) -> QueueJob:
        return await self._run(_calls.retry_job(job))

    async def complete_many(self, jobs: Sequence[JobRef]) -> list[QueueJob | ApiError]:
        return await self._run(_calls.complete_many(jobs))

    async def get_job(self, job: JobId) -> QueueJob:
        return await self._run(_calls.get_job(job))

    async def purge_job(self, job: JobId) -> None:
        await self._run(_calls.purge_job(job))

    async def queues(self) -> list[QueueCounts]:
        return await self._run(_calls.queues())

    async def queue_counts(self, queue: str) -> QueueCounts:
        return await self._run(_calls.queue_counts(queue))

    def list_jobs(
        self,
        queue: str,
        state: JobState = "available",
        *,
        limit: int | None = None,
        page_size: int | None = None,
    ) -> AsyncJobList:
        """A lazy list of the queue's jobs in ``state``: ``async for`` it, or ``await`` its
        :meth:`AsyncJobList.page`."""
        check_state(state)
        return AsyncJobList(self, queue, state, limit, page_size)

    async def purge_discarded(self, queue: str) -> int:
        return await self._run(_calls.purge_discarded(queue))

    async def log_metrics(
        self,
        run: str,
        points: MetricsLike,
        *,
        step: int | None = None,
        timestamp: Time | None = None,
        chunk_size: int = LOG_CHUNK,
    ) -> MetricsLogged:
        batch = _calls.as_points(points, step, timestamp)
        todo = _calls.chunks(batch, chunk_size)
        logged = requests = sequence = 0
        while todo:
            part = todo.pop(0)
            try:
                receipt = await self._run(_calls.log_metrics(run, part))
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
    ) -> AsyncMetricsBatcher:
        """An :class:`~cairn_client.AsyncMetricsBatcher` of ``run``: ``async with`` it, and ``await`` its
        ``log``."""
        return AsyncMetricsBatcher(
            self,
            run,
            flush_points=flush_points,
            flush_interval=flush_interval,
            max_buffered=max_buffered,
            chunk_size=chunk_size,
        )

    async def history_page(
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
        return await self._run(
            _calls.history_page(run, key, min_step, max_step, min_time, max_time, limit, cursor)
        )

    async def history(
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
        steps: list[int] = []
        times: list[int] = []
        values: list[float] = []
        cursor: str | None = None
        while True:
            page = await self.history_page(
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

    async def latest_metrics(self, run: str) -> dict[str, LatestMetric]:
        return await self._run(_calls.latest_metrics(run))

    async def downsample(
        self,
        run: str,
        key: str,
        max_points: int,
        *,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> list[MetricBucket]:
        return await self._run(_calls.downsample(run, key, max_points, min_step, max_step))

    async def latest_of(self, key: str, runs: str | Sequence[str]) -> dict[str, LatestMetric | None]:
        ids = _calls.run_ids(runs)
        out: dict[str, LatestMetric | None] = {}
        for i in range(0, len(ids), MAX_RUNS):
            found = await self._run(_calls.latest_of(key, ids[i : i + MAX_RUNS]))
            out.update(found)
        return out

    async def compare(
        self,
        key: str,
        runs: str | Sequence[str],
        max_points: int,
        *,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> dict[str, list[MetricBucket]]:
        return await self._run(_calls.compare(key, _calls.run_ids(runs), max_points, min_step, max_step))

    async def delete_metrics(self, run: str) -> MetricsDeleted:
        return await self._run(_calls.delete_metrics(run))


class AsyncQuery:
    """A query, run lazily: ``async for`` reads page after page, following ``next_cursor``."""

    def __init__(
        self,
        client: AsyncClient,
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

    async def page(self, cursor: str | None = None) -> Page:
        size = self.page_size if self.limit is None else min(self.limit, self.page_size or self.limit)
        return await self.client._run(self._page_call(cursor, size))

    async def __aiter__(self) -> AsyncIterator[Record]:
        cursor: str | None = None
        left = self.limit
        size = self.page_size or ITER_PAGE
        while left is None or left > 0:
            page = await self.client._run(self._page_call(cursor, size if left is None else min(size, left)))
            for r in page.records[:left]:
                yield r
            if left is not None:
                left -= len(page.records)
            if page.next_cursor is None or not page.records:
                return
            cursor = page.next_cursor

    async def first(self) -> Record | None:
        page = await self.client._run(self._page_call(None, 1))
        return page.records[0] if page.records else None

    async def count(self) -> int:
        """How many records match the filters (ignoring ``limit``): one request."""
        return await self.client._run(_calls.count(self.collection, self.filters))


class AsyncJobList:
    """A queue's jobs in one state, read lazily: ``async for`` reads page after page, in claim order."""

    def __init__(
        self, client: AsyncClient, queue: str, state: JobState, limit: int | None, page_size: int | None
    ) -> None:
        self.client = client
        self.queue = queue
        self.state = state
        self.limit = limit
        self.page_size = page_size

    def _page_call(self, after: str | None, limit: int | None) -> Call[JobPage]:
        return _calls.jobs_page(self.queue, self.state, limit, after)

    async def page(self, after: str | None = None) -> JobPage:
        size = self.page_size if self.limit is None else min(self.limit, self.page_size or self.limit)
        return await self.client._run(self._page_call(after, size))

    async def __aiter__(self) -> AsyncIterator[QueueJob]:
        after: str | None = None
        left = self.limit
        size = self.page_size or ITER_PAGE
        while left is None or left > 0:
            page = await self.client._run(self._page_call(after, size if left is None else min(size, left)))
            for job in page.jobs[:left]:
                yield job
            if left is not None:
                left -= len(page.jobs)
            if page.next is None or not page.jobs:
                return
            after = page.next


class AsyncTransaction(TransactionBuilder):
    """A transaction of an :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__()
        self.client = client

    async def commit(self) -> TransactionResult:
        self.result = await self.client.commit(self.operations)
        return self.result

    async def __aenter__(self) -> AsyncTransaction:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self.operations:
            await self.commit()


class AsyncChangeFeed(AsyncIterator[Change]):
    """Changes read page by page (long-poll when following); ``since`` is the resume point."""

    def __init__(
        self,
        client: AsyncClient,
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

    def __aiter__(self) -> AsyncChangeFeed:
        return self

    async def __anext__(self) -> Change:
        while not self._buffer:
            self.since = self._next_since
            page = await self.client.changes_page(
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
                    raise StopAsyncIteration
        change = self._buffer.pop()
        if not self._buffer:
            self.since = self._next_since
        elif self._buffer[-1].seq != change.seq:
            self.since = change.seq
        return change


class AsyncChangeStream(AsyncIterator[Change]):
    """The live change stream over server-sent events, reconnecting after a dropped connection. Close it
    with :meth:`aclose` (or ``async with``)."""

    def __init__(
        self, client: AsyncClient, since: int, collection: str | None, reconnect_for: float | None
    ) -> None:
        self.client = client
        self.collection = collection
        self.reconnect_for = reconnect_for
        self._resume = Resume(since=since)
        self.connections = 0
        self._events = self._run()

    @property
    def since(self) -> int:
        return self._resume.since

    def __aiter__(self) -> AsyncChangeStream:
        return self

    async def __anext__(self) -> Change:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> AsyncChangeStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Change, None]:
        c = self.client
        timeout = httpx.Timeout(
            c._timeout.connect, read=STREAM_READ_TIMEOUT, write=c._timeout.write, pool=None
        )
        failing_since: float | None = None
        attempt = 0
        while True:
            headers = {**c._headers, "Accept": "text/event-stream"}
            params = [("since", str(self._resume.resume_after()))]
            if self.collection is not None:
                params.append(("collection", self.collection))
            retry_after: float | None = None
            try:
                async with c._http.stream(
                    "GET", "/v1/changes", params=tuple(params), headers=headers, timeout=timeout
                ) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        err = error_from_response(resp)
                        if not isinstance(err, Unavailable):
                            raise err
                        retry_after = err.retry_after
                    else:
                        self.connections += 1
                        failing_since, attempt = None, 0
                        parser = EventParser()
                        async for line in resp.aiter_lines():
                            event = parser.feed(line)
                            if event is None:
                                continue
                            change = change_of(event)
                            if change is not None and self._resume.accept(change):
                                yield change
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
            await anyio.sleep(delay)
