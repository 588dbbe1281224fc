"""Every method of the asynchronous client against the real server."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import anyio
import pytest

from cairn_client import (
    AsyncClient,
    AsyncMetricsBatcher,
    BadRequest,
    Change,
    Contended,
    Index,
    InvalidTransition,
    LatestMetric,
    NewJob,
    NotFound,
    PreconditionFailed,
    QueueJob,
    ServerError,
    StaleToken,
    Unauthorized,
)

from .conftest import VISION
from .server import Server, on_postgres

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def new_collection(c: AsyncClient) -> str:
    name = f"ajobs-{uuid.uuid4().hex[:12]}"
    declared = await c.declare_collection(name, [Index("status_priority", ["status", "priority"])])
    assert declared.created
    return name


async def test_server_routes(server: Server, tmp_path: Path) -> None:
    async with AsyncClient(server.url) as c:
        assert (await c.health()).status == "ok"
        assert isinstance(await c.stats(), dict)
        assert "cairn_http_requests_total" in await c.metrics()
        assert "/healthz" in (await c.openapi())["paths"]
        name = await new_collection(c)
        again = await c.declare_collection(name, [("status_priority", ["status", "priority"])])
        assert not again.created
        assert any(info.name == name for info in await c.collections())
        if on_postgres():
            with pytest.raises(ServerError) as e:
                await c.backup(str(tmp_path / "b"))
            assert e.value.status == 501
        else:
            assert (await c.backup(str(tmp_path / "b")))["last_sequence"] > 0
        assert (await c.check())["healthy"] is True


async def test_records(server: Server) -> None:
    async with AsyncClient(server.url) as c:
        name = await new_collection(c)
        r = await c.create(name, "a", {"status": "PENDING", "priority": 1})
        assert r.version == 1
        assert (await c.get(name, "a")) == r
        r2 = await c.put(name, "a", {"status": "PENDING", "priority": 2}, if_match=1)
        assert r2.version == 2
        with pytest.raises(PreconditionFailed) as e:
            await c.put(name, "a", {}, if_match=1)
        assert e.value.current_version == 2
        await c.delete(name, "a", if_match=2)
        assert await c.find(name, "a") is None
        with pytest.raises(NotFound):
            await c.get(name, "a")


async def test_query_claim_transaction(server: Server) -> None:
    async with AsyncClient(server.url) as c:
        name = await new_collection(c)
        async with c.transaction() as tx:
            for i in range(30):
                tx.put(name, f"j{i:02}", {"status": "PENDING", "priority": i})
        assert tx.result is not None
        assert len(tx.result.results) == 30
        q = c.query(name, {"status": "PENDING"}, order_by="priority", order="desc", page_size=4)
        assert [r.document["priority"] async for r in q] == list(range(29, -1, -1))
        assert await q.count() == 30
        assert await c.query(name).count() == 30
        page = await c.query(name, {"status": "PENDING"}, order_by="priority", limit=3).page()
        assert [r.id for r in page.records] == ["j00", "j01", "j02"]
        first = await c.query(name, {"status": "PENDING"}, order_by="priority", order="desc").first()
        assert first is not None
        assert first.id == "j29"
        claimed = await c.claim(
            name, {"status": "RUNNING"}, where={"status": "PENDING"}, order_by="priority", order="desc"
        )
        assert claimed is not None
        assert claimed.id == "j29"
        assert await c.claim(name, {"status": "RUNNING"}, where={"status": "NONE"}) is None
        tx2 = c.transaction().check(name, "j29", if_match=2).delete(name, "j00")
        result = await tx2.commit()
        assert result.results == [result.results[0], None]
        result = await c.commit([{"op": "check", "collection": name, "id": "zz", "if_none_match": True}])
        assert result.results == [None]


async def test_claims_race_without_doubles(server: Server) -> None:
    async with AsyncClient(server.url) as c:
        name = await new_collection(c)
        async with c.transaction() as tx:
            for i in range(24):
                tx.put(name, f"w{i:02}", {"status": "PENDING", "priority": i})
        taken: list[str] = []

        async def worker() -> None:
            while True:
                try:
                    r = await c.claim(
                        name, {"status": "RUNNING"}, where={"status": "PENDING"}, order_by="priority"
                    )
                except Contended:
                    continue
                if r is None:
                    return
                taken.append(r.id)

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(worker)
        assert sorted(taken) == [f"w{i:02}" for i in range(24)]


async def test_change_feed_and_stream(server: Server) -> None:
    async with AsyncClient(server.url) as c:
        name = await new_collection(c)
        start = (await c.health()).last_sequence
        await c.put(name, "a", {"n": 1})
        page = await c.changes_page(start, collection=name)
        assert [ch.id for ch in page.changes] == ["a"]
        feed = c.changes(start, collection=name)
        assert [ch.id async for ch in feed] == ["a"]
        assert feed.since == page.next_since
        follow = c.changes(feed.since, collection=name, follow=True, wait=5)

        async def later() -> None:
            await anyio.sleep(0.3)
            await c.put(name, "b", {"n": 2})

        async with anyio.create_task_group() as tg:
            tg.start_soon(later)
            ch = await follow.__anext__()
        assert ch.id == "b"
        got: list[Change] = []
        async with c.stream(start, collection=name) as stream:
            async for change in stream:
                got.append(change)
                if len(got) == 2:
                    await c.put(name, "c", {"n": 3})
                if len(got) == 3:
                    break
        assert [g.id for g in got] == ["a", "b", "c"]


async def test_stream_resumes_after_restart(binary: str, data_dir: Path, backend: str | None) -> None:
    server = Server(binary, data_dir, backend=backend).start()
    try:
        async with AsyncClient(server.url) as c:
            await c.declare_collection("events")
            await c.put("events", "one", {})
            got: list[str] = []
            async with c.stream(0, collection="events") as stream:
                async for change in stream:
                    got.append(change.id)
                    if len(got) == 1:
                        await anyio.to_thread.run_sync(server.restart)
                        await c.put("events", "two", {})
                    if len(got) == 2:
                        break
                assert stream.connections == 2
            assert got == ["one", "two"]
    finally:
        server.stop()


async def test_queue(queue_server: Server, queue: str) -> None:
    async with AsyncClient(queue_server.url) as c:
        first = await c.enqueue(queue, "k", {"n": 0}, priority=1, unique_key="first")
        assert not first.duplicate
        assert (await c.enqueue(queue, "k", unique_key="first")).duplicate
        batch = await c.enqueue_many([NewJob(queue, "k", {"n": n}) for n in (1, 2, 3)])
        ids = [e.job.id for e in batch]
        assert [j.id async for j in c.list_jobs(queue, page_size=2)] == [*ids, first.job.id]
        assert [j.id for j in (await c.list_jobs(queue, limit=2).page()).jobs] == ids[:2]
        claimed = await c.claim_jobs(queue, "aw", lease=10, limit=2)
        assert [j.id for j in claimed] == ids[:2]
        beat = await c.heartbeat(claimed[0], 60)
        assert beat.lease_until_ms is not None
        assert (await c.complete(claimed[0])).state == "completed"
        results = await c.complete_many([claimed[0], claimed[1], (claimed[1].id, 0)])
        assert isinstance(results[0], InvalidTransition)
        assert isinstance(results[1], QueueJob)
        assert isinstance(results[2], StaleToken)
        third = (await c.claim_jobs([queue], "aw"))[0]
        assert (await c.snooze(third, 0.05)).state == "scheduled"
        assert (await c.cancel(third.id)).state == "cancelled"
        assert (await c.retry_job(third)).state == "available"
        again = await c.claim_jobs(queue, "aw", limit=2)
        assert [j.id for j in again] == [third.id, first.job.id]
        assert (await c.fail(again[0], "boom")).state == "retryable"
        assert (await c.cancel(again[1])).state == "cancelled"
        await c.purge_job(again[1])
        with pytest.raises(NotFound):
            await c.get_job(again[1].id)
        assert (await c.get_job(third.id)).errors[0].error == "boom"
        assert await c.purge_discarded(queue) == 0
        counts = await c.queue_counts(queue)
        assert (counts.completed, counts.total) == (2, 3)
        assert any(q.queue == queue for q in await c.queues())

        # A waiting claim, woken by an enqueue of another task.
        got: list[QueueJob] = []

        async def claim() -> None:
            got.extend(await c.claim_jobs(f"{queue}-idle", "aw", wait=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim)
            await anyio.sleep(0.3)
            await c.enqueue(f"{queue}-idle", "wake")
        assert [j.kind for j in got] == ["wake"]


async def test_tokens(auth_server: Server) -> None:
    async with AsyncClient(auth_server.url) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.collections()
    async with AsyncClient(auth_server.url, token=VISION) as vision:
        assert (await vision.health()).status == "ok"


async def test_run_metrics(metrics_server: Server) -> None:
    run = f"arun-{uuid.uuid4().hex[:12]}"
    async with AsyncClient(metrics_server.url) as c:
        logged = await c.log_metrics(run, [("loss", 1 / (step + 1), step, step) for step in range(12_000)])
        assert (logged.points, logged.series, logged.requests) == (12_000, 1, 3)
        await c.log_metrics(run, {"val/acc": math.nan, "lr": -0.0}, step=5, timestamp=7)
        loss = await c.history(run, "loss", page_size=5000)
        assert loss.steps == list(range(12_000))
        assert loss.values[9] == 0.1
        page = await c.history_page(run, "loss", min_step=10, max_time=19, limit=5)
        assert page.steps == [10, 11, 12, 13, 14]
        assert page.next_cursor is not None
        latest = await c.latest_metrics(run)
        assert list(latest) == ["loss", "lr", "val/acc"]
        assert latest["lr"] == LatestMetric("lr", -0.0, 5, 7, 1)
        assert math.copysign(1.0, latest["lr"].value) == -1.0
        assert math.isnan(latest["val/acc"].value)
        buckets = await c.downsample(run, "loss", 12)
        assert [b.count for b in buckets] == [1000] * 12
        assert buckets[0].max == 1.0
        of = await c.latest_of("val/acc", [run, f"{run}-absent"])
        assert of[f"{run}-absent"] is None
        compared = await c.compare("loss", [run], 12)
        assert compared[run] == buckets
        with pytest.raises(BadRequest):
            await c.log_metrics(run, {"": 1.0})

        batcher = c.metrics_batcher(f"{run}-b", flush_points=100, flush_interval=0.1)
        assert isinstance(batcher, AsyncMetricsBatcher)
        async with batcher:
            for step in range(3000):
                await batcher.log("loss", step, step)
                if step % 10 == 0:
                    await batcher.log_many({"acc": step / 3000}, step)
            await batcher.flush()
            assert len(await c.history(f"{run}-b", "loss")) == 3000, "durable once flush returns"
            await batcher.log("\0", 1.0, 0)
            await batcher.log("loss", 3000, 3000)
            with pytest.raises(BadRequest):
                await batcher.flush()
        assert (batcher.logged, batcher.dropped, batcher.pending) == (3301, 1, 0)
        assert (await c.history(f"{run}-b", "loss")).steps == list(range(3001))
        assert len(await c.history(f"{run}-b", "acc")) == 300
        deleted = await c.delete_metrics(f"{run}-b")
        assert deleted.points == 3301
        assert await c.latest_metrics(f"{run}-b") == {}
