"""Parts that need no server: events, resume points, retry delays, documents, query strings."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cairn_client import Change, Index, RetryPolicy, decode_document, encode_document
from cairn_client._calls import filter_value, query_params
from cairn_client._sse import EventParser, Resume, change_of
from cairn_client.errors import BadRequest, parse_retry_after


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
