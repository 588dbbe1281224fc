"""Typed results: records, pages, changes, collections, transactions, the job queue's jobs and counts, run
metrics' points, histories and buckets; and documents to and from model classes (dataclasses, pydantic
models)."""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar, Union

__all__ = [
    "JOB_STATES",
    "Change",
    "ChangesPage",
    "CollectionInfo",
    "Declared",
    "Enqueued",
    "Health",
    "Index",
    "JobError",
    "JobPage",
    "JobState",
    "LatestMetric",
    "MetricBucket",
    "MetricHistory",
    "MetricPoint",
    "MetricsDeleted",
    "MetricsLogged",
    "NewJob",
    "Page",
    "QueueCounts",
    "QueueJob",
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


def _opt_ms(ms: int | None) -> datetime | None:
    return None if ms is None else _ms(ms)


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


#: Where a job is in its life (docs/queue.md has the transitions).
JobState = Literal["scheduled", "available", "running", "retryable", "completed", "discarded", "cancelled"]
#: Every state, in the server's order.
JOB_STATES: tuple[JobState, ...] = (
    "scheduled",
    "available",
    "running",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)
#: The states a job leaves only by a retry (or deletion).
FINISHED_STATES: frozenset[str] = frozenset({"completed", "discarded", "cancelled"})


@dataclass(frozen=True)
class JobError:
    """One failed attempt of a job: what the worker said (at most 4 KiB kept), or the server's ``lease
    expired at ...`` for a lease that lapsed."""

    attempt: int
    at_ms: int
    error: str

    @property
    def at(self) -> datetime:
        return _ms(self.at_ms)

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> JobError:
        return cls(attempt=j["attempt"], at_ms=j["at_ms"], error=j["error"])


@dataclass(frozen=True)
class QueueJob:
    """A job of the queue, as the server answered it. A claimed job carries the ``token`` that its
    completion, failure, snooze and heartbeats present: pass the job itself to those calls."""

    #: Assigned at enqueue, increasing: of two jobs of one priority, the lower id runs first.
    id: int
    queue: str
    #: What kind of work it is (a worker's dispatch key).
    kind: str
    #: The job's arguments: any JSON.
    payload: Any
    #: 0 (most urgent) to 9.
    priority: int
    state: JobState
    #: Attempts started so far (claims, less snoozes).
    attempt: int
    #: After this many failed attempts the job is discarded.
    max_attempts: int
    #: When the job became or becomes available: its ``run_at``, or the end of a backoff or snooze.
    scheduled_at_ms: int
    #: The fencing token of the latest claim (the number of claims so far).
    token: int
    inserted_at_ms: int
    #: While the job waits (scheduled, retryable): when it becomes available.
    due_at_ms: int | None = None
    #: While the job runs: when its lease expires.
    lease_until_ms: int | None = None
    #: Who claimed it last.
    worker: str | None = None
    unique_key: str | None = None
    #: Each failed attempt, oldest first.
    errors: list[JobError] = field(default_factory=list)
    #: When it was last claimed.
    attempted_at_ms: int | None = None
    #: When it finished (completed, discarded or cancelled).
    finished_at_ms: int | None = None

    @property
    def finished(self) -> bool:
        """Completed, discarded or cancelled: only :meth:`~cairn_client.Client.retry_job` moves it on."""
        return self.state in FINISHED_STATES

    @property
    def scheduled_at(self) -> datetime:
        return _ms(self.scheduled_at_ms)

    @property
    def inserted_at(self) -> datetime:
        return _ms(self.inserted_at_ms)

    @property
    def due_at(self) -> datetime | None:
        return _opt_ms(self.due_at_ms)

    @property
    def lease_until(self) -> datetime | None:
        return _opt_ms(self.lease_until_ms)

    @property
    def attempted_at(self) -> datetime | None:
        return _opt_ms(self.attempted_at_ms)

    @property
    def finished_at(self) -> datetime | None:
        return _opt_ms(self.finished_at_ms)

    def decode(self, model: type[T]) -> T:
        """The payload (an object) as an instance of ``model`` (see :func:`decode_document`)."""
        if not isinstance(self.payload, Mapping):
            raise TypeError(f"job {self.id}'s payload is not an object: {type(self.payload).__name__}")
        return decode_document(self.payload, model)

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> QueueJob:
        return cls(
            id=j["id"],
            queue=j["queue"],
            kind=j["kind"],
            payload=j.get("payload"),
            priority=j["priority"],
            state=j["state"],
            attempt=j["attempt"],
            max_attempts=j["max_attempts"],
            scheduled_at_ms=j["scheduled_at_ms"],
            token=j["token"],
            inserted_at_ms=j["inserted_at_ms"],
            due_at_ms=j.get("due_at_ms"),
            lease_until_ms=j.get("lease_until_ms"),
            worker=j.get("worker"),
            unique_key=j.get("unique_key"),
            errors=[JobError.from_json(e) for e in j.get("errors", [])],
            attempted_at_ms=j.get("attempted_at_ms"),
            finished_at_ms=j.get("finished_at_ms"),
        )


@dataclass(frozen=True)
class NewJob:
    """A job to enqueue (:meth:`~cairn_client.Client.enqueue_many` takes these, or mappings of the same
    fields).

    ``payload``: any JSON, or a dataclass instance or pydantic model (written as documents are).
    ``priority``: 0 (most urgent) to 9. ``run_at``: not before this time, a :class:`~datetime.datetime`
    (naive ones are local time) or milliseconds since the Unix epoch. ``max_attempts``: attempts before the
    job is discarded (the server's default: 20). ``unique_key``: while a job of the queue enqueued with this
    key is in one of ``unique_states`` (default: not finished) and was enqueued within ``unique_period``
    seconds (default: any time), an enqueue returns that job instead of adding one.
    """

    queue: str
    kind: str
    payload: Any = None
    priority: int = 0
    run_at: datetime | int | None = None
    max_attempts: int | None = None
    unique_key: str | None = None
    unique_period: float | None = None
    unique_states: Sequence[JobState] | None = None

    def to_json(self) -> dict[str, Any]:
        """The body the server takes (its ``NewJob``)."""
        out: dict[str, Any] = {"queue": self.queue, "kind": self.kind}
        if self.payload is not None:
            out["payload"] = encode_payload(self.payload)
        if self.priority:
            out["priority"] = self.priority
        if self.run_at is not None:
            out["run_at_ms"] = epoch_ms(self.run_at)
        if self.max_attempts is not None:
            out["max_attempts"] = self.max_attempts
        if self.unique_key is not None:
            unique: dict[str, Any] = {"key": self.unique_key}
            if self.unique_period is not None:
                unique["period_ms"] = round(self.unique_period * 1000)
            if self.unique_states is not None:
                if isinstance(self.unique_states, str):
                    raise TypeError("unique_states is a sequence of states, not one string")
                for s in self.unique_states:
                    check_state(s)
                unique["states"] = list(self.unique_states)
            out["unique"] = unique
        elif self.unique_period is not None or self.unique_states is not None:
            raise ValueError("unique_period and unique_states need a unique_key")
        return out


def check_state(state: str) -> JobState:
    """``state`` if it is a job state; :class:`ValueError` otherwise."""
    for s in JOB_STATES:
        if s == state:
            return s
    raise ValueError(f"no job state {state!r}: one of {', '.join(JOB_STATES)}")


def epoch_ms(at: datetime | int) -> int:
    """A time as milliseconds since the Unix epoch: a datetime (naive: local time), or already an int."""
    if isinstance(at, datetime):
        return round(at.timestamp() * 1000)
    if isinstance(at, bool) or not isinstance(at, int):
        raise TypeError(f"a time is a datetime or milliseconds since the epoch (int), not {at!r}")
    return at


def encode_payload(payload: Any) -> Any:
    """A job's payload as JSON-ready data: JSON values as they are, a dataclass instance or a pydantic model
    as :func:`encode_document` writes it."""
    if payload is None or isinstance(payload, (Mapping, list, tuple, str, int, float, bool)):
        return payload
    return encode_document(payload)


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue did: ``job`` is the job added, or, with ``duplicate``, the job already holding the
    unique key (nothing was added)."""

    job: QueueJob
    duplicate: bool

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> Enqueued:
        return cls(job=QueueJob.from_json(j["job"]), duplicate=bool(j["duplicate"]))


@dataclass(frozen=True)
class QueueCounts:
    """A queue's jobs in each state, kept by the server on every write (finished jobs until pruned)."""

    queue: str
    scheduled: int
    available: int
    running: int
    retryable: int
    completed: int
    discarded: int
    cancelled: int
    total: int

    def get(self, state: str) -> int:
        """The count of jobs in ``state``."""
        value: int = getattr(self, check_state(state))
        return value

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> QueueCounts:
        return cls(
            queue=j["queue"],
            scheduled=j["scheduled"],
            available=j["available"],
            running=j["running"],
            retryable=j["retryable"],
            completed=j["completed"],
            discarded=j["discarded"],
            cancelled=j["cancelled"],
            total=j["total"],
        )


@dataclass(frozen=True)
class JobPage:
    """One page of a queue's jobs in one state, in claim order. ``next`` continues it; ``None`` on the last
    page."""

    jobs: list[QueueJob]
    next: str | None


# -- run metrics ------------------------------------------------------------------------------------------

#: Steps and timestamps are signed 64-bit integers on the server.
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
#: The strings that stand for the values JSON has no number for, both ways.
SPECIAL_VALUES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def metric_value(value: Any) -> float:
    """A metric's value as a float: anything :class:`float` takes but strings (a NumPy or PyTorch scalar,
    an int); :class:`TypeError` otherwise."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"a metric value is a number, not {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"a metric value is a number, not {value!r}") from e
    except OverflowError as e:
        raise ValueError(f"a metric value must fit a float, not {value!r}") from e


def metric_int(value: Any, what: str) -> int:
    """A step or a timestamp as the server takes it: an integer (NumPy's too) in the signed 64-bit range."""
    if isinstance(value, bool):
        raise TypeError(f"{what} is an integer, not {value!r}")
    try:
        n = operator.index(value)
    except TypeError as e:
        raise TypeError(f"{what} is an integer, not {value!r}") from e
    if not I64_MIN <= n <= I64_MAX:
        raise ValueError(f"{what} must fit in 64 bits (signed), not {n}")
    return n


def metric_time(at: datetime | int, what: str = "timestamp") -> int:
    """A metric's time as milliseconds since the Unix epoch: a datetime (naive: local time) or an int."""
    return metric_int(epoch_ms(at) if isinstance(at, datetime) else at, what)


def encode_value(value: float) -> float | str:
    """A value as the server takes it: a number, or ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def decode_value(value: Any) -> float:
    """A value as the server writes it: a number, or one of the strings for NaN and the infinities."""
    if isinstance(value, str):
        if value not in SPECIAL_VALUES:
            raise ValueError(f"not a metric value: {value!r}")
        return SPECIAL_VALUES[value]
    return float(value)


@dataclass(frozen=True)
class MetricPoint:
    """One point of a run's metric: ``value`` of ``key`` at ``step``, at ``timestamp_ms`` (milliseconds since
    the Unix epoch; to log, ``None`` takes the time of the call)."""

    key: str
    value: float
    step: int
    timestamp_ms: int | None = None

    @property
    def timestamp(self) -> datetime | None:
        return _opt_ms(self.timestamp_ms)

    def to_json(self) -> dict[str, Any]:
        """The point as the server takes it."""
        out: dict[str, Any] = {"key": self.key, "step": self.step, "value": encode_value(self.value)}
        if self.timestamp_ms is not None:
            out["timestamp_ms"] = self.timestamp_ms
        return out


@dataclass(frozen=True)
class MetricsLogged:
    """What :meth:`~cairn_client.Client.log_metrics` wrote: ``points``, to ``series`` metric keys, in
    ``requests`` requests (each one durable commit, the last one's sequence is ``sequence``)."""

    points: int
    series: int
    sequence: int
    requests: int = 1

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> MetricsLogged:
        return cls(points=j["points"], series=j["series"], sequence=j["sequence"])


@dataclass(frozen=True)
class MetricsDeleted:
    """What deleting a run's metrics removed."""

    blocks: int
    points: int
    series: int

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> MetricsDeleted:
        return cls(blocks=j["blocks"], points=j["points"], series=j["series"])


@dataclass(frozen=True)
class MetricHistory:
    """A metric's points, in columns, ordered by step then log order: point ``i`` is ``values[i]`` at
    ``steps[i]``, logged at ``timestamps_ms[i]``. Iterating it yields a :class:`MetricPoint` per point. A
    page read by :meth:`~cairn_client.Client.history_page` has the ``next_cursor`` that continues it
    (``None`` on the last page and for a whole history)."""

    run: str
    key: str
    steps: list[int]
    timestamps_ms: list[int]
    values: list[float]
    next_cursor: str | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[MetricPoint]:
        for step, ts, value in zip(self.steps, self.timestamps_ms, self.values):
            yield MetricPoint(self.key, value, step, ts)

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> MetricHistory:
        return cls(
            run=j["run"],
            key=j["key"],
            steps=list(j["steps"]),
            timestamps_ms=list(j["timestamps_ms"]),
            values=[decode_value(v) for v in j["values"]],
            next_cursor=j.get("next_cursor"),
        )


@dataclass(frozen=True)
class LatestMetric:
    """The latest point of a run's metric (the highest step; of those, the last logged) and how many points
    the metric has."""

    key: str
    value: float
    step: int
    timestamp_ms: int
    points: int

    @property
    def timestamp(self) -> datetime:
        return _ms(self.timestamp_ms)

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> LatestMetric:
        return cls(
            key=j["key"],
            value=decode_value(j["value"]),
            step=j["step"],
            timestamp_ms=j["timestamp_ms"],
            points=j["points"],
        )


@dataclass(frozen=True)
class MetricBucket:
    """The points of steps ``start_step`` to ``end_step`` (inclusive) of a downsampled metric: ``count`` of
    them, ``nan_count`` NaN; ``min``, ``max`` and ``mean`` of the others (NaN if all are); the bucket's last
    point in history order, ``last`` at ``last_step``."""

    start_step: int
    end_step: int
    count: int
    nan_count: int
    min: float
    max: float
    mean: float
    last_step: int
    last: float

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> MetricBucket:
        return cls(
            start_step=j["start_step"],
            end_step=j["end_step"],
            count=j["count"],
            nan_count=j["nan_count"],
            min=decode_value(j["min"]),
            max=decode_value(j["max"]),
            mean=decode_value(j["mean"]),
            last_step=j["last_step"],
            last=decode_value(j["last"]),
        )


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
