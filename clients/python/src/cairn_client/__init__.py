"""A Python client for Cairn's HTTP server (``cairn serve``).

>>> from cairn_client import Client
>>> with Client("http://127.0.0.1:7070") as cairn:                      # doctest: +SKIP
...     job = cairn.put("jobs", "job-42", {"status": "PENDING", "priority": 950})
...     cairn.put("jobs", "job-42", {**job.document, "priority": 990}, if_match=job.version)
...     for rec in cairn.query("jobs", {"status": "PENDING"}, order_by="priority", order="desc"):
...         print(rec.id, rec.document["priority"])

:class:`Client` is synchronous, :class:`AsyncClient` the same surface for ``async`` code. Errors are the
classes of :mod:`cairn_client.errors`; the repository interface of the platform's stores is
:class:`Repository`; :class:`Worker` runs a handler on the job queue's jobs; :class:`MetricsBatcher` logs a
training loop's run metrics in the background. Later server features get modules of their own beside
these.
"""

from .aio import (
    AsyncChangeFeed,
    AsyncChangeStream,
    AsyncClient,
    AsyncJobList,
    AsyncQuery,
    AsyncTransaction,
)
from .client import ChangeFeed, ChangeStream, Client, JobList, Query, Transaction
from .errors import (
    ApiError,
    BadRequest,
    CairnError,
    ChangesTrimmed,
    ConcurrencyConflictError,
    Conflict,
    Contended,
    Forbidden,
    InvalidTransition,
    MethodNotAllowed,
    NotFinished,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServerError,
    StaleToken,
    TransportError,
    Unauthorized,
    Unavailable,
)
from .models import (
    Bucket,
    Change,
    ChangesPage,
    CollectionInfo,
    Declared,
    Enqueued,
    Health,
    Index,
    JobError,
    JobPage,
    JobState,
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
    decode_document,
    encode_document,
)
from .repository import AsyncRepository, EntityNotFoundError, Repository, RepositoryTransaction
from .retry import RetryPolicy
from .run_metrics import AsyncMetricsBatcher, MetricsBatcher
from .transactions import TransactionBuilder
from .worker import Outcome, Worker

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncChangeFeed",
    "AsyncChangeStream",
    "AsyncClient",
    "AsyncJobList",
    "AsyncMetricsBatcher",
    "AsyncQuery",
    "AsyncRepository",
    "AsyncTransaction",
    "BadRequest",
    "Bucket",
    "CairnError",
    "Change",
    "ChangeFeed",
    "ChangeStream",
    "ChangesPage",
    "ChangesTrimmed",
    "Client",
    "CollectionInfo",
    "ConcurrencyConflictError",
    "Conflict",
    "Contended",
    "Declared",
    "Enqueued",
    "EntityNotFoundError",
    "Forbidden",
    "Health",
    "Index",
    "InvalidTransition",
    "JobError",
    "JobList",
    "JobPage",
    "JobState",
    "LatestMetric",
    "MethodNotAllowed",
    "MetricBucket",
    "MetricHistory",
    "MetricPoint",
    "MetricsBatcher",
    "MetricsDeleted",
    "MetricsLogged",
    "NewJob",
    "NotFinished",
    "NotFound",
    "Outcome",
    "Page",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Query",
    "QueueCounts",
    "QueueJob",
    "Record",
    "Repository",
    "RepositoryTransaction",
    "RetryPolicy",
    "ServerError",
    "StaleToken",
    "Transaction",
    "TransactionBuilder",
    "TransactionResult",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "Worker",
    "decode_document",
    "encode_document",
]
