"""Parts that need no server: events, resume points, retry delays, documents, query strings, the job
queue's requests and refusals."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

import pytest

from cairn_client import (
    Change,
    Conflict,
    Index,
    InvalidTransition,
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
from cairn_client.errors import BadRequest, error_from_problem, parse_retry_after
from cairn_client.models import JOB_STATES


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
