"""Every route as a :class:`Call`: the request to send, whether sending it twice is harmless, and how to
read a successful answer. Both clients run the same calls, so they cannot drift apart; this module does no
I/O."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Generic, TypeVar, Union
from urllib.parse import quote

import httpx

from .errors import ApiError, error_from_problem
from .models import (
    JOB_STATES,
    Bucket,
    Change,
    ChangesPage,
    CollectionInfo,
    Declared,
    Document,
    Enqueued,
    Health,
    Index,
    JobPage,
    LatestMetric,
    MetricBucket,
    MetricHistory,
    MetricPoint,
    MetricsDeleted,
    MetricsLogged,
    NewJob,
    Page,
    QueueCounts,
    QueueJob,
    Record,
    TransactionResult,
    check_state,
    encode_document,
    metric_int,
    metric_time,
    metric_value,
)

T = TypeVar("T")

#: An index as :class:`Index`, a mapping ``{"name", "fields"}`` or a pair ``(name, fields)``.
IndexLike = Union[Index, Mapping[str, Any], "tuple[str, Sequence[str]]"]
#: ``if_match``: a version, or ``"*"`` for any existing version.
IfMatch = Union[int, str]

#: A job as a call that presents its fencing token takes it: the :class:`QueueJob` a claim returned, or
#: ``(id, token)``.
JobRef = Union[QueueJob, "tuple[int, int]"]
#: A job named by id: its id, or the :class:`QueueJob`.
JobId = Union[QueueJob, int]
#: A job to enqueue: a :class:`NewJob`, or a mapping of its fields (``{"queue", "kind", "payload", ...}``).
NewJobLike = Union[NewJob, Mapping[str, Any]]

#: A point to log: a :class:`MetricPoint`, a tuple ``(key, value, step)`` or ``(key, value, step,
#: timestamp)``, or a mapping ``{"key", "value", "step", "timestamp_ms"?}``.
MetricPointLike = Union[MetricPoint, "tuple[Any, ...]", Mapping[str, Any]]
#: What :meth:`~cairn_client.Client.log_metrics` takes: points, or a mapping ``{key: value}`` at one step.
MetricsLike = Union[Iterable[MetricPointLike], Mapping[str, Any]]
#: A time: a datetime (naive ones are local time) or milliseconds since the Unix epoch.
Time = Union[datetime, int]

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


# -- the job queue ----------------------------------------------------------------------------------------


def millis(seconds: float, what: str, *, positive: bool = False) -> int:
    """``seconds`` as whole milliseconds; :class:`ValueError` if negative (or, with ``positive``, under one
    millisecond)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} is a number of seconds, not {seconds!r}")
    ms = round(seconds * 1000)
    if ms < 0 or (positive and ms < 1):
        least = "at least 0.001" if positive else "not negative"
        raise ValueError(f"{what} must be {least} (seconds), not {seconds!r}")
    return ms


def job_ref(job: JobRef) -> tuple[int, int]:
    if isinstance(job, QueueJob):
        return job.id, job.token
    id, token = job
    return job_id(id), int(token)


def job_id(job: JobId) -> int:
    if isinstance(job, QueueJob):
        return job.id
    if isinstance(job, bool) or not isinstance(job, int) or job < 0:
        raise ValueError(f"a job id is an unsigned integer, not {job!r}")
    return job


def as_new_job(job: NewJobLike) -> NewJob:
    if isinstance(job, NewJob):
        return job
    return NewJob(**job)


def queue_names(queues: str | Sequence[str]) -> list[str]:
    """One queue's name, or several."""
    return [queues] if isinstance(queues, str) else list(queues)


def job_path(id: int) -> str:
    return f"/v1/queue/jobs/{id}"


def queue_path(queue: str) -> str:
    return f"/v1/queue/queues/{quote(queue, safe='')}"


def _queue_job(r: httpx.Response) -> QueueJob:
    return QueueJob.from_json(_json(r))


def finds_itself(job: dict[str, Any]) -> bool:
    """Whether enqueueing ``job`` (a request body) twice is sure to add one job: its unique key counts jobs
    in every state and of any age, so the second finds the first's job whatever happened to it meanwhile.
    With the default states, a job completed between the two would let the second add another."""
    unique = job.get("unique")
    return (
        unique is not None and "period_ms" not in unique and set(unique.get("states", ())) >= set(JOB_STATES)
    )


def enqueue(job: NewJob) -> Call[Enqueued]:
    body = job.to_json()
    return Call(
        "POST",
        "/v1/queue/jobs",
        lambda r: Enqueued.from_json(_json(r)),
        body=body,
        repeatable=finds_itself(body),
    )


def enqueue_many(jobs: Sequence[NewJobLike]) -> Call[list[Enqueued]]:
    bodies = [as_new_job(j).to_json() for j in jobs]
    if not bodies:
        raise ValueError("a batch needs at least one job")

    def parse(r: httpx.Response) -> list[Enqueued]:
        return [Enqueued.from_json(e) for e in _json(r)["results"]]

    return Call(
        "POST",
        "/v1/queue/jobs/batch",
        parse,
        body={"jobs": bodies},
        repeatable=all(finds_itself(b) for b in bodies),
    )


def claim_jobs(
    queues: str | Sequence[str], worker: str, lease: float, limit: int, wait: float
) -> Call[list[QueueJob]]:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit!r}")
    body: dict[str, Any] = {
        "queues": queue_names(queues),
        "worker": worker,
        "lease_ms": millis(lease, "lease", positive=True),
        "limit": limit,
    }
    wait_ms = millis(wait, "wait")
    if wait_ms:
        body["wait_ms"] = wait_ms

    def parse(r: httpx.Response) -> list[QueueJob]:
        return [QueueJob.from_json(j) for j in _json(r)["jobs"]]

    # A claim whose answer was lost leased its jobs to nobody (rescued when the lease ends): not sent again.
    return Call("POST", "/v1/queue/claim", parse, body=body, repeatable=False)


def _with_token(job: JobRef, action: str, extra: dict[str, Any]) -> Call[QueueJob]:
    id, token = job_ref(job)
    # The token is a precondition: sent again after its first attempt was applied, the call is refused
    # (the job is no longer running) and changes nothing.
    return Call("POST", f"{job_path(id)}/{action}", _queue_job, body={"token": token, **extra})


def complete(job: JobRef) -> Call[QueueJob]:
    return _with_token(job, "complete", {})


def fail(job: JobRef, error: str) -> Call[QueueJob]:
    return _with_token(job, "fail", {"error": str(error)})


def snooze(job: JobRef, delay: float) -> Call[QueueJob]:
    return _with_token(job, "snooze", {"delay_ms": millis(delay, "delay")})


def heartbeat(job: JobRef, lease: float) -> Call[QueueJob]:
    return _with_token(job, "heartbeat", {"lease_ms": millis(lease, "lease", positive=True)})


def cancel(job: JobId) -> Call[QueueJob]:
    # No precondition: sent twice, the second could cancel a job retried in between.
    return Call("POST", f"{job_path(job_id(job))}/cancel", _queue_job, repeatable=False)


def retry_job(job: JobId) -> Call[QueueJob]:
    # Sent twice, the second could run the job once more after a worker completed it in between.
    return Call("POST", f"{job_path(job_id(job))}/retry", _queue_job, repeatable=False)


def complete_many(jobs: Sequence[JobRef]) -> Call[list[QueueJob | ApiError]]:
    refs = [job_ref(j) for j in jobs]
    if not refs:
        raise ValueError("a batch needs at least one job")

    def parse(r: httpx.Response) -> list[QueueJob | ApiError]:
        out: list[QueueJob | ApiError] = []
        for result in _json(r)["results"]:
            if "job" in result:
                out.append(QueueJob.from_json(result["job"]))
            else:
                problem = result["error"]
                out.append(error_from_problem(int(problem.get("status", 409)), problem))
        return out

    body = {"jobs": [{"id": id, "token": token} for id, token in refs]}
    return Call("POST", "/v1/queue/complete", parse, body=body)


def get_job(job: JobId) -> Call[QueueJob]:
    return Call("GET", job_path(job_id(job)), _queue_job)


def purge_job(job: JobId) -> Call[None]:
    return Call("DELETE", job_path(job_id(job)), lambda r: None)


def queues() -> Call[list[QueueCounts]]:
    return Call("GET", "/v1/queue/queues", lambda r: [QueueCounts.from_json(q) for q in _json(r)["queues"]])


def queue_counts(queue: str) -> Call[QueueCounts]:
    return Call("GET", queue_path(queue), lambda r: QueueCounts.from_json(_json(r)))


def jobs_page(queue: str, state: str, limit: int | None, after: str | None) -> Call[JobPage]:
    params: list[tuple[str, str]] = [("state", check_state(state))]
    if limit is not None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        params.append(("limit", str(limit)))
    if after is not None:
        params.append(("cursor", after))

    def parse(r: httpx.Response) -> JobPage:
        j = _json(r)
        return JobPage(jobs=[QueueJob.from_json(x) for x in j["jobs"]], next=j.get("next_cursor"))

    return Call("GET", queue_path(queue) + "/jobs", parse, params=params)


def purge_discarded(queue: str) -> Call[int]:
    return Call("DELETE", queue_path(queue) + "/discarded", lambda r: int(_json(r)["purged"]))


# -- run metrics ------------------------------------------------------------------------------------------

#: Points one request logs at most. The server takes up to 100,000, but a body must fit its
#: ``max_body_bytes`` (1 MiB by default: about 10,000 points with short keys).
LOG_CHUNK = 5000
#: Points one request may carry (the server's limit).
MAX_LOG_POINTS = 100_000
#: Runs one cross-run read names at most (the server's limit).
MAX_RUNS = 1000


def segment(name: str) -> str:
    """``name`` as one segment of a path, percent-encoded (``/`` too); ``.`` and ``..``, which URLs
    resolve as relative segments, escaped as well."""
    if not isinstance(name, str):
        raise TypeError(f"a run id or metric key is a string, not {name!r}")
    if name in (".", ".."):
        return name.replace(".", "%2E")
    return quote(name, safe="")


def run_path(run: str) -> str:
    return f"/v1/runs/{segment(run)}/metrics"


def now_ms() -> int:
    return round(time.time() * 1000)


def as_point(p: MetricPointLike, timestamp_ms: int) -> MetricPoint:
    """One point to log, checked: the key a string, the value a number, the step and the timestamp
    integers (``timestamp_ms`` for a point without one)."""
    if isinstance(p, MetricPoint):
        key, value, step, at = p.key, p.value, p.step, p.timestamp_ms
    elif isinstance(p, Mapping):
        unknown = set(p) - {"key", "value", "step", "timestamp_ms"}
        if unknown:
            raise ValueError(f"a point has key, value, step and timestamp_ms, not {sorted(unknown)}")
        key, value, step, at = p["key"], p["value"], p["step"], p.get("timestamp_ms")
    elif isinstance(p, tuple) and len(p) in (3, 4):
        key, value, step = p[:3]
        at = p[3] if len(p) == 4 else None
    else:
        raise TypeError(
            "a point is a MetricPoint, (key, value, step), (key, value, step, timestamp) or a mapping,"
            f" not {p!r}"
        )
    if not isinstance(key, str):
        raise TypeError(f"a metric key is a string, not {key!r}")
    return MetricPoint(
        key,
        metric_value(value),
        metric_int(step, "step"),
        timestamp_ms if at is None else metric_time(at),
    )


def as_points(points: MetricsLike, step: int | None, timestamp: Time | None) -> list[MetricPoint]:
    """The points of a :meth:`~cairn_client.Client.log_metrics` call, checked: a mapping ``{key: value}`` is
    one point per key at ``step`` (default 0, as MLflow's); points without a timestamp get ``timestamp``
    (default: now)."""
    at = now_ms() if timestamp is None else metric_time(timestamp)
    if isinstance(points, Mapping):
        s = 0 if step is None else step
        out = [as_point((key, value, s), at) for key, value in points.items()]
    else:
        if step is not None:
            raise ValueError("step is for a mapping of values; each point has its own")
        if isinstance(points, (str, bytes)):
            raise TypeError("points are points or a mapping of values, not a string")
        out = [as_point(p, at) for p in points]
    if not out:
        raise ValueError("a batch needs at least one point")
    return out


def chunks(points: Sequence[MetricPoint], size: int) -> list[Sequence[MetricPoint]]:
    """``points`` cut into requests of ``size`` (1 to 100,000) points."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_LOG_POINTS:
        raise ValueError(f"chunk_size must be 1 to {MAX_LOG_POINTS:,}, not {size!r}")
    return [points[i : i + size] for i in range(0, len(points), size)]


def log_metrics(run: str, points: Sequence[MetricPoint]) -> Call[MetricsLogged]:
    # Every point is kept: a batch sent twice is logged twice. Sent again only when known not applied.
    return Call(
        "POST",
        run_path(run),
        lambda r: MetricsLogged.from_json(_json(r)),
        body={"points": [p.to_json() for p in points]},
        repeatable=False,
    )


def latest_metrics(run: str) -> Call[dict[str, LatestMetric]]:
    def parse(r: httpx.Response) -> dict[str, LatestMetric]:
        return {m["key"]: LatestMetric.from_json(m) for m in _json(r)["metrics"]}

    return Call("GET", run_path(run), parse)


def delete_metrics(run: str) -> Call[MetricsDeleted]:
    return Call("DELETE", run_path(run), lambda r: MetricsDeleted.from_json(_json(r)))


def _bound(params: list[tuple[str, str]], name: str, value: int | None) -> None:
    if value is not None:
        params.append((name, str(metric_int(value, name))))


def _count(value: int, what: str) -> str:
    """A count the server bounds (page sizes, buckets): an integer, its range checked by the server."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} is an integer, not {value!r}")
    return str(value)


def history_page(
    run: str,
    key: str,
    min_step: int | None,
    max_step: int | None,
    min_time: Time | None,
    max_time: Time | None,
    limit: int | None,
    cursor: str | None,
) -> Call[MetricHistory]:
    params: list[tuple[str, str]] = []
    _bound(params, "min_step", min_step)
    _bound(params, "max_step", max_step)
    _bound(params, "min_time_ms", None if min_time is None else metric_time(min_time, "min_time"))
    _bound(params, "max_time_ms", None if max_time is None else metric_time(max_time, "max_time"))
    if limit is not None:
        params.append(("limit", _count(limit, "page_size")))
    if cursor is not None:
        params.append(("cursor", cursor))
    path = f"{run_path(run)}/{segment(key)}/history"
    return Call("GET", path, lambda r: MetricHistory.from_json(_json(r)), params=params)


def _buckets(j: Mapping[str, Any]) -> list[MetricBucket]:
    return [MetricBucket.from_json(b) for b in j["buckets"]]


def _downsample_params(max_points: int, min_step: int | None, max_step: int | None) -> list[tuple[str, str]]:
    params = [("max_points", _count(max_points, "max_points"))]
    _bound(params, "min_step", min_step)
    _bound(params, "max_step", max_step)
    return params


def downsample(
    run: str, key: str, max_points: int, min_step: int | None, max_step: int | None
) -> Call[list[MetricBucket]]:
    path = f"{run_path(run)}/{segment(key)}/downsample"
    params = _downsample_params(max_points, min_step, max_step)
    return Call("GET", path, lambda r: _buckets(_json(r)), params=params)


def run_ids(runs: str | Sequence[str]) -> list[str]:
    """One run's id, or several (each sent as a ``run`` parameter of its own, so an id may hold a comma)."""
    ids = [runs] if isinstance(runs, str) else list(runs)
    if not ids:
        raise ValueError("name at least one run")
    for r in ids:
        if not isinstance(r, str):
            raise TypeError(f"a run id is a string, not {r!r}")
    return ids


def latest_of(key: str, runs: Sequence[str]) -> Call[dict[str, LatestMetric | None]]:
    def parse(r: httpx.Response) -> dict[str, LatestMetric | None]:
        return {
            x["run"]: None if x["latest"] is None else LatestMetric.from_json(x["latest"])
            for x in _json(r)["runs"]
        }

    path = f"/v1/metrics/{segment(key)}/latest"
    return Call("GET", path, parse, params=[("run", r) for r in runs])


def compare(
    key: str, runs: Sequence[str], max_points: int, min_step: int | None, max_step: int | None
) -> Call[dict[str, list[MetricBucket]]]:
    def parse(r: httpx.Response) -> dict[str, list[MetricBucket]]:
        return {s["run"]: _buckets(s) for s in _json(r)["series"]}

    params = [*(("run", r) for r in runs), *_downsample_params(max_points, min_step, max_step)]
    return Call("GET", f"/v1/metrics/{segment(key)}/compare", parse, params=params)
