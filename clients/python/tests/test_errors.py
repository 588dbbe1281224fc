"""Every exception class, raised by the condition that should raise it."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from cairn_client import (
    ApiError,
    BadRequest,
    CairnError,
    ChangesTrimmed,
    Client,
    Conflict,
    Contended,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RetryPolicy,
    ServerError,
    TransportError,
    Unauthorized,
    Unavailable,
)
from cairn_client._calls import Call

from .conftest import READER
from .server import Server, on_postgres


def test_bad_request(client: Client, jobs: str) -> None:
    with pytest.raises(BadRequest) as e:
        client.declare_collection("bad name!")
    assert "collection name" in str(e.value)
    assert e.value.status == 400
    assert e.value.kind == "bad-request"
    with pytest.raises(BadRequest, match="orders by nowhere"):
        list(client.query(jobs, order_by="nowhere"))


def test_not_found(client: Client, jobs: str) -> None:
    with pytest.raises(NotFound) as e:
        client.get(jobs, "missing")
    assert (e.value.collection, e.value.id) == (jobs, "missing")
    with pytest.raises(NotFound) as e:
        client.get("no-such-collection", "x")
    assert e.value.id is None
    with pytest.raises(NotFound):
        client.query("no-such-collection").count()


def test_method_not_allowed(client: Client) -> None:
    with pytest.raises(MethodNotAllowed) as e:
        client._run(Call("DELETE", "/v1/collections", lambda r: None))
    assert e.value.status == 405


def test_precondition_failed(client: Client, jobs: str) -> None:
    client.create(jobs, "p", {"n": 1})
    with pytest.raises(PreconditionFailed) as e:
        client.create(jobs, "p", {"n": 1})
    assert e.value.current_version == 1
    with pytest.raises(PreconditionFailed) as e:
        client.put(jobs, "p", {"n": 2}, if_match=7)
    assert e.value.current_version == 1
    assert "version 1, not 7" in str(e.value)
    with pytest.raises(PreconditionFailed) as e:
        client.put(jobs, "absent", {"n": 2}, if_match="*")
    assert e.value.current_version is None


def test_conflict(client: Client, tmp_path: Path) -> None:
    """A backup into a directory that is not empty: 409 on the embedded store; the PostgreSQL backend has no
    backup route and answers 501 to the same request, before looking at the directory."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    if on_postgres():
        with pytest.raises(ServerError) as e:
            client.backup(str(tmp_path / "full"))
        assert e.value.status == 501
    else:
        with pytest.raises(Conflict):
            client.backup(str(tmp_path / "full"))


def test_server_error(client: Client, tmp_path: Path) -> None:
    """A backup below a plain file: 500 (the copy fails) on the embedded store, 501 on PostgreSQL."""
    (tmp_path / "plain-file").write_text("x")
    with pytest.raises(ServerError) as e:
        client.backup(str(tmp_path / "plain-file" / "below"))
    assert e.value.status == (501 if on_postgres() else 500)


def test_unauthorized_and_forbidden(auth_server: Server) -> None:
    with Client(auth_server.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.collections()
    with Client(auth_server.url, token="wrong") as wrong, pytest.raises(Unauthorized):
        wrong.collections()
    with Client(auth_server.url, token=READER) as reader:
        assert isinstance(reader.collections(), list)
        with pytest.raises(Forbidden):
            reader.declare_collection("x")


def test_payload_too_large(limited_server: Server) -> None:
    with Client(limited_server.url) as c:
        c.declare_collection("big")
        with pytest.raises(PayloadTooLarge) as e:
            c.put("big", "b", {"blob": "x" * 10_000})
        assert e.value.status == 413


def test_changes_trimmed(limited_server: Server) -> None:
    with Client(limited_server.url) as c:
        name = f"t{uuid.uuid4().hex[:8]}"
        c.declare_collection(name)
        c.put(name, "a", {"n": 1})
        c.put(name, "a", {"n": 2})
        deadline = time.monotonic() + 20
        while True:
            try:
                c.changes_page(0)
            except ChangesTrimmed as e:
                assert e.trimmed_through is not None
                assert e.trimmed_through > 0
                assert e.status == 410
                break
            assert time.monotonic() < deadline, "the feed was never trimmed"
            time.sleep(0.2)


def hold_the_only_slot(url: str, seconds: float) -> threading.Thread:
    """A long-poll that takes the server's single request slot (max_concurrency = 1) for ``seconds``;
    returns once the server sheds other requests."""

    def poll() -> None:
        with Client(url) as c:
            since = c.health().last_sequence + 10**9  # Nothing will ever come: waits the whole time.
            c.changes_page(since, wait=seconds)

    t = threading.Thread(target=poll)
    t.start()
    with Client(url, retries=0) as probe:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                probe.health()  # never shed: does not count
                probe.collections()
            except Unavailable:
                return t
            time.sleep(0.02)
    raise AssertionError("the server never shed a request")


def test_unavailable_when_shed_then_retried_after_retry_after(limited_server: Server) -> None:
    with Client(limited_server.url, retries=0) as c:
        holder = hold_the_only_slot(limited_server.url, 3)
        with pytest.raises(Unavailable) as e:
            c.collections()
        assert e.value.retry_after == 1
        assert not e.value.applied_unknown
        assert "concurrency limit" in str(e.value)
        holder.join()
    with Client(limited_server.url, retries=6) as c:
        holder = hold_the_only_slot(limited_server.url, 1.5)
        t0 = time.monotonic()
        assert isinstance(c.collections(), list)  # Shed, waits Retry-After: 1, then again.
        assert time.monotonic() - t0 >= 0.9
        holder.join()


def test_transport_error() -> None:
    with Client("http://127.0.0.1:9", retries=RetryPolicy(retries=1, backoff=0.01)) as c:
        with pytest.raises(TransportError) as e:
            c.health()
        assert e.value.sent is False


def mock_client(statuses: list[tuple[int, str]], seen: list[str]) -> Client:
    """A client whose server answers the given (status, problem type) in turn."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        status, kind = statuses[min(len(seen) - 1, len(statuses) - 1)]
        if status == 200:
            body = {
                "collection": "c",
                "id": "x",
                "version": 1,
                "seq": 1,
                "created_at_ms": 0,
                "updated_at_ms": 0,
                "document": {},
            }
            return httpx.Response(200, json=body)
        detail = {
            "contended": "every candidate was taken",
            "unavailable": "the request took longer than 30000 ms; a write may or may not have been applied",
        }[kind]
        problem = {"type": f"/problems/{kind}", "status": status, "detail": detail}
        return httpx.Response(status, json=problem, headers={"Retry-After": "0"})

    policy = RetryPolicy(retries=3, backoff=0.0)
    return Client("http://cairn.test", retries=policy, transport=httpx.MockTransport(handler))


def test_contended_claims_are_retried_and_then_raised() -> None:
    # A claim that lost every race took nothing, so it is sent again: here until retries run out.
    seen: list[str] = []
    with mock_client([(503, "contended")], seen) as c, pytest.raises(Contended) as e:
        c.claim("c", {"status": "RUNNING"})
    assert len(seen) == 4
    assert e.value.retry_after == 0
    assert isinstance(e.value, Unavailable)
    seen.clear()
    with mock_client([(503, "contended"), (200, "")], seen) as c:
        assert c.claim("c", {"status": "RUNNING"}) is not None
    assert len(seen) == 2


def test_unknown_outcomes_are_retried_only_when_repeatable() -> None:
    # A timeout: a write may have been applied. A claim is not sent again ...
    seen: list[str] = []
    with mock_client([(503, "unavailable"), (200, "")], seen) as c, pytest.raises(Unavailable) as e:
        c.claim("c", {"status": "RUNNING"})
    assert e.value.applied_unknown
    assert seen == ["POST"]
    # ... nor a transaction without preconditions ...
    seen.clear()
    with mock_client([(503, "unavailable"), (200, "")], seen) as c, pytest.raises(Unavailable):
        c.commit([{"op": "put", "collection": "c", "id": "x", "document": {}}])
    assert seen == ["POST"]
    # ... but a put with if_match and a read are.
    seen.clear()
    with mock_client([(503, "unavailable"), (200, "")], seen) as c:
        c.put("c", "x", {}, if_match=1)
        c.get("c", "x")
    assert seen == ["PUT", "PUT", "GET"]


def test_hierarchy() -> None:
    for cls in [BadRequest, Unauthorized, Forbidden, NotFound, Conflict, ChangesTrimmed, PreconditionFailed]:
        assert issubclass(cls, ApiError)
    assert issubclass(Contended, Unavailable)
    assert issubclass(ApiError, CairnError)
    assert issubclass(TransportError, CairnError)
