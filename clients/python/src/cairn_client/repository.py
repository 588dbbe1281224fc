"""The repository interface of the platform's storage strategies (JSON, SQL, DynamoDB), on Cairn.

Code written against those stores calls ``save_entity``, ``get_entity``, ``update_entity`` (with
``expected_version``, raising :class:`ConcurrencyConflictError`), ``delete_entity``, ``query_entities`` and
``begin_transaction``; :class:`Repository` (and :class:`AsyncRepository`) answer the same calls, each one
request to the server (a transaction: one request at its end).

Entities are dicts. The id is read from the entity's ``id_field`` (default ``"id"``; per collection with
``id_fields={"requests": "request_id"}``). Entities read back carry the record's version in
``version_field`` (default ``"_version"``, ``None`` to leave it out); it is never stored in the document,
so an entity read, changed and written back round-trips.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from .aio import AsyncClient
from .client import Client
from .errors import ConcurrencyConflictError, NotFound, PreconditionFailed
from .models import Record, TransactionResult
from .transactions import TransactionBuilder

__all__ = [
    "AsyncRepository",
    "ConcurrencyConflictError",
    "EntityNotFoundError",
    "Repository",
    "RepositoryTransaction",
]

Entity = dict[str, Any]


class EntityNotFoundError(NotFound):
    """``update_entity`` of an entity that does not exist."""


class _Shape:
    """What both repositories share: ids, versions, and the translation of query arguments."""

    def __init__(self, id_field: str, id_fields: Mapping[str, str] | None, version_field: str | None) -> None:
        self.id_field = id_field
        self.id_fields = dict(id_fields or {})
        self.version_field = version_field

    def entity_id(self, collection: str, entity: Mapping[str, Any]) -> str:
        field = self.id_fields.get(collection, self.id_field)
        value = entity.get(field)
        if value is None or value == "":
            raise ValueError(f"the {collection} entity has no {field!r} to use as its id")
        return str(value)

    def document(self, entity: Mapping[str, Any]) -> Entity:
        doc = dict(entity)
        if self.version_field is not None:
            doc.pop(self.version_field, None)
        return doc

    def entity(self, record: Record) -> Entity:
        out = dict(record.document)
        if self.version_field is not None:
            out[self.version_field] = record.version
        return out

    @staticmethod
    def order(order_by: str | None) -> tuple[str | None, str]:
        """``"-created_at"`` (or ``"created_at desc"``) orders descending."""
        if order_by is None:
            return None, "asc"
        if order_by.startswith("-"):
            return order_by[1:], "desc"
        field, _, direction = order_by.partition(" ")
        direction = direction.strip().lower() or "asc"
        return field, direction

    @staticmethod
    def conflict(e: PreconditionFailed, collection: str, entity_id: str, expected: int | None) -> Exception:
        if e.current_version is None:
            return EntityNotFoundError(
                404, {**e.problem, "detail": f"{collection}/{entity_id} does not exist"}
            )
        detail = f"{collection}/{entity_id} is at version {e.current_version}, not {expected}"
        return ConcurrencyConflictError(e.status, {**e.problem, "detail": detail})


class Repository(_Shape):
    """The repository interface over a :class:`~cairn_client.Client`."""

    def __init__(
        self,
        client: Client,
        *,
        id_field: str = "id",
        id_fields: Mapping[str, str] | None = None,
        version_field: str | None = "_version",
    ) -> None:
        super().__init__(id_field, id_fields, version_field)
        self.client = client

    def save_entity(self, collection: str, entity_data: Mapping[str, Any]) -> None:
        """Creates or replaces the entity (the id from its id field)."""
        self.client.put(collection, self.entity_id(collection, entity_data), self.document(entity_data))

    def get_entity(self, collection: str, entity_id: str) -> Entity | None:
        """The entity, with its version in ``version_field``; ``None`` if there is none."""
        record = self.client.find(collection, entity_id)
        return None if record is None else self.entity(record)

    def update_entity(
        self,
        collection: str,
        entity_id: str,
        entity_data: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> None:
        """Replaces an existing entity; only at ``expected_version`` if given, else at any version.
        :class:`ConcurrencyConflictError` (with ``current_version``) if it moved on,
        :class:`EntityNotFoundError` if it does not exist."""
        if_match: Any = "*" if expected_version is None else expected_version
        try:
            self.client.put(collection, entity_id, self.document(entity_data), if_match=if_match)
        except PreconditionFailed as e:
            raise self.conflict(e, collection, entity_id, expected_version) from e

    def delete_entity(self, collection: str, entity_id: str) -> bool:
        """Deletes the entity; ``False`` if there was none."""
        try:
            self.client.delete(collection, entity_id)
        except NotFound as e:
            if e.id is None:
                raise  # The collection, not the entity, is missing.
            return False
        return True

    def query_entities(
        self,
        collection: str,
        filters: Mapping[str, Any] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Entity]:
        """Entities equal to ``filters``, ordered by ``order_by`` (``"-field"`` descending), at most
        ``limit`` (every one when ``None``)."""
        field, order = self.order(order_by)
        query = self.client.query(collection, filters, order_by=field, order=order, limit=limit)
        return [self.entity(r) for r in query]

    def begin_transaction(self) -> RepositoryTransaction:
        """The operations of the ``with`` block, committed together when it ends without an exception."""
        return RepositoryTransaction(self)


class RepositoryTransaction:
    """``save_entity``, ``update_entity`` and ``delete_entity`` collected and committed all or nothing."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.builder = TransactionBuilder()
        self.result: TransactionResult | None = None

    def save_entity(self, collection: str, entity_data: Mapping[str, Any]) -> None:
        r = self.repository
        self.builder.put(collection, r.entity_id(collection, entity_data), r.document(entity_data))

    def update_entity(
        self,
        collection: str,
        entity_id: str,
        entity_data: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> None:
        doc = self.repository.document(entity_data)
        if expected_version is None:
            # A transaction's put has no "any existing version" precondition (only if_match=N and
            # if_none_match), so without expected_version this is an upsert.
            self.builder.put(collection, entity_id, doc)
        else:
            self.builder.put(collection, entity_id, doc, if_match=expected_version)

    def delete_entity(self, collection: str, entity_id: str) -> None:
        self.builder.delete(collection, entity_id)

    def commit(self) -> TransactionResult | None:
        if not self.builder.operations:
            return None
        try:
            self.result = self.repository.client.commit(self.builder.operations)
        except PreconditionFailed as e:
            op = next((o for o in self.builder.operations if o["id"] == e.id), None)
            expected = op.get("if_match") if op else None
            raise self.repository.conflict(e, e.collection or "", e.id or "", expected) from e
        return self.result

    def __enter__(self) -> RepositoryTransaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()


class AsyncRepository(_Shape):
    """The repository interface over an :class:`~cairn_client.AsyncClient` (for the async-first stores)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        id_field: str = "id",
        id_fields: Mapping[str, str] | None = None,
        version_field: str | None = "_version",
    ) -> None:
        super().__init__(id_field, id_fields, version_field)
        self.client = client

    async def save_entity(self, collection: str, entity_data: Mapping[str, Any]) -> None:
        await self.client.put(collection, self.entity_id(collection, entity_data), self.document(entity_data))

    async def get_entity(self, collection: str, entity_id: str) -> Entity | None:
        record = await self.client.find(collection, entity_id)
        return None if record is None else self.entity(record)

    async def update_entity(
        self,
        collection: str,
        entity_id: str,
        entity_data: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> None:
        if_match: Any = "*" if expected_version is None else expected_version
        try:
            await self.client.put(collection, entity_id, self.document(entity_data), if_match=if_match)
        except PreconditionFailed as e:
            raise self.conflict(e, collection, entity_id, expected_version) from e

    async def delete_entity(self, collection: str, entity_id: str) -> bool:
        try:
            await self.client.delete(collection, entity_id)
        except NotFound as e:
            if e.id is None:
                raise
            return False
        return True

    async def query_entities(
        self,
        collection: str,
        filters: Mapping[str, Any] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Entity]:
        field, order = self.order(order_by)
        query = self.client.query(collection, filters, order_by=field, order=order, limit=limit)
        return [self.entity(r) async for r in query]
