"""Run metrics through the client: batches logged and read back value for value, histories paged and cut by
step and time, downsampling against a direct computation, the latest values of a run and of many runs,
comparisons, deletion, refusals and project scopes; and the :class:`MetricsBatcher` (a training loop's
20,000 points, flushes by time, refusals raised by the next call, batchers side by side, a server that cannot
be reached, an answer lost). Skipped on a backend without run metrics."""

from __future__ import annotations

import bisect
import math
import struct
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from cairn_client import (
    BadRequest,
    Client,
    Forbidden,
    LatestMetric,
    MetricBucket,
    MetricHistory,
    MetricPoint,
    MetricsBatcher,
    NotFound,
    TransportError,
)

from .conftest import ADMIN, READER, VISION, skip_without_metrics
from .server import Server

T0 = 1_767_225_600_000


def same(a: float, b: float) -> bool:
    """The same value, bit for bit (any NaN for a NaN)."""
    return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)


def test_a_batch_reads_back_value_for_value(metrics_server: Server, run_id: str) -> None:
    specials = [math.nan, math.inf, -math.inf, -0.0, 1e-300, -2.5e300, 5e-324, 0.1 + 0.2]
    with Client(metrics_server.url) as c:
        points: list[Any] = [MetricPoint("odd", v, i, T0 + i) for i, v in enumerate(specials)]
        points += [("loss", 1 / (step + 1), step, T0 + step * 37) for step in range(3000)]
        points += [{"key": "val/acc", "value": step % 7, "step": step} for step in range(3000)]
        logged = c.log_metrics(run_id, points, timestamp=T0 - 5)
        assert (logged.points, logged.series, logged.requests) == (6008, 3, 2)
        assert logged.sequence > 0

        odd = c.history(run_id, "odd")
        assert isinstance(odd, MetricHistory)
        assert (odd.run, odd.key, odd.steps) == (run_id, "odd", list(range(len(specials))))
        assert odd.timestamps_ms == [T0 + i for i in range(len(specials))]
        for got, want in zip(odd.values, specials):
            assert same(got, want), f"{got!r} != {want!r}"
        assert math.copysign(1.0, odd.values[3]) == -1.0, "-0.0 keeps its sign"
        loss = c.history(run_id, "loss")
        assert loss.steps == list(range(3000))
        assert loss.timestamps_ms == [T0 + step * 37 for step in range(3000)]
        assert all(same(v, 1 / (step + 1)) for step, v in enumerate(loss.values))
        acc = c.history(run_id, "val/acc")  # A key with a slash, percent-encoded in the path.
        assert acc.values == [float(step % 7) for step in range(3000)]
        assert set(acc.timestamps_ms) == {T0 - 5}, "points without a timestamp get the call's"
        assert list(acc)[10] == MetricPoint("val/acc", 3.0, 10, T0 - 5)

        latest = c.latest_metrics(run_id)
        assert list(latest) == ["loss", "odd", "val/acc"]
        assert latest["loss"] == LatestMetric("loss", 1 / 3000, 2999, T0 + 2999 * 37, 3000)
        assert same(latest["odd"].value, specials[-1])
        assert latest["odd"].timestamp == datetime.fromtimestamp((T0 + 7) / 1000, tz=timezone.utc)

        # Keys that URLs would read otherwise: relative segments, reserved and non-ASCII characters.
        odd_keys = [".", "..", "a b?#%&=", "é/∂", "x" * 250]
        c.log_metrics(run_id, [(k, i, 1) for i, k in enumerate(odd_keys)])
        for i, k in enumerate(odd_keys):
            assert c.history(run_id, k).values == [float(i)], k
        assert set(odd_keys) <= set(c.latest_metrics(run_id))


def test_a_mapping_logs_at_one_step(metrics_server: Server, run_id: str) -> None:
    with Client(metrics_server.url) as c:
        at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
        logged = c.log_metrics(run_id, {"loss": 0.25, "val/acc": 0.5, "lr": 3e-4}, step=7, timestamp=at)
        assert (logged.points, logged.series, logged.requests) == (3, 3, 1)
        latest = c.latest_metrics(run_id)
        assert latest["val/acc"] == LatestMetric("val/acc", 0.5, 7, 1767323045678, 1)
        assert latest["lr"].timestamp == at
        c.log_metrics(run_id, {"final": 1})  # As MLflow's: step 0, now.
        final = c.latest_metrics(run_id)["final"]
        assert (final.step, final.value) == (0, 1.0)
        assert abs(final.timestamp - datetime.now(timezone.utc)) < timedelta(minutes=1)
        # A point logged late at a lower step does not change the latest value.
        c.log_metrics(run_id, {"loss": 9.0}, step=3)
        again = c.latest_metrics(run_id)["loss"]
        assert (again.step, again.value, again.points) == (7, 0.25, 2)
        with pytest.raises(ValueError, match="step is for a mapping"):
            c.log_metrics(run_id, [("loss", 1.0, 1)], step=1)
        with pytest.raises(ValueError, match="at least one point"):
            c.log_metrics(run_id, {})


def test_histories_are_paged_and_cut_by_step_and_time(metrics_server: Server, run_id: str) -> None:
    with Client(metrics_server.url) as c:
        logged = c.log_metrics(run_id, [("loss", step / 2, step, T0 + step * 10) for step in range(25_000)])
        assert (logged.points, logged.requests) == (25_000, 5), "5,000 points a request"
        whole = c.history(run_id, "loss", page_size=7000)
        assert whole.steps == list(range(25_000))
        assert whole.values == [step / 2 for step in range(25_000)]
        assert whole.next_cursor is None
        assert len(whole) == 25_000
        assert list(whole)[5] == MetricPoint("loss", 2.5, 5, T0 + 50)

        page = c.history_page(run_id, "loss", limit=1000)
        assert page.steps == list(range(1000))
        assert page.next_cursor is not None
        second = c.history_page(run_id, "loss", limit=1000, cursor=page.next_cursor)
        assert second.steps == list(range(1000, 2000))
        ranged = c.history_page(run_id, "loss", min_step=100, max_step=199, limit=60)
        assert ranged.next_cursor is not None
        rest = c.history_page(run_id, "loss", min_step=100, max_step=199, cursor=ranged.next_cursor)
        assert ranged.steps + rest.steps == list(range(100, 200))
        assert rest.next_cursor is None

        assert c.history(run_id, "loss", min_step=24_990).steps == list(range(24_990, 25_000))
        assert c.history(run_id, "loss", max_step=-1).steps == []
        start = datetime.fromtimestamp((T0 + 10_000) / 1000, tz=timezone.utc)
        timed = c.history(run_id, "loss", min_time=start, max_time=T0 + 10_990, page_size=30)
        assert timed.steps == list(range(1000, 1100))
        both = c.history(run_id, "loss", min_step=1050, min_time=start, max_time=T0 + 10_990)
        assert both.steps == list(range(1050, 1100))

        # Points in any order, steps repeated: ordered by step, then by log order.
        c.log_metrics(run_id, [("ooo", 1.0, 5), ("ooo", 2.0, 3), ("ooo", 3.0, 5)])
        c.log_metrics(run_id, [("ooo", 4.0, 1), ("ooo", 5.0, 5)])
        ooo = c.history(run_id, "ooo")
        assert (ooo.steps, ooo.values) == ([1, 3, 5, 5, 5], [4.0, 2.0, 1.0, 3.0, 5.0])
        assert len(c.history(run_id, "no-such-key")) == 0
        assert len(c.history(f"{run_id}-none", "loss")) == 0


def direct_buckets(
    history: MetricHistory, buckets: list[MetricBucket], lo: int, hi: int
) -> list[tuple[int, int, float, float, float, int, float]]:
    """Each bucket computed from the history's points within its steps (and the range ``lo..hi``):
    (count, nan_count, min, max, mean, last_step, last)."""
    out = []
    for b in buckets:
        first = bisect.bisect_left(history.steps, max(b.start_step, lo))
        end = bisect.bisect_right(history.steps, min(b.end_step, hi))
        inside = history.values[first:end]
        finite = [v for v in inside if not math.isnan(v)]
        mean = sum(finite) / len(finite) if finite else math.nan
        mn = min(finite) if finite else math.nan
        mx = max(finite) if finite else math.nan
        out.append((len(inside), len(inside) - len(finite), mn, mx, mean, history.steps[end - 1], inside[-1]))
    return out


def test_downsampling_matches_a_direct_computation(metrics_server: Server, run_id: str) -> None:
    with Client(metrics_server.url) as c:
        points = [
            ("loss", math.nan if step % 997 == 0 else (step * 7919) % 1000 / 10, step * 3, step)
            for step in range(10_000)
        ]
        c.log_metrics(run_id, points)
        history = c.history(run_id, "loss", page_size=100_000)
        for max_points, lo, hi in [(100, None, None), (7, None, None), (64, 300, 9001), (1, 6, 6)]:
            buckets = c.downsample(run_id, "loss", max_points, min_step=lo, max_step=hi)
            assert 0 < len(buckets) <= max_points
            lo_, hi_ = (0 if lo is None else lo), (29_997 if hi is None else hi)
            want = direct_buckets(history, buckets, lo_, hi_)
            for b, (count, nans, mn, mx, mean, last_step, last) in zip(buckets, want):
                assert (b.count, b.nan_count, b.last_step) == (count, nans, last_step), b
                assert same(b.min, mn), b
                assert same(b.max, mx), b
                assert same(b.last, last), b
                assert abs(b.mean - mean) < 1e-9, f"{b}: mean {mean}"
            assert sum(b.count for b in buckets) == sum(1 for s in history.steps if lo_ <= s <= hi_)
        assert c.downsample(run_id, "no-such-key", 10) == []


def test_latest_values_and_comparisons_across_runs(metrics_server: Server, run_id: str) -> None:
    runs = [f"{run_id}-{r}" for r in range(3)]
    with Client(metrics_server.url) as c:
        for r, run in enumerate(runs):
            c.log_metrics(run, [("acc", r + step / 1e4, step, step) for step in range(2000)])
        c.log_metrics(runs[0], {"loss": 0.5}, step=3)
        assert list(c.latest_metrics(runs[0])) == ["acc", "loss"]

        absent = f"{run_id}-absent"
        latest = c.latest_of("acc", [runs[2], absent, runs[0], runs[1]])
        assert list(latest) == [runs[2], absent, runs[0], runs[1]], "in the order asked"
        assert latest[absent] is None
        for r, run in enumerate(runs):
            got = latest[run]
            assert got is not None
            assert (got.key, got.step, got.points) == ("acc", 1999, 2000)
            assert same(got.value, r + 1999 / 1e4)
        loss = c.latest_of("loss", runs[0])[runs[0]]
        assert loss is not None
        assert (loss.step, loss.value, loss.points) == (3, 0.5, 1)
        # More runs than one request may name: a request per 1,000.
        many = [runs[1]] + [f"{run_id}-none-{i}" for i in range(1500)]
        wide = c.latest_of("acc", many)
        assert list(wide) == many
        assert [k for k, v in wide.items() if v is not None] == [runs[1]]

        compared = c.compare("acc", [runs[1], absent, runs[0]], 10)
        assert list(compared) == [runs[1], absent, runs[0]]
        assert compared[absent] == []
        assert len(compared[runs[0]]) == 10
        assert [b.count for b in compared[runs[0]]] == [200] * 10
        assert compared[runs[1]] == c.downsample(runs[1], "acc", 10)
        cut = c.compare("acc", runs, 4, min_step=1000, max_step=1199)
        assert [[b.start_step for b in buckets] for buckets in cut.values()] == [[1000, 1050, 1100, 1150]] * 3


def test_a_runs_metrics_are_deleted(metrics_server: Server, run_id: str) -> None:
    other = f"{run_id}-other"
    with Client(metrics_server.url) as c:
        c.log_metrics(run_id, [("acc", 0.5, step) for step in range(2000)] + [("loss", 1.0, 0)])
        c.log_metrics(other, [("acc", 0.5, step) for step in range(10)])
        deleted = c.delete_metrics(run_id)
        assert (deleted.points, deleted.series) == (2001, 2)
        assert deleted.blocks >= 2
        assert c.latest_metrics(run_id) == {}
        assert len(c.history(run_id, "acc")) == 0
        assert len(c.history(other, "acc")) == 10, "other runs keep theirs"
        again = c.delete_metrics(run_id)
        assert (again.blocks, again.points, again.series) == (0, 0, 0)


def test_bad_input_is_refused_and_writes_nothing(metrics_server: Server, run_id: str) -> None:
    with Client(metrics_server.url) as c:
        for bad_key in ["", "a\0b", "x" * 251]:
            with pytest.raises(BadRequest, match="metric key"):
                c.log_metrics(run_id, [("good", 1.0, 1), (bad_key, 1.0, 1)])
        with pytest.raises(BadRequest):
            c.log_metrics("r" * 251, {"loss": 1.0})
        assert c.latest_metrics(run_id) == {}, "a batch with a bad point writes nothing"
        c.log_metrics(run_id, {"loss": 1.0})
        refused: list[Any] = [
            lambda: c.history(run_id, "loss", page_size=0),
            lambda: c.history(run_id, "loss", page_size=100_001),
            lambda: c.history(run_id, "loss", min_step=9, max_step=1),
            lambda: c.history_page(run_id, "loss", cursor="garbage"),
            lambda: c.history(run_id, "", page_size=10),
            lambda: c.downsample(run_id, "loss", 0),
            lambda: c.downsample(run_id, "loss", 100_001),
            lambda: c.compare("loss", [run_id], 0),
            lambda: c.compare("loss", [run_id] * 1001, 10),
        ]
        for bad in refused:
            with pytest.raises(BadRequest):
                bad()
        # What the client refuses before sending.
        with pytest.raises(TypeError, match="a metric value is a number"):
            c.log_metrics(run_id, {"loss": "0.5"})
        with pytest.raises(TypeError, match="step is an integer"):
            c.log_metrics(run_id, [("loss", 1.0, 1.5)])
        with pytest.raises(TypeError, match="metric key is a string"):
            c.log_metrics(run_id, [(5, 1.0, 1)])
        with pytest.raises(ValueError, match="64 bits"):
            c.log_metrics(run_id, {"loss": 1.0}, step=2**63)
        assert c.latest_of("loss", ["a,b"]) == {"a,b": None}, "an id holding a comma is named"
        with pytest.raises(ValueError, match="at least one run"):
            c.compare("loss", [], 10)
        with pytest.raises(ValueError, match="chunk_size"):
            c.log_metrics(run_id, {"loss": 1.0}, chunk_size=0)
        assert c.latest_metrics(run_id)["loss"].points == 1


def test_a_scoped_token_reaches_the_metrics_of_its_projects_runs_only(
    auth_server: Server, run_id: str
) -> None:
    skip_without_metrics(auth_server, ADMIN)
    mine, theirs, loose = f"{run_id}-mine", f"{run_id}-theirs", f"{run_id}-no-record"
    with Client(auth_server.url, token=ADMIN) as admin:
        admin.declare_collection("runs")
        admin.put("runs", mine, {"project": "vision", "status": "RUNNING"})
        admin.put("runs", theirs, {"project": "nlp", "status": "RUNNING"})
        admin.log_metrics(theirs, {"loss": 0.5}, step=1)
        admin.log_metrics(loose, {"loss": 0.5}, step=1)
    with Client(auth_server.url, token=VISION) as vision:
        assert vision.log_metrics(mine, {"loss": 0.25}, step=1).points == 1
        assert vision.latest_metrics(mine)["loss"].value == 0.25
        for run in (theirs, loose):
            with pytest.raises(NotFound):
                vision.log_metrics(run, {"loss": 0.5}, step=2)
            with pytest.raises(NotFound):
                vision.latest_metrics(run)
            with pytest.raises(NotFound):
                vision.history(run, "loss")
            with pytest.raises(NotFound):
                vision.downsample(run, "loss", 10)
            with pytest.raises(NotFound):
                vision.delete_metrics(run)
        with pytest.raises(NotFound):
            vision.latest_of("loss", [mine, theirs])
        with pytest.raises(NotFound):
            vision.compare("loss", [mine, theirs], 5)
        assert list(vision.latest_of("loss", mine)) == [mine]
        # A batcher's refusal other than a 400 is raised as well, and its points are not logged.
        batcher = vision.metrics_batcher(theirs)
        batcher.log("loss", 0.75, 3)
        with pytest.raises(NotFound):
            batcher.close()
        assert batcher.dropped == 1
    with Client(auth_server.url, token=READER) as reader:
        with pytest.raises(Forbidden):
            reader.log_metrics(theirs, {"loss": 1.0})
        with pytest.raises(Forbidden):
            reader.delete_metrics(theirs)
        assert len(reader.history(theirs, "loss")) == 1, "unscoped tokens reach every run's"
        assert set(reader.compare("loss", [mine, theirs], 5)) == {mine, theirs}


def test_a_body_over_the_limit_is_sent_in_halves(limited_server: Server, run_id: str) -> None:
    skip_without_metrics(limited_server)
    with Client(limited_server.url) as c:  # Bodies of 2 KiB at most: about 25 points.
        logged = c.log_metrics(run_id, [("loss", step / 3, step) for step in range(200)])
        assert logged.points == 200
        assert logged.requests >= 8
        with c.metrics_batcher(f"{run_id}-b", flush_points=100) as batcher:
            for step in range(300):
                batcher.log("loss", step / 3, step)
        assert (batcher.logged, batcher.dropped) == (300, 0)
        assert batcher.requests >= 12
        assert c.history(run_id, "loss").values == [step / 3 for step in range(200)]
        assert c.history(f"{run_id}-b", "loss").steps == list(range(300))


# -- the batcher -----------------------------------------------------------------------------------------


def test_a_batcher_logs_a_training_loops_20000_points(metrics_server: Server, run_id: str) -> None:
    with Client(metrics_server.url) as c:
        start = time.monotonic()
        with c.metrics_batcher(run_id, flush_points=250) as batcher:
            assert isinstance(batcher, MetricsBatcher)
            for step in range(10_000):
                batcher.log("train/loss", 1 / (step + 1), step)
                if step % 2 == 0:
                    batcher.log_many({"lr": 1e-3, "val/acc": step / 1e4}, step)
            assert batcher.pending <= 100_000
        took = time.monotonic() - start
        assert (batcher.logged, batcher.dropped, batcher.pending) == (20_000, 0, 0)
        assert batcher.requests >= 4
        loss = c.history(run_id, "train/loss")
        assert loss.steps == list(range(10_000))
        assert loss.values == [1 / (step + 1) for step in range(10_000)]
        assert len(c.history(run_id, "lr")) == 5000
        assert c.history(run_id, "val/acc").steps == list(range(0, 10_000, 2))
        assert took < 60, took
        with pytest.raises(RuntimeError, match="closed"):
            batcher.log("train/loss", 0.0, 10_000)
        batcher.close()  # Again: nothing.


def test_a_batcher_flushes_when_its_interval_passed(metrics_server: Server, run_id: str) -> None:
    with Client(metrics_server.url) as c, c.metrics_batcher(run_id, flush_interval=0.2) as batcher:
        start = time.monotonic()
        for step in range(3):
            batcher.log("loss", step, step)
        while len(c.history(run_id, "loss")) < 3:
            assert time.monotonic() - start < 10, "not logged within 10 s"
            time.sleep(0.02)
        assert time.monotonic() - start >= 0.15, "not before the interval"
        assert (batcher.logged, batcher.requests, batcher.pending) == (3, 1, 0)
        batcher.log("loss", 3, 3)
        batcher.flush()  # Durable on return, well before the interval.
        assert c.history(run_id, "loss").steps == [0, 1, 2, 3]


def test_a_refusal_is_raised_by_the_next_call(metrics_server: Server, run_id: str) -> None:
    with Client(metrics_server.url) as c:
        batcher = c.metrics_batcher(run_id, flush_interval=0.05)
        batcher.log("loss", 1.0, 0)
        batcher.log("", 2.0, 0)  # Refused by the server: a key is 1 to 250 bytes.
        batcher.log("acc", 0.5, 0)
        with pytest.raises(BadRequest, match="metric key"):
            batcher.flush()
        assert (batcher.logged, batcher.dropped) == (2, 1), "the batch's other keys are logged"
        assert c.latest_metrics(run_id).keys() == {"loss", "acc"}
        batcher.flush()  # Raised once.

        batcher.log("x" * 251, 1.0, 1)
        deadline = time.monotonic() + 10
        while batcher.dropped < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(BadRequest):
            batcher.log("loss", 3.0, 2)  # Not logged: the call raised.
        batcher.log("loss", 4.0, 3)
        batcher.log("a\0b", 1.0, 4)
        with pytest.raises(BadRequest):
            batcher.close()
        assert c.history(run_id, "loss").values == [1.0, 4.0]
        assert isinstance(batcher.last_error, BadRequest)
        assert (batcher.logged, batcher.dropped) == (3, 3)


def test_batchers_on_threads_log_to_their_runs_at_once(metrics_server: Server, run_id: str) -> None:
    runs = [f"{run_id}-{i}" for i in range(4)]
    with Client(metrics_server.url) as c:

        def train(run: str) -> None:
            with c.metrics_batcher(run, flush_points=200, flush_interval=0.1) as batcher:
                for step in range(5000):
                    batcher.log("loss", len(run) + step, step)

        threads = [threading.Thread(target=train, args=(run,)) for run in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        for run in runs:
            h = c.history(run, "loss")
            assert h.steps == list(range(5000))
            assert h.values == [float(len(run) + step) for step in range(5000)]


class Unreachable(httpx.BaseTransport):
    """Refuses the connection of every request that logs metrics for ``seconds``, as a server restarting
    would (nothing reaches it); then sends them on."""

    def __init__(self, seconds: float) -> None:
        self.inner = httpx.HTTPTransport()
        self.until = time.monotonic() + seconds
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and time.monotonic() < self.until:
            self.refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_full_batcher_blocks_until_the_server_can_be_reached(metrics_server: Server, run_id: str) -> None:
    transport = Unreachable(1.0)
    with Client(metrics_server.url, retries=0, transport=transport) as c:
        most = 0
        start = time.monotonic()
        with c.metrics_batcher(run_id, flush_points=100, max_buffered=500) as batcher:
            for step in range(2000):
                batcher.log("loss", step, step)
                most = max(most, batcher.pending)
            blocked = time.monotonic() - start
        assert most <= 500
        assert blocked >= 0.8, f"log returned at once for {blocked} s with the server unreachable"
        assert transport.refused >= 2
        assert isinstance(batcher.last_error, TransportError)
        assert (batcher.logged, batcher.dropped) == (2000, 0)
        assert c.history(run_id, "loss").steps == list(range(2000)), "every point once"


def test_close_gives_up_after_its_timeout(metrics_server: Server, run_id: str) -> None:
    with Client(metrics_server.url, retries=0, transport=Unreachable(3600)) as c:
        batcher = c.metrics_batcher(run_id)
        for step in range(10):
            batcher.log("loss", step, step)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="gave up"):
            batcher.close(timeout=0.3)
        assert time.monotonic() - start < 5
        assert (batcher.logged, batcher.dropped, batcher.pending) == (0, 10, 0)
    with Client(metrics_server.url) as c:
        assert c.latest_metrics(run_id) == {}


class LosesTheFirstAnswer(httpx.BaseTransport):
    """Sends every request to the server; the answer to the first that logs metrics is lost on the way back,
    as when the connection breaks after the server applied it."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and not self.lost:
            self.lost += 1
            response.read()
            response.close()
            raise httpx.RemoteProtocolError("connection reset after the request", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_batch_whose_answer_was_lost_is_sent_again(metrics_server: Server, run_id: str) -> None:
    # The client does not send a batch of unknown outcome again: every point is kept, twice if sent twice.
    with Client(metrics_server.url, transport=LosesTheFirstAnswer()) as c:
        with pytest.raises(TransportError) as e:
            c.log_metrics(run_id, {"loss": 1.0})
        assert e.value.sent
        assert len(c.history(run_id, "loss")) == 1, "applied once, not sent again"
    # The batcher does (its points must not be lost): the batch is then logged twice.
    with Client(metrics_server.url, transport=LosesTheFirstAnswer()) as c:
        with c.metrics_batcher(f"{run_id}-b", flush_points=100) as batcher:
            for step in range(100):
                batcher.log("loss", step, step)
            batcher.flush()
        assert (batcher.logged, batcher.requests) == (100, 1)
        assert c.history(f"{run_id}-b", "loss").steps == sorted(list(range(100)) * 2)
