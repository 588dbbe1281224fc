"""Typed results: records, pages, changes, collections, transactions; and documents to and from model
classes (dataclasses, pydantic models)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar, Union

__all__ = [
    "Change",
    "ChangesPage",
    "CollectionInfo",
    "Declared",
    "Health",
    "Index",
    "Page",
    "Record",
    "TransactionResult",
    "decode_document",
    "encode_document",
]

T = TypeVar("T")

#: What a write accepts as a document: a mapping, a dataclass instance or a pydantic model.
Document = Union[Mapping[str, Any], Any]


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


@dataclass(frozen=True)
class Record:
    """A stored record: its document and the server's bookkeeping."""

    collection: str
    id: str
    #: 1 on creation, +1 on every write; pass it back as ``if_match``.
    version: int
    #: The commit sequence that last wrote the record.
    seq: int
    created_at_ms: int
    updated_at_ms: int
    document: dict[str, Any]

    @property
    def created_at(self) -> datetime:
        """Creation time (UTC)."""
        return _ms(self.created_at_ms)

    @property
    def updated_at(self) -> datetime:
        """Time of the last write (UTC)."""
        return _ms(self.updated_at_ms)

    def decode(self, model: type[T]) -> T:
        """The document as an instance of ``model`` (see :func:`decode_document`)."""
        return decode_document(self.document, model)

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> Record:
        return cls(
            collection=j["collection"],
            id=j["id"],
            version=j["version"],
            seq=j["seq"],
            created_at_ms=j["created_at_ms"],
            updated_at_ms=j["updated_at_ms"],
            document=j["document"],
        )


@dataclass(frozen=True)
class Page:
    """One page of a query. ``next_cursor`` continues the same query; ``None`` on the last page."""

    records: list[Record]
    next_cursor: str | None


@dataclass(frozen=True)
class Change:
    """One change of the feed. Every change of one commit has the same ``seq``."""

    seq: int
    collection: str
    id: str
    #: ``insert``, ``update`` or ``delete``.
    op: str
    version: int
    at_ms: int
    #: The document written; ``None`` for a delete.
    document: dict[str, Any] | None
    #: For a project-scoped token: an update that moved the record out of its project (shown as a delete).
    moved_out: bool = False

    @property
    def at(self) -> datetime:
        return _ms(self.at_ms)

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> Change:
        return cls(
            seq=j["seq"],
            collection=j["collection"],
            id=j["id"],
            op=j["op"],
            version=j["version"],
            at_ms=j["at_ms"],
            document=j.get("document"),
            moved_out=bool(j.get("moved_out", False)),
        )


@dataclass(frozen=True)
class ChangesPage:
    """One read of the change feed; pass ``next_since`` as the next ``since``."""

    changes: list[Change]
    next_since: int


@dataclass(frozen=True)
class Index:
    """A secondary index: a name and the fields it covers (dot-separated paths; a leading ``-`` stores a
    field descending)."""

    name: str
    fields: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "fields": list(self.fields)}

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> Index:
        return cls(name=j["name"], fields=list(j["fields"]))


@dataclass(frozen=True)
class CollectionInfo:
    """A collection, its indexes and its record count (a scoped token's: its project's records)."""

    name: str
    indexes: list[Index]
    count: int

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> CollectionInfo:
        return cls(
            name=j["name"],
            indexes=[Index.from_json(i) for i in j.get("indexes", [])],
            count=int(j.get("count", 0)),
        )


@dataclass(frozen=True)
class Declared:
    """The answer to declaring a collection: ``created`` is false when it existed (its indexes are then
    replaced, new ones built online)."""

    name: str
    indexes: list[Index]
    created: bool


@dataclass(frozen=True)
class Health:
    status: str
    last_sequence: int


@dataclass(frozen=True)
class Bucket:
    """An artifact bucket (objects themselves are read and written through the S3 API, e.g. with boto3)
    and its figures, kept by the server on every write."""

    name: str
    project: str | None
    created_ms: int
    retention_days: int | None
    objects: int
    bytes: int

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> Bucket:
        return cls(
            name=j["name"],
            project=j.get("project"),
            created_ms=j["created_ms"],
            retention_days=j.get("retention_days"),
            objects=j["objects"],
            bytes=j["bytes"],
        )


@dataclass(frozen=True)
class TransactionResult:
    """A committed transaction: its commit sequence, and per operation the record written (``put``), the
    record checked (``check``; ``None`` if absent) or ``None`` (``delete``)."""

    seq: int
    results: list[Record | None] = field(default_factory=list)

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> TransactionResult:
        results: list[Record | None] = []
        for r in j.get("results", []):
            if r is None or (isinstance(r, Mapping) and "document" not in r):
                results.append(None)
            else:
                results.append(Record.from_json(r))
        return cls(seq=j["seq"], results=results)


def encode_document(doc: Document) -> dict[str, Any]:
    """A document as JSON-ready data: a mapping as it is, a dataclass instance through
    :func:`dataclasses.asdict`, a pydantic model through ``model_dump(mode="json")`` (or ``dict()``)."""
    if isinstance(doc, Mapping):
        return dict(doc)
    if dataclasses.is_dataclass(doc) and not isinstance(doc, type):
        return dataclasses.asdict(doc)
    dump = getattr(doc, "model_dump", None)
    if callable(dump):
        out = dump(mode="json")
        if isinstance(out, dict):
            return out
    legacy = getattr(doc, "dict", None)
    if callable(legacy):
        out = legacy()
        if isinstance(out, dict):
            return out
    raise TypeError(
        f"a document must be a mapping, a dataclass or a pydantic model, not {type(doc).__name__}"
    )


def decode_document(doc: Mapping[str, Any], model: type[T]) -> T:
    """``doc`` as an instance of ``model``: a pydantic model through ``model_validate`` (or ``parse_obj``),
    a dataclass from the fields it declares (other members of the document are ignored), anything else
    called with the document's members as keyword arguments."""
    validate = getattr(model, "model_validate", None) or getattr(model, "parse_obj", None)
    if callable(validate):
        out: T = validate(dict(doc))
        return out
    if dataclasses.is_dataclass(model):
        names = {f.name for f in dataclasses.fields(model) if f.init}
        return model(**{k: v for k, v in doc.items() if k in names})
    return model(**doc)
