"""The repository interface of the platform's storage strategies, on Cairn."""

from __future__ import annotations

import uuid

import pytest

from cairn_client import (
    AsyncClient,
    AsyncRepository,
    Client,
    ConcurrencyConflictError,
    EntityNotFoundError,
    PreconditionFailed,
    Repository,
)

from .server import Server


def test_repository(client: Client, jobs: str) -> None:
    repo = Repository(client, id_fields={jobs: "request_id"})
    repo.save_entity(jobs, {"request_id": "req-1", "status": "PENDING", "priority": 5, "owner": "alice"})
    repo.save_entity(jobs, {"request_id": "req-2", "status": "PENDING", "priority": 9, "owner": "bob"})
    repo.save_entity(jobs, {"request_id": "req-3", "status": "DONE", "priority": 1, "owner": "bob"})
    entity = repo.get_entity(jobs, "req-1")
    assert entity is not None
    assert entity["_version"] == 1
    assert repo.get_entity(jobs, "nope") is None
    entity["status"] = "RUNNING"
    repo.update_entity(jobs, "req-1", entity, expected_version=entity["_version"])
    with pytest.raises(ConcurrencyConflictError) as e:
        repo.update_entity(jobs, "req-1", entity, expected_version=1)
    assert e.value.current_version == 2
    assert isinstance(e.value, PreconditionFailed)
    with pytest.raises(EntityNotFoundError):
        repo.update_entity(jobs, "nope", {"status": "X"})
    repo.update_entity(jobs, "req-1", {**entity, "priority": 6})  # any version
    stored = client.get(jobs, "req-1")
    assert "_version" not in stored.document
    assert stored.version == 3
    pending = repo.query_entities(jobs, filters={"status": "PENDING"}, order_by="-priority", limit=50)
    assert [p["request_id"] for p in pending] == ["req-2"]
    by_owner = repo.query_entities(jobs, {"owner": "bob"}, order_by="owner")
    assert {p["request_id"] for p in by_owner} == {"req-2", "req-3"}
    assert len(repo.query_entities(jobs)) == 3
    assert len(repo.query_entities(jobs, limit=2)) == 2
    assert repo.delete_entity(jobs, "req-3") is True
    assert repo.delete_entity(jobs, "req-3") is False
    with pytest.raises(ValueError, match="request_id"):
        repo.save_entity(jobs, {"status": "no id"})


def test_repository_transactions(client: Client, jobs: str) -> None:
    repo = Repository(client)
    repo.save_entity(jobs, {"id": "t", "n": 1})
    with repo.begin_transaction() as tx:
        tx.save_entity(jobs, {"id": "m1", "n": 1})
        tx.update_entity(jobs, "t", {"id": "t", "n": 2}, expected_version=1)
        tx.update_entity(jobs, "m1", {"id": "m1", "n": 2})
    assert repo.get_entity(jobs, "t") == {"id": "t", "n": 2, "_version": 2}
    assert repo.get_entity(jobs, "m1") == {"id": "m1", "n": 2, "_version": 2}
    with pytest.raises(ConcurrencyConflictError), repo.begin_transaction() as tx:
        tx.save_entity(jobs, {"id": "m2", "n": 1})
        tx.update_entity(jobs, "t", {"id": "t", "n": 3}, expected_version=1)
    assert repo.get_entity(jobs, "m2") is None
    with repo.begin_transaction() as tx:
        tx.delete_entity(jobs, "m1")
    assert repo.get_entity(jobs, "m1") is None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_repository(server: Server, anyio_backend: str) -> None:
    async with AsyncClient(server.url) as c:
        name = f"arepo-{uuid.uuid4().hex[:8]}"
        await c.declare_collection(name, [("status", ["status"])])
        repo = AsyncRepository(c, version_field="version")
        await repo.save_entity(name, {"id": "a", "status": "PENDING"})
        entity = await repo.get_entity(name, "a")
        assert entity == {"id": "a", "status": "PENDING", "version": 1}
        await repo.update_entity(name, "a", {**entity, "status": "DONE"}, expected_version=1)
        with pytest.raises(ConcurrencyConflictError):
            await repo.update_entity(name, "a", entity, expected_version=1)
        with pytest.raises(EntityNotFoundError):
            await repo.update_entity(name, "zz", entity, expected_version=1)
        assert [e["id"] for e in await repo.query_entities(name, {"status": "DONE"})] == ["a"]
        assert await repo.delete_entity(name, "a") is True
        assert await repo.delete_entity(name, "a") is False
        assert await repo.get_entity(name, "a") is None
