"""Every method of the synchronous client against the real server."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from cairn_client import (
    Change,
    Client,
    CollectionInfo,
    Index,
    NotFound,
    PreconditionFailed,
    Record,
    ServerError,
)

from .server import Server, on_postgres


@dataclasses.dataclass
class Job:
    name: str
    status: str
    priority: int
    owner: str = "alice"


def test_health_stats_metrics_openapi(client: Client) -> None:
    h = client.health()
    assert h.status == "ok"
    assert h.last_sequence >= 0
    assert isinstance(client.stats(), dict)
    assert "cairn_http_requests_total" in client.metrics()
    doc = client.openapi()
    assert doc["openapi"].startswith("3.")
    assert "/v1/changes" in doc["paths"]


def test_collections_declare_and_list(client: Client, jobs: str) -> None:
    again = client.declare_collection(
        jobs, [Index("status_priority", ["status", "priority"]), {"name": "owner", "fields": ["owner"]}]
    )
    assert not again.created
    assert [i.name for i in again.indexes] == ["status_priority", "owner"]
    client.put(jobs, "j1", {"status": "PENDING", "priority": 1})
    info = next(c for c in client.collections() if c.name == jobs)
    assert isinstance(info, CollectionInfo)
    assert info.count == 1
    assert info.indexes[0] == Index("status_priority", ["status", "priority"])
    fresh = client.declare_collection(f"{jobs}-x")
    assert fresh.created


def test_put_get_create_delete(client: Client, jobs: str) -> None:
    r = client.create(jobs, "job/42 ü", {"name": "train", "status": "PENDING", "priority": 5})
    assert isinstance(r, Record)
    assert (r.collection, r.id, r.version) == (jobs, "job/42 ü", 1)
    assert r.seq > 0
    assert r.created_at == r.updated_at
    got = client.get(jobs, "job/42 ü")
    assert got == r
    r2 = client.put(jobs, "job/42 ü", {**r.document, "priority": 6}, if_match=r.version)
    assert r2.version == 2
    assert r2.document["priority"] == 6
    r3 = client.put(jobs, "job/42 ü", {**r.document, "priority": 7}, if_match="*")
    assert r3.version == 3
    r4 = client.put(jobs, "job/42 ü", {**r.document, "priority": 8})  # upsert
    assert r4.version == 4
    with pytest.raises(PreconditionFailed) as e:
        client.delete(jobs, "job/42 ü", if_match=1)
    assert e.value.current_version == 4
    client.delete(jobs, "job/42 ü", if_match=4)
    assert client.find(jobs, "job/42 ü") is None
    with pytest.raises(NotFound):
        client.get(jobs, "job/42 ü")
    client.put(jobs, "k", {"a": 1})
    client.delete(jobs, "k")
    with pytest.raises(NotFound):
        client.delete(jobs, "k")


def test_models_in_and_out(client: Client, jobs: str) -> None:
    r = client.put(jobs, "m1", Job("train", "PENDING", 3))
    assert r.document == {"name": "train", "status": "PENDING", "priority": 3, "owner": "alice"}
    job = client.get(jobs, "m1").decode(Job)
    assert job == Job("train", "PENDING", 3)


def test_query_iterates_lazily_page_and_count(client: Client, jobs: str) -> None:
    with client.transaction() as tx:
        for i in range(120):
            status = "PENDING" if i % 2 == 0 else "DONE"
            tx.put(jobs, f"j{i:03}", {"status": status, "priority": i, "owner": "bob" if i < 10 else "alice"})
    q = client.query(jobs, {"status": "PENDING"}, order_by="priority", order="desc", page_size=7)
    prios = [r.document["priority"] for r in q]
    assert prios == list(range(118, -1, -2))
    assert q.count() == 60
    assert client.query(jobs).count() == 120
    limited = client.query(jobs, {"status": "PENDING"}, order_by="priority", limit=10, page_size=4)
    assert [r.document["priority"] for r in limited] == list(range(0, 20, 2))
    page = client.query(jobs, {"status": "DONE"}, order_by="priority", limit=5).page()
    assert [r.document["priority"] for r in page.records] == [1, 3, 5, 7, 9]
    assert page.next_cursor is not None
    nxt = client.query(jobs, {"status": "DONE"}, order_by="priority", limit=5).page(page.next_cursor)
    assert nxt.records[0].document["priority"] == 11
    first = client.query(jobs, {"owner": "bob"}, order_by="owner").first()
    assert first is not None
    assert first.document["owner"] == "bob"
    assert client.query(jobs, {"status": "NONE"}).first() is None
    # Filters keep their JSON types: the string "5" is not the number 5.
    client.put(jobs, "s5", {"status": "5", "priority": 5})
    assert [r.id for r in client.query(jobs, {"status": "5"})] == ["s5"]
    assert list(client.query(jobs, {"status": 5})) == []
    assert client.query(jobs, {"status": "PENDING", "priority": 4}).count() == 1
    with pytest.raises(ValueError, match="reserved"):
        client.query(jobs, {"limit": 3})


def test_claim(client: Client, jobs: str) -> None:
    for i in range(3):
        client.put(jobs, f"c{i}", {"status": "PENDING", "priority": i})
    got = client.claim(
        jobs,
        {"status": "RUNNING", "node.name": "gpu-3"},
        where={"status": "PENDING"},
        order_by="priority",
        order="desc",
    )
    assert got is not None
    assert got.id == "c2"
    assert got.document["node"] == {"name": "gpu-3"}
    got = client.claim(
        jobs,
        {"status": "RUNNING"},
        queries=[{"where": {"status": "URGENT"}}, {"where": {"status": "PENDING"}, "order_by": "priority"}],
    )
    assert got is not None
    assert got.id == "c0"
    assert client.claim(jobs, {"status": "RUNNING"}, where={"status": "URGENT"}) is None


def test_claims_by_concurrent_workers_never_share(client: Client, jobs: str) -> None:
    with client.transaction() as tx:
        for i in range(40):
            tx.put(jobs, f"w{i:02}", {"status": "PENDING", "priority": i})
    taken: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with Client(client.url) as c:
            while True:
                r = c.claim(
                    jobs, {"status": "RUNNING", "worker": n}, where={"status": "PENDING"}, order_by="priority"
                )
                if r is None:
                    return
                with lock:
                    taken.append(r.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [f"w{i:02}" for i in range(40)]


def test_transactions_builder_and_context_manager(client: Client, jobs: str) -> None:
    a = client.put(jobs, "a", {"n": 1})
    tx = client.transaction()
    tx.put(jobs, "a", {"n": 2}, if_match=a.version).create(jobs, "b", {"n": 1}).check(jobs, "zz", absent=True)
    assert len(tx) == 3
    result = tx.commit()
    assert result.seq > a.seq
    assert [r.version if r else None for r in result.results] == [2, 1, None]
    with client.transaction() as t2:
        t2.delete(jobs, "b", if_match=1)
        t2.check(jobs, "a", if_match=2)
    assert t2.result is not None
    assert t2.result.results[0] is None
    assert t2.result.results[1] is not None
    # All or nothing: the failed check leaves "c" uncreated.
    with pytest.raises(PreconditionFailed) as e, client.transaction() as t3:
        t3.create(jobs, "c", {"n": 1})
        t3.check(jobs, "a", if_match=1)
    assert (e.value.collection, e.value.id, e.value.current_version) == (jobs, "a", 2)
    assert client.find(jobs, "c") is None
    # An exception inside the block sends nothing.
    with pytest.raises(RuntimeError), client.transaction() as t4:
        t4.create(jobs, "d", {"n": 1})
        raise RuntimeError("abandon")
    assert client.find(jobs, "d") is None
    raw = client.commit([{"op": "put", "collection": jobs, "id": "e", "document": {"n": 5}}])
    assert raw.results[0] is not None
    assert raw.results[0].document == {"n": 5}


def test_change_feed_pages_and_iterator(client: Client, jobs: str) -> None:
    start = client.health().last_sequence
    client.put(jobs, "f1", {"n": 1})
    with client.transaction() as tx:
        tx.put(jobs, "f2", {"n": 2}).put(jobs, "f3", {"n": 3})
    client.delete(jobs, "f1")
    page = client.changes_page(start, collection=jobs)
    assert [(c.id, c.op) for c in page.changes] == [
        ("f1", "insert"),
        ("f2", "insert"),
        ("f3", "insert"),
        ("f1", "delete"),
    ]
    assert page.changes[1].seq == page.changes[2].seq  # one commit
    assert page.changes[3].document is None
    feed = client.changes(start, collection=jobs, page_size=1)
    seen: list[Change] = list(feed)
    assert [c.id for c in seen] == ["f1", "f2", "f3", "f1"]
    assert feed.since == page.next_since
    # Long-poll: a change made while the iterator waits is returned.
    follow = client.changes(feed.since, collection=jobs, follow=True, wait=5)
    timer = threading.Timer(0.3, lambda: client.put(jobs, "f4", {"n": 4}))
    timer.start()
    c = next(follow)
    timer.join()
    assert (c.id, c.op, c.version) == ("f4", "insert", 1)
    assert follow.since == c.seq


def test_stream_live(client: Client, jobs: str) -> None:
    start = client.health().last_sequence
    client.put(jobs, "s1", {"n": 1})
    got: list[Change] = []
    with client.stream(start, collection=jobs) as stream:
        for change in stream:
            got.append(change)
            if len(got) == 1:
                with client.transaction() as tx:
                    tx.put(jobs, "s2", {"n": 2}).put(jobs, "s3", {"n": 3})
            if len(got) == 3:
                break
        assert stream.since == got[0].seq  # the last commit may not be complete as far as it knows
    assert [c.id for c in got] == ["s1", "s2", "s3"]


def test_admin_backup_and_check(client: Client, tmp_path: Path) -> None:
    if on_postgres():
        with pytest.raises(ServerError) as e:
            client.backup(str(tmp_path / "copy"), check=True)
        assert (e.value.status, "pg_dump" in str(e.value)) == (501, True)
        assert not (tmp_path / "copy").exists()
    else:
        out = client.backup(str(tmp_path / "copy"), check=True)
        assert out["dir"].endswith("copy")
        assert out["check"]["healthy"] is True
    assert client.check()["healthy"] is True


def test_ids_are_percent_encoded(client: Client, jobs: str) -> None:
    for weird in ["a/b", "a?b=c", "100%", "sp ace", "#hash", "ünï"]:
        client.put(jobs, weird, {"id": weird})
        assert client.get(jobs, weird).document == {"id": weird}


def test_restart_keeps_data(binary: str, data_dir: Path, backend: str | None) -> None:
    s = Server(binary, data_dir, backend=backend).start()
    try:
        with Client(s.url) as c:
            c.declare_collection("jobs")
            c.put("jobs", "j", {"n": 1})
            s.restart()
            assert c.get("jobs", "j").document == {"n": 1}
    finally:
        s.stop()
