"""Every route as a :class:`Call`: the request to send, whether sending it twice is harmless, and how to
read a successful answer. Both clients run the same calls, so they cannot drift apart; this module does no
I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar, Union
from urllib.parse import quote

import httpx

from .models import (
    Bucket,
    Change,
    ChangesPage,
    CollectionInfo,
    Declared,
    Document,
    Health,
    Index,
    Page,
    Record,
    TransactionResult,
    encode_document,
)

T = TypeVar("T")

#: An index as :class:`Index`, a mapping ``{"name", "fields"}`` or a pair ``(name, fields)``.
IndexLike = Union[Index, Mapping[str, Any], "tuple[str, Sequence[str]]"]
#: ``if_match``: a version, or ``"*"`` for any existing version.
IfMatch = Union[int, str]

#: Query-string parameters that are not filters; a filter on a field of these names cannot be expressed.
RESERVED = frozenset({"order_by", "order", "limit", "cursor"})


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    #: Sending it twice does no harm (idempotent, or it carries a precondition).
    repeatable: bool = True


def _json(resp: httpx.Response) -> Any:
    return json.loads(resp.content)


def record_path(collection: str, id: str) -> str:
    return f"/v1/collections/{quote(collection, safe='')}/records/{quote(id, safe='')}"


def filter_value(value: Any) -> str:
    """A filter value as the query string carries it: strings always JSON-quoted, so ``"5"`` stays a string
    and ``5`` a number."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return json.dumps(value)
    raise TypeError(f"filter values must be str, int, float, bool or None, not {type(value).__name__}")


def order_value(order: str) -> str:
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    return order


def _ifmatch_header(if_match: IfMatch) -> str:
    if if_match == "*":
        return "*"
    if isinstance(if_match, bool) or not isinstance(if_match, int) or if_match < 0:
        raise ValueError(f"if_match must be a version (int) or '*', not {if_match!r}")
    return f'"{if_match}"'


def health() -> Call[Health]:
    def parse(r: httpx.Response) -> Health:
        j = _json(r)
        return Health(status=j["status"], last_sequence=j["last_sequence"])

    return Call("GET", "/healthz", parse)


def stats() -> Call[dict[str, Any]]:
    return Call("GET", "/v1/stats", _json)


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda r: r.text)


def openapi() -> Call[dict[str, Any]]:
    return Call("GET", "/openapi.json", _json)


def buckets() -> Call[list[Bucket]]:
    return Call("GET", "/v1/artifacts/buckets", lambda r: [Bucket.from_json(b) for b in _json(r)["buckets"]])


def bucket_path(name: str) -> str:
    return f"/v1/artifacts/buckets/{quote(name, safe='')}"


def bucket(name: str) -> Call[Bucket]:
    return Call("GET", bucket_path(name), lambda r: Bucket.from_json(_json(r)))


def set_retention(name: str, days: int | None) -> Call[Bucket]:
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
        raise ValueError(f"days must be a whole number of days, at least 1, or None, not {days!r}")
    return Call(
        "PUT", bucket_path(name) + "/retention", lambda r: Bucket.from_json(_json(r)), body={"days": days}
    )


def artifact_stats() -> Call[dict[str, Any]]:
    return Call("GET", "/v1/artifacts/stats", _json)


def collect_garbage() -> Call[dict[str, Any]]:
    return Call("POST", "/v1/artifacts/gc", _json)


def collections() -> Call[list[CollectionInfo]]:
    return Call(
        "GET", "/v1/collections", lambda r: [CollectionInfo.from_json(c) for c in _json(r)["collections"]]
    )


def as_index(i: IndexLike) -> Index:
    if isinstance(i, Index):
        return i
    if isinstance(i, Mapping):
        return Index(name=str(i["name"]), fields=[str(f) for f in i["fields"]])
    name, fields = i
    if isinstance(fields, str):
        raise TypeError("an index's fields are a sequence of field names, not one string")
    return Index(name=name, fields=list(fields))


def declare(name: str, indexes: Sequence[IndexLike]) -> Call[Declared]:
    specs = [as_index(i) for i in indexes]

    def parse(r: httpx.Response) -> Declared:
        j = _json(r)
        return Declared(
            name=j["name"],
            indexes=[Index.from_json(i) for i in j.get("indexes", [])],
            created=r.status_code == 201,
        )

    return Call(
        "POST", "/v1/collections", parse, body={"name": name, "indexes": [s.to_json() for s in specs]}
    )


def _record(r: httpx.Response) -> Record:
    return Record.from_json(_json(r))


def get(collection: str, id: str) -> Call[Record]:
    return Call("GET", record_path(collection, id), _record)


def put(
    collection: str,
    id: str,
    document: Document,
    *,
    if_match: IfMatch | None = None,
    create_only: bool = False,
) -> Call[Record]:
    headers: dict[str, str] = {}
    if if_match is not None and create_only:
        raise ValueError("give if_match or create_only, not both")
    if if_match is not None:
        headers["If-Match"] = _ifmatch_header(if_match)
    if create_only:
        headers["If-None-Match"] = "*"
    return Call("PUT", record_path(collection, id), _record, headers=headers, body=encode_document(document))


def delete(collection: str, id: str, *, if_match: IfMatch | None = None) -> Call[None]:
    headers = {"If-Match": _ifmatch_header(if_match)} if if_match is not None else {}
    return Call("DELETE", record_path(collection, id), lambda r: None, headers=headers)


def query_params(
    filters: Mapping[str, Any] | None,
    order_by: str | None,
    order: str,
    limit: int | None,
    cursor: str | None,
) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for name, value in (filters or {}).items():
        if name in RESERVED:
            raise ValueError(
                f"the server cannot filter on a field named {name!r} (a reserved query parameter)"
            )
        if not name:
            raise ValueError("empty filter field name")
        params.append((name, filter_value(value)))
    if order_by is not None:
        params.append(("order_by", order_by))
    if order_value(order) != "asc":
        params.append(("order", order))
    if limit is not None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        params.append(("limit", str(limit)))
    if cursor is not None:
        params.append(("cursor", cursor))
    return params


def query_page(
    collection: str,
    filters: Mapping[str, Any] | None,
    order_by: str | None,
    order: str,
    limit: int | None,
    cursor: str | None,
) -> Call[Page]:
    def parse(r: httpx.Response) -> Page:
        j = _json(r)
        return Page(records=[Record.from_json(x) for x in j["records"]], next_cursor=j.get("next_cursor"))

    path = f"/v1/collections/{quote(collection, safe='')}/records"
    return Call("GET", path, parse, params=query_params(filters, order_by, order, limit, cursor))


def count(collection: str, filters: Mapping[str, Any] | None) -> Call[int]:
    def parse(r: httpx.Response) -> int:
        return int(_json(r)["count"])

    path = f"/v1/collections/{quote(collection, safe='')}/count"
    return Call("GET", path, parse, params=query_params(filters, None, "asc", None, None))


def claim_query(where: Mapping[str, Any] | None, order_by: str | None, order: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {}
    if where:
        q["where"] = dict(where)
    if order_by is not None:
        q["order_by"] = order_by
    if order is not None:
        q["order"] = order_value(order)
    return q


def claim(
    collection: str,
    set: Mapping[str, Any],
    where: Mapping[str, Any] | None = None,
    order_by: str | None = None,
    order: str | None = None,
    queries: Sequence[Mapping[str, Any]] | None = None,
) -> Call[Record | None]:
    if not set:
        raise ValueError("set must name at least one field")
    body: dict[str, Any] = {"set": dict(set)}
    if queries:
        if where or order_by is not None or order is not None:
            raise ValueError("give where/order_by/order or queries, not both")
        body["queries"] = [claim_query(q.get("where"), q.get("order_by"), q.get("order")) for q in queries]
    else:
        body.update(claim_query(where, order_by, order))

    def parse(r: httpx.Response) -> Record | None:
        return None if r.status_code == 204 else _record(r)

    path = f"/v1/collections/{quote(collection, safe='')}/claim"
    # Taking a record twice is harm: a claim of unknown outcome is not sent again.
    return Call("POST", path, parse, body=body, repeatable=False)


def transaction(operations: list[dict[str, Any]]) -> Call[TransactionResult]:
    if not operations:
        raise ValueError("a transaction needs at least one operation")
    guarded = all(op.get("if_match") is not None or op.get("if_none_match") for op in operations)
    return Call(
        "POST",
        "/v1/transactions",
        lambda r: TransactionResult.from_json(_json(r)),
        body={"operations": operations},
        repeatable=guarded,
    )


def changes(
    since: int, *, limit: int | None = None, wait_ms: int | None = None, collection: str | None = None
) -> Call[ChangesPage]:
    params = [("since", str(since))]
    if limit is not None:
        params.append(("limit", str(limit)))
    if wait_ms:
        params.append(("wait_ms", str(wait_ms)))
    if collection is not None:
        params.append(("collection", collection))

    def parse(r: httpx.Response) -> ChangesPage:
        j = _json(r)
        return ChangesPage(changes=[Change.from_json(c) for c in j["changes"]], next_since=j["next_since"])

    return Call("GET", "/v1/changes", parse, params=params)


def backup(to: str, check: bool = False) -> Call[dict[str, Any]]:
    # A second backup into the directory the first one filled is a 409: not sent again after an unknown
    # outcome.
    return Call("POST", "/v1/admin/backup", _json, body={"to": to, "check": check}, repeatable=False)


def check() -> Call[dict[str, Any]]:
    return Call("POST", "/v1/admin/check", _json)
