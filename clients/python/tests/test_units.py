"""Parts that need no server: events, resume points, retry delays, documents, query strings, the job
queue's requests and refusals, run metrics' requests and values."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from cairn_client import (
    Change,
    Client,
    Conflict,
    Contended,
    Index,
    InvalidTransition,
    MetricBucket,
    MetricHistory,
    MetricPoint,
    NewJob,
    NotFinished,
    QueueJob,
    RetryPolicy,
    StaleToken,
    _calls,
    decode_document,
    encode_document,
)
from cairn_client._calls import filter_value, query_params
from cairn_client._sse import EventParser, Resume, change_of
from cairn_client.errors import (
    BadRequest,
    PayloadTooLarge,
    error_from_problem,
    parse_retry_after,
)
from cairn_client.models import JOB_STATES, decode_value, encode_value
from cairn_client.run_metrics import split


def change(seq: int, id: str, version: int = 1) -> Change:
    return Change(seq=seq, collection="c", id=id, op="insert", version=version, at_ms=0, document={})


def test_event_parser() -> None:
    p = EventParser()
    lines = [": keep-alive", "", "id: 7", "event: change", 'data: {"a":', "data: 1}", "", "retry: 5", ""]
    events = [e for e in (p.feed(line) for line in lines) if e is not None]
    assert len(events) == 1
    assert (events[0].id, events[0].event, events[0].data) == ("7", "change", '{"a":\n1}')


def test_error_event_raises_its_problem() -> None:
    p = EventParser()
    for line in ["event: error", 'data: {"type":"/problems/bad-request","status":400,"detail":"no"}']:
        p.feed(line)
    event = p.feed("")
    assert event is not None
    with pytest.raises(BadRequest, match="no"):
        change_of(event)


def test_resume_never_loses_the_rest_of_a_commit_cut_off() -> None:
    r = Resume(since=10)
    assert r.resume_after() == 10
    assert r.accept(change(11, "a"))
    assert r.accept(change(12, "b"))
    assert r.accept(change(12, "c"))
    # The connection drops here: commit 12 may have had more changes; resume after 11.
    assert r.resume_after() == 11
    assert r.since == 11
    assert not r.accept(change(12, "b"))  # sent again by the server: dropped
    assert not r.accept(change(12, "c"))
    assert r.accept(change(12, "d"))  # the rest of the commit
    assert r.accept(change(13, "e"))
    assert r.since == 12


def test_retry_delays() -> None:
    p = RetryPolicy(retries=2, backoff=0.1, max_backoff=0.15, max_retry_after=5)
    assert p.delay(0, retry_after=1.0) == 1.0
    assert p.delay(0, retry_after=60.0) is None
    first = p.delay(0)
    assert first is not None
    assert 0.05 <= first <= 0.1
    second = p.delay(1)
    assert second is not None
    assert second <= 0.15
    assert p.delay(2) is None
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


@dataclasses.dataclass
class Job:
    name: str
    priority: int = 0


def test_documents() -> None:
    assert encode_document(Job("a", 1)) == {"name": "a", "priority": 1}
    assert encode_document({"x": 1}) == {"x": 1}
    with pytest.raises(TypeError):
        encode_document(3)
    assert decode_document({"name": "a", "priority": 2, "extra": True}, Job) == Job("a", 2)

    class Pydanticish:
        def __init__(self, **kw: Any) -> None:
            self.kw = kw

        @classmethod
        def model_validate(cls, d: dict[str, Any]) -> Pydanticish:
            return cls(**d)

        def model_dump(self, mode: str = "python") -> dict[str, Any]:
            return dict(self.kw)

    assert decode_document({"a": 1}, Pydanticish).kw == {"a": 1}
    assert encode_document(Pydanticish(a=2)) == {"a": 2}


def test_query_strings() -> None:
    assert filter_value("5") == '"5"'
    assert filter_value(5) == "5"
    assert filter_value(True) == "true"
    assert filter_value(None) == "null"
    with pytest.raises(TypeError):
        filter_value([1])
    params = query_params({"status": "PENDING", "n": 2}, "priority", "desc", 10, "cur")
    assert params == [
        ("status", '"PENDING"'),
        ("n", "2"),
        ("order_by", "priority"),
        ("order", "desc"),
        ("limit", "10"),
        ("cursor", "cur"),
    ]
    with pytest.raises(ValueError, match="order"):
        query_params(None, None, "sideways", None, None)
    assert Index("a", ["b"]).to_json() == {"name": "a", "fields": ["b"]}


def test_queue_requests() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    job = NewJob("mail", "send", Job("a"), priority=3, run_at=at, max_attempts=2, unique_key="k")
    assert job.to_json() == {
        "queue": "mail",
        "kind": "send",
        "payload": {"name": "a", "priority": 0},
        "priority": 3,
        "run_at_ms": 1767323045678,
        "max_attempts": 2,
        "unique": {"key": "k"},
    }
    unique = NewJob("q", "k", [1], unique_key="k", unique_period=1.5, unique_states=["completed"])
    assert unique.to_json()["unique"] == {"key": "k", "period_ms": 1500, "states": ["completed"]}
    assert NewJob("q", "k", 0, run_at=5).to_json() == {
        "queue": "q",
        "kind": "k",
        "payload": 0,
        "run_at_ms": 5,
    }
    with pytest.raises(ValueError, match="no job state"):
        NewJob("q", "k", unique_key="k", unique_states=["done"]).to_json()  # type: ignore[list-item]
    # What is sent again after an unknown outcome: calls with a fencing token, and an enqueue whose unique
    # key counts every state (with the default states, the first one's job might be completed in between).
    every = NewJob("q", "k", unique_key="k", unique_states=JOB_STATES)
    assert _calls.enqueue(every).repeatable
    assert not _calls.enqueue(NewJob("q", "k", unique_key="k")).repeatable
    assert not _calls.enqueue(
        NewJob("q", "k", unique_key="k", unique_states=JOB_STATES, unique_period=60)
    ).repeatable
    assert not _calls.enqueue(NewJob("q", "k")).repeatable
    assert _calls.enqueue_many([every, every]).repeatable
    assert not _calls.enqueue_many([every, {"queue": "q", "kind": "k"}]).repeatable
    claim = _calls.claim_jobs("q", "w", 1.5, 2, 0.25)
    assert claim.body == {"queues": ["q"], "worker": "w", "lease_ms": 1500, "limit": 2, "wait_ms": 250}
    assert not claim.repeatable
    complete = _calls.complete((7, 3))
    assert (complete.path, complete.body, complete.repeatable) == (
        "/v1/queue/jobs/7/complete",
        {"token": 3},
        True,
    )
    assert _calls.snooze((7, 3), 0.5).body == {"token": 3, "delay_ms": 500}
    assert not _calls.retry_job(7).repeatable
    with pytest.raises(ValueError, match="lease"):
        _calls.heartbeat((7, 3), 0)
    with pytest.raises(ValueError, match="job id"):
        _calls.get_job(-1)
    page = _calls.jobs_page("a/b", "discarded", 10, "cur")
    assert page.path == "/v1/queue/queues/a%2Fb/jobs"
    assert page.params == [("state", "discarded"), ("limit", "10"), ("cursor", "cur")]


def test_queue_refusals_map_to_their_classes() -> None:
    stale = error_from_problem(409, {"type": "/problems/stale-token", "job": 7, "token": 1, "current": 2})
    assert isinstance(stale, StaleToken)
    assert isinstance(stale, Conflict)
    assert (stale.job_id, stale.presented, stale.current) == (7, 1, 2)
    moved = error_from_problem(409, {"type": "/problems/invalid-transition", "from": "completed", "to": "x"})
    assert isinstance(moved, InvalidTransition)
    assert (moved.from_state, moved.to_state, moved.job_id) == ("completed", "x", None)
    running = error_from_problem(409, {"type": "/problems/not-finished", "state": "running"})
    assert isinstance(running, NotFinished)
    assert running.state == "running"
    assert type(error_from_problem(409, {"type": "/problems/conflict"})) is Conflict
    j = {
        "id": 1,
        "queue": "q",
        "kind": "k",
        "priority": 0,
        "state": "discarded",
        "attempt": 1,
        "max_attempts": 1,
        "scheduled_at_ms": 0,
        "token": 1,
        "inserted_at_ms": 0,
        "errors": [{"attempt": 1, "at_ms": 5, "error": "boom"}],
        "finished_at_ms": 5,
    }
    job = QueueJob.from_json(j)
    assert job.payload is None
    assert job.finished
    assert job.errors[0].error == "boom"
    assert job.finished_at == datetime.fromtimestamp(0.005, tz=timezone.utc)
    assert job.lease_until is None


def test_metric_values_both_ways() -> None:
    for v in [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-300, 5e-324, -2.5e300, 0.1 + 0.2]:
        sent = json.loads(json.dumps(encode_value(v), allow_nan=False))
        back = decode_value(sent)
        assert (math.isnan(back) and math.isnan(v)) or (
            back == v and math.copysign(1, back) == math.copysign(1, v)
        )
    assert [encode_value(v) for v in (math.nan, math.inf, -math.inf)] == ["NaN", "Infinity", "-Infinity"]
    assert decode_value(3) == 3.0
    with pytest.raises(ValueError, match="not a metric value"):
        decode_value("nan")
    history = MetricHistory.from_json(
        {"run": "r", "key": "k", "steps": [1, 2], "timestamps_ms": [5, 6], "values": ["NaN", -0.0]}
    )
    assert list(history)[1] == MetricPoint("k", -0.0, 2, 6)
    assert history.next_cursor is None
    bucket = MetricBucket.from_json(
        {
            "start_step": 0,
            "end_step": 9,
            "count": 2,
            "nan_count": 2,
            "min": "NaN",
            "max": "NaN",
            "mean": "NaN",
            "last_step": 3,
            "last": "-Infinity",
        }
    )
    assert math.isnan(bucket.mean)
    assert bucket.last == -math.inf


def test_metrics_requests() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    points = _calls.as_points(
        [
            MetricPoint("a", 1, 2),
            ("b", 0.5, 3),
            ("c", True, 4, at),
            {"key": "d", "value": -math.inf, "step": -(2**63), "timestamp_ms": 9},
        ],
        None,
        1000,
    )
    assert points == [
        MetricPoint("a", 1.0, 2, 1000),
        MetricPoint("b", 0.5, 3, 1000),
        MetricPoint("c", 1.0, 4, 1767323045678),
        MetricPoint("d", -math.inf, -(2**63), 9),
    ]
    assert _calls.as_points({"x": 2}, None, 5) == [MetricPoint("x", 2.0, 0, 5)]
    call = _calls.log_metrics("run/1", points[2:])
    assert (call.method, call.path, call.repeatable) == ("POST", "/v1/runs/run%2F1/metrics", False)
    assert call.body == {
        "points": [
            {"key": "c", "step": 4, "value": 1.0, "timestamp_ms": 1767323045678},
            {"key": "d", "step": -(2**63), "value": "-Infinity", "timestamp_ms": 9},
        ]
    }
    with pytest.raises(ValueError, match="timestamp_ms"):
        _calls.as_points([{"key": "a", "value": 1, "step": 1, "time": 5}], None, None)
    with pytest.raises(TypeError, match="a point is"):
        _calls.as_points([["a", 1, 1]], None, None)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="64 bits"):
        _calls.as_points([("a", 1, 2**63)], None, None)
    with pytest.raises(ValueError, match="fit a float"):
        _calls.as_points([("a", 10**400, 1)], None, None)

    history = _calls.history_page("r", "val/acc", 1, 9, at, 7, 100, "cur")
    assert history.path == "/v1/runs/r/metrics/val%2Facc/history"
    assert history.params == [
        ("min_step", "1"),
        ("max_step", "9"),
        ("min_time_ms", "1767323045678"),
        ("max_time_ms", "7"),
        ("limit", "100"),
        ("cursor", "cur"),
    ]
    # Relative segments would be resolved away by the URL: escaped.
    assert _calls.downsample("..", ".", 5, None, 3).path == "/v1/runs/%2E%2E/metrics/%2E/downsample"
    assert _calls.compare("k", ["a", "b"], 10, 0, None).params == [
        ("run", "a"),
        ("run", "b"),
        ("max_points", "10"),
        ("min_step", "0"),
    ]
    assert _calls.latest_of("a b", ["r"]).path == "/v1/metrics/a%20b/latest"
    assert _calls.delete_metrics("r").repeatable
    assert [len(c) for c in _calls.chunks(points, 3)] == [3, 1]
    with pytest.raises(ValueError, match="chunk_size"):
        _calls.chunks(points, 100_001)
    # A batch that lost every race to its series wrote nothing: it may be sent again.
    contended = error_from_problem(
        503,
        {
            "type": "/problems/contended",
            "detail": "gave up after 1000 attempts: concurrent writes to the same series",
        },
    )
    assert isinstance(contended, Contended)
    assert not contended.applied_unknown


def test_what_a_refused_batch_is_sent_as() -> None:
    points = [MetricPoint(k, 1.0, i) for i, k in enumerate("abab")]
    too_large = error_from_problem(413, {"type": "/problems/payload-too-large"})
    assert isinstance(too_large, PayloadTooLarge)
    assert split(points, too_large) == [points[:2], points[2:]]
    assert split(points[:1], too_large) is None
    bad = error_from_problem(400, {"type": "/problems/bad-request"})
    assert split(points, bad) == [[points[0], points[2]], [points[1], points[3]]]
    assert split(points[::2], bad) is None, "one key: refused whole"
    assert split(points, error_from_problem(404, {})) is None


def test_a_body_over_the_limit_is_sent_in_halves_until_it_fits() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sizes.append(len(request.content))
        if len(request.content) > 1000:
            return httpx.Response(413, json={"type": "/problems/payload-too-large", "status": 413})
        n = len(json.loads(request.content)["points"])
        return httpx.Response(200, json={"points": n, "series": 1, "sequence": len(sizes)})

    with Client("http://cairn.test", transport=httpx.MockTransport(handler)) as c:
        logged = c.log_metrics("r", [("loss", 0.5, step, 0) for step in range(40)])
        assert (logged.points, logged.series) == (40, 1)
        assert logged.requests == len([s for s in sizes if s <= 1000])
        assert logged.sequence == len(sizes)
        assert sizes[0] > 1000
        with pytest.raises(PayloadTooLarge):
            c.log_metrics("r", {"x" * 2000: 1.0})
