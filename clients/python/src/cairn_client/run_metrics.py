"""Run metrics logged from a training loop: :class:`MetricsBatcher` buffers points and logs them in batches
from a thread of its own; :class:`AsyncMetricsBatcher` does the same from a task, for async code.

>>> from cairn_client import Client
>>> with Client("http://127.0.0.1:7070") as cairn:                      # doctest: +SKIP
...     with cairn.metrics_batcher("run-42") as metrics:
...         for step, batch in enumerate(loader):
...             loss = train_step(batch)
...             metrics.log("train/loss", loss, step)
...             metrics.log_many({"lr": scheduler.lr, "throughput": batch_size / elapsed}, step)

``log`` returns at once: the batcher sends what was logged when ``flush_points`` points wait, when the
oldest has waited ``flush_interval`` seconds, on :meth:`~MetricsBatcher.flush` (which returns once every point
logged before it is durable) and when it is closed. A batch that gets no answer, a 503 or another 5xx is
sent again (backing off up to 2 s) for as long as it takes; meanwhile points pile up to ``max_buffered``,
after which ``log`` blocks until there is room. A batch whose answer was lost (the server may have logged it)
is sent again too, so its points may be kept twice: the server keeps every point and has no way to recognize
a batch it already has. A refusal (400: a bad key, say; 403, 404 for a token's role or project) is not sent
again: after a 400, the batch is sent again key by key, so that only the refused keys' points are lost, and
the error is raised by the next ``log``, ``log_many``, ``flush`` or ``close``.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from . import _calls
from ._calls import LOG_CHUNK, Time
from .errors import BadRequest, CairnError, PayloadTooLarge, transient
from .models import MetricPoint, metric_time

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .client import Client

__all__ = ["AsyncMetricsBatcher", "MetricsBatcher"]

log = logging.getLogger("cairn_client.run_metrics")

#: Longest wait between two attempts to send a batch.
MAX_BACKOFF = 2.0
#: How long a batcher left open when the interpreter exits waits for its points to be logged.
AT_EXIT_TIMEOUT = 30.0


def backoff(attempt: int) -> float:
    return min(MAX_BACKOFF, 0.05 * 2.0**attempt)


def split(part: Sequence[MetricPoint], e: CairnError) -> list[Sequence[MetricPoint]] | None:
    """What to send instead of ``part`` after its refusal ``e``: its halves after a 413 (a body over the
    server's limit), its points key by key after a 400 (so that only a refused key's points are lost);
    ``None`` when there is nothing smaller to try."""
    if isinstance(e, PayloadTooLarge) and len(part) > 1:
        half = len(part) // 2
        return [part[:half], part[half:]]
    if isinstance(e, BadRequest):
        by_key: dict[str, list[MetricPoint]] = {}
        for p in part:
            by_key.setdefault(p.key, []).append(p)
        if len(by_key) > 1:
            return list(by_key.values())
    return None


class _Buffer:
    """What both batchers keep: the points waiting, in log order, and the counts that say which are durable.
    No I/O and no locking: the batchers do both."""

    def __init__(
        self, run: str, flush_points: int, flush_interval: float, max_buffered: int, chunk_size: int
    ) -> None:
        _calls.segment(run)
        for name, value in (("flush_points", flush_points), ("max_buffered", max_buffered)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be at least 1, not {value!r}")
        _calls.chunks([], chunk_size)  # Checks it.
        if max_buffered < flush_points:
            raise ValueError(f"max_buffered ({max_buffered}) must be at least flush_points ({flush_points})")
        if (
            isinstance(flush_interval, bool)
            or not isinstance(flush_interval, (int, float))
            or flush_interval <= 0
        ):
            raise ValueError(f"flush_interval must be positive (seconds), not {flush_interval!r}")
        self.run = run
        self.flush_points = flush_points
        self.flush_interval = float(flush_interval)
        self.max_buffered = max_buffered
        self.chunk_size = chunk_size
        #: Points logged durably so far.
        self.logged = 0
        #: Points refused by the server (their error raised by the next call) or given up by a ``close``
        #: that timed out.
        self.dropped = 0
        #: Requests that logged points.
        self.requests = 0
        #: The last error a batch met, retried or not.
        self.last_error: Exception | None = None
        self._buffer: deque[MetricPoint] = deque()
        # Points taken out of the buffer and being sent.
        self._sending = 0
        # Counts since the start, in log order: points accepted by log, taken to be sent, settled (logged or
        # dropped), and the count a flush waits to see settled.
        self._accepted = 0
        self._taken = 0
        self._settled = 0
        self._flush_to = 0
        # When the oldest point of the buffer was logged (monotonic).
        self._oldest: float | None = None
        # A refusal not yet raised.
        self._error: Exception | None = None
        self._closed = False
        self._abandoned = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.run!r}, pending={self.pending})"

    @property
    def pending(self) -> int:
        """Points logged and not yet durable (waiting, or being sent)."""
        return len(self._buffer) + self._sending

    def _points(self, values: Mapping[str, Any], step: int, timestamp: Time | None) -> list[MetricPoint]:
        if not isinstance(values, Mapping):
            raise TypeError(f"log_many takes a mapping of metric keys to values, not {values!r}")
        return _calls.as_points(values, step, timestamp) if values else []

    def _check(self) -> None:
        """Raises the refusal not yet raised, or :class:`RuntimeError` once closed."""
        self._raise_error()
        if self._closed:
            raise RuntimeError(f"the metrics batcher of run {self.run!r} is closed")

    def _raise_error(self) -> None:
        e, self._error = self._error, None
        if e is not None:
            raise e

    def _full(self, n: int) -> bool:
        return self.pending > 0 and self.pending + n > self.max_buffered

    def _accept(self, points: list[MetricPoint]) -> bool:
        """Buffers ``points``; whether the sender must know: a batch is due, or the buffer was empty (the
        sender waits for a point, not yet for a time)."""
        self._buffer.extend(points)
        self._accepted += len(points)
        if self._oldest is None:
            self._oldest = time.monotonic()
            return True
        return len(self._buffer) >= self.flush_points

    def _due(self, now: float) -> float | None:
        """Seconds until the next batch is due (0: now), or ``None`` while nothing waits."""
        if not self._buffer:
            return None
        if self._closed or self._taken < self._flush_to or len(self._buffer) >= self.flush_points:
            return 0.0
        assert self._oldest is not None
        return max(0.0, self._oldest + self.flush_interval - now)

    def _take(self) -> list[MetricPoint]:
        batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), self.chunk_size))]
        self._sending = len(batch)
        self._taken += len(batch)
        if not self._buffer:
            self._oldest = None
        # Otherwise the points left behind keep the batch's age: they go at its due time, or sooner.
        return batch

    def _settle(self, logged: int, dropped: int, requests: int, error: Exception | None) -> None:
        self._sending = 0
        self._settled += logged + dropped
        self.logged += logged
        self.dropped += dropped
        self.requests += requests
        if error is not None and self._error is None:
            self._error = error

    def _abandon_rest(self) -> None:
        """Drops what is still buffered after a close gave up."""
        n = len(self._buffer)
        self._buffer.clear()
        self._oldest = None
        self._settle(0, n, 0, None)

    def _gave_up(self, timeout: float | None) -> str:
        return (
            f"run {self.run}: gave up on the points not logged within {timeout} s"
            f" ({self.logged} logged, {self.dropped} dropped in all)"
        )

    def _refused(self, part: Sequence[MetricPoint], e: Exception) -> None:
        log.error("run %s: %d points not logged, refused: %s", self.run, len(part), e)

    def _retrying(self, e: Exception, attempt: int) -> None:
        self.last_error = e
        log.warning(
            "run %s: a batch of metrics was not logged (attempt %d), sending it again: %s",
            self.run,
            attempt + 1,
            e,
        )


class MetricsBatcher(_Buffer):
    """Logs the points of run ``run`` in batches from a thread of its own; see the module's documentation.
    Make it with :meth:`Client.metrics_batcher <cairn_client.Client.metrics_batcher>`.

    ``flush_points``: a batch is sent once this many points wait (default 1,000). ``flush_interval``: or once
    the oldest has waited this many seconds (default 2). ``max_buffered``: points held at most, waiting or
    being sent (default 100,000); past it, ``log`` blocks until a batch is durable (while the server cannot be
    reached, until it can). ``chunk_size``: points a request carries at most (default 5,000).

    Use it as a context manager, or call :meth:`close`: what was logged is durable once either returns. A
    batcher still open when the interpreter exits is closed then, waiting up to 30 s. ``logged``,
    ``dropped``, ``requests``, ``pending`` and ``last_error`` say how it went.
    """

    def __init__(
        self,
        client: Client,
        run: str,
        *,
        flush_points: int = 1000,
        flush_interval: float = 2.0,
        max_buffered: int = 100_000,
        chunk_size: int = LOG_CHUNK,
    ) -> None:
        super().__init__(run, flush_points, flush_interval, max_buffered, chunk_size)
        self.client = client
        self._cond = threading.Condition()
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"cairn-metrics-{run}", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    def __enter__(self) -> MetricsBatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # The block failed: what it logged is still sent, and a failure to do so does not hide its error.
        try:
            self.close()
        except Exception:
            log.exception("run %s: closing the metrics batcher", self.run)

    def log(self, key: str, value: float, step: int, timestamp: datetime | int | None = None) -> None:
        """Buffers ``value`` of ``key`` at ``step`` (``timestamp``: a datetime or milliseconds since the
        epoch; default now) and returns, at once unless ``max_buffered`` points are held (then once there is
        room). Raises the refusal of an earlier batch, if one came since the last call (this point is then
        not logged), and :class:`RuntimeError` once closed."""
        self._add([_calls.as_point((key, value, step), self._now(timestamp))])

    def log_many(self, values: Mapping[str, Any], step: int, timestamp: datetime | int | None = None) -> None:
        """Buffers one point per key of ``values`` at ``step``, as :meth:`log` does."""
        self._add(self._points(values, step, timestamp))

    @staticmethod
    def _now(timestamp: Time | None) -> int:
        return _calls.now_ms() if timestamp is None else metric_time(timestamp)

    def _add(self, points: list[MetricPoint]) -> None:
        with self._cond:
            self._check()
            while self._full(len(points)):
                self._cond.notify_all()
                self._cond.wait()
                self._check()
            if points and self._accept(points):
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Sends what waits and returns once every point logged before the call is durable; raises the
        refusal of a batch if one came (those points are not logged), or :class:`TimeoutError` after
        ``timeout`` seconds (the points are still sent)."""
        with self._cond:
            target = self._accepted
            self._flush_to = max(self._flush_to, target)
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._settled >= target, timeout):
                raise TimeoutError(
                    f"run {self.run}: {target - self._settled} points not yet logged after {timeout} s"
                )
            self._raise_error()

    def close(self, timeout: float | None = None) -> None:
        """Logs what waits, stops the thread and returns once every point is durable; raises a refusal not
        yet raised. After ``timeout`` seconds, gives up on the points not yet logged (counted in
        ``dropped``; a request in flight is waited for) and raises :class:`TimeoutError`. Closing again does
        nothing."""
        with self._cond:
            if self._closed:
                self._raise_error()
                return
            self._closed = True
            target = self._accepted
            self._cond.notify_all()
            done = self._cond.wait_for(lambda: self._settled >= target, timeout)
            if not done:
                self._abandoned = True
                self._abandon.set()
                self._cond.notify_all()
        self._thread.join()
        atexit.unregister(self._at_exit)
        with self._cond:
            if not done:
                self._abandon_rest()
                raise TimeoutError(self._gave_up(timeout))
            self._raise_error()

    def _at_exit(self) -> None:
        try:
            self.close(AT_EXIT_TIMEOUT)
        except Exception:
            log.exception("run %s: closing the metrics batcher at exit", self.run)

    # -- the thread ---------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._abandoned:
                        return
                    due = self._due(time.monotonic())
                    if due == 0.0:
                        break
                    if due is None and self._closed:
                        return
                    self._cond.wait(due)
                batch = self._take()
            logged, dropped, requests, error = self._deliver(batch)
            with self._cond:
                self._settle(logged, dropped, requests, error)
                self._cond.notify_all()

    def _deliver(self, batch: list[MetricPoint]) -> tuple[int, int, int, Exception | None]:
        """Logs ``batch``: (points logged, points dropped, requests, the first refusal)."""
        todo: list[Sequence[MetricPoint]] = [batch]
        logged = dropped = requests = attempt = 0
        error: Exception | None = None
        while todo:
            part = todo.pop(0)
            try:
                self.client._run(_calls.log_metrics(self.run, part))
            except CairnError as e:
                if transient(e):
                    self._retrying(e, attempt)
                    if self._abandon.wait(backoff(attempt)):
                        return logged, dropped + len(part) + sum(map(len, todo)), requests, error
                    attempt += 1
                    todo.insert(0, part)
                    continue
                smaller = split(part, e)
                if smaller is not None:
                    todo[:0] = smaller
                    continue
                self.last_error = e
                self._refused(part, e)
                dropped += len(part)
                error = error or e
                continue
            except Exception as e:  # A bug, not the server: never silently.
                self.last_error = e
                self._refused(part, e)
                dropped += len(part)
                error = error or e
                continue
            logged += len(part)
            requests += 1
            attempt = 0
        return logged, dropped, requests, error


class AsyncMetricsBatcher(_Buffer):
    """The asynchronous twin of :class:`MetricsBatcher`, sending from a task: the same arguments, with
    ``log``, ``log_many``, ``flush`` and ``aclose`` awaited. Use it as an async context manager (the task
    lives inside the ``async with`` block; any event loop anyio supports)::

        async with client.metrics_batcher("run-42") as metrics:
            await metrics.log("train/loss", loss, step)
    """

    def __init__(
        self,
        client: AsyncClient,
        run: str,
        *,
        flush_points: int = 1000,
        flush_interval: float = 2.0,
        max_buffered: int = 100_000,
        chunk_size: int = LOG_CHUNK,
    ) -> None:
        super().__init__(run, flush_points, flush_interval, max_buffered, chunk_size)
        self.client = client
        self._stack: AsyncExitStack | None = None
        self._tasks: TaskGroup | None = None
        self._changed: anyio.Event | None = None
        self._done: anyio.Event | None = None

    async def __aenter__(self) -> AsyncMetricsBatcher:
        if self._stack is not None:
            raise RuntimeError("a metrics batcher is entered once")
        self._changed = anyio.Event()
        self._done = anyio.Event()
        self._stack = AsyncExitStack()
        self._tasks = await self._stack.enter_async_context(anyio.create_task_group())
        self._tasks.start_soon(self._loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        assert self._tasks is not None
        cancelled = exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class())
        try:
            if exc_type is None:
                await self.aclose()
            elif not cancelled:
                # The block failed: what it logged is still sent, and a failure to do so does not hide its
                # error.
                try:
                    await self.aclose()
                except Exception:
                    log.exception("run %s: closing the metrics batcher", self.run)
        finally:
            # Closed, or cancelled: the task has nothing left to do either way.
            self._closed = self._abandoned = True
            if cancelled:
                self._tasks.cancel_scope.cancel()
            self._signal()
            await self._stack.aclose()

    def _signal(self) -> None:
        """Wakes every task waiting for a change (the sending task, a full ``log``, ``flush``)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    async def _wait(self, timeout: float | None = None) -> None:
        """Waits for the next change, or ``timeout`` seconds."""
        changed = self._changed
        if changed is None:
            raise RuntimeError("use the metrics batcher as `async with client.metrics_batcher(run) as b:`")
        with anyio.move_on_after(timeout):
            await changed.wait()

    async def log(self, key: str, value: float, step: int, timestamp: datetime | int | None = None) -> None:
        """Buffers a point, as :meth:`MetricsBatcher.log` does."""
        now = _calls.now_ms() if timestamp is None else metric_time(timestamp)
        await self._add([_calls.as_point((key, value, step), now)])

    async def log_many(
        self, values: Mapping[str, Any], step: int, timestamp: datetime | int | None = None
    ) -> None:
        """Buffers one point per key of ``values`` at ``step``."""
        await self._add(self._points(values, step, timestamp))

    async def _add(self, points: list[MetricPoint]) -> None:
        if self._changed is None:
            raise RuntimeError("use the metrics batcher as `async with client.metrics_batcher(run) as b:`")
        self._check()
        while self._full(len(points)):
            self._signal()
            await self._wait()
            self._check()
        if points and self._accept(points):
            self._signal()

    async def flush(self, timeout: float | None = None) -> None:
        """Returns once every point logged before the call is durable, as :meth:`MetricsBatcher.flush`."""
        target = self._accepted
        self._flush_to = max(self._flush_to, target)
        self._signal()
        with anyio.move_on_after(timeout):
            while self._settled < target:
                await self._wait()
        if self._settled < target:
            raise TimeoutError(
                f"run {self.run}: {target - self._settled} points not yet logged after {timeout} s"
            )
        self._raise_error()

    async def aclose(self, timeout: float | None = None) -> None:
        """Logs what waits and returns once every point is durable, as :meth:`MetricsBatcher.close`."""
        if self._closed:
            self._raise_error()
            return
        self._closed = True
        target = self._accepted
        self._signal()
        with anyio.move_on_after(timeout):
            while self._settled < target:
                await self._wait()
        done = self._settled >= target
        if not done:
            self._abandoned = True
            self._signal()
        if self._done is not None:
            await self._done.wait()
        if not done:
            self._abandon_rest()
            raise TimeoutError(self._gave_up(timeout))
        self._raise_error()

    # -- the task -----------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        try:
            while not self._abandoned:
                due = self._due(time.monotonic())
                if due is None and self._closed:
                    return
                if due != 0.0:
                    await self._wait(due)
                    continue
                batch = self._take()
                self._settle(*await self._deliver(batch))
                self._signal()
        finally:
            assert self._done is not None
            self._done.set()

    async def _deliver(self, batch: list[MetricPoint]) -> tuple[int, int, int, Exception | None]:
        todo: list[Sequence[MetricPoint]] = [batch]
        logged = dropped = requests = attempt = 0
        error: Exception | None = None
        while todo:
            part = todo.pop(0)
            try:
                await self.client._run(_calls.log_metrics(self.run, part))
            except CairnError as e:
                if transient(e):
                    self._retrying(e, attempt)
                    with anyio.move_on_after(backoff(attempt)):
                        while not self._abandoned:
                            await self._wait()
                    if self._abandoned:
                        return logged, dropped + len(part) + sum(map(len, todo)), requests, error
                    attempt += 1
                    todo.insert(0, part)
                    continue
                smaller = split(part, e)
                if smaller is not None:
                    todo[:0] = smaller
                    continue
                self.last_error = e
                self._refused(part, e)
                dropped += len(part)
                error = error or e
                continue
            except Exception as e:  # A bug, not the server: never silently.
                self.last_error = e
                self._refused(part, e)
                dropped += len(part)
                error = error or e
                continue
            logged += len(part)
            requests += 1
            attempt = 0
        return logged, dropped, requests, error
