"""A Python client for Cairn's HTTP server (``cairn serve``).

>>> from cairn_client import Client
>>> with Client("http://127.0.0.1:7070") as cairn:                      # doctest: +SKIP
...     job = cairn.put("jobs", "job-42", {"status": "PENDING", "priority": 950})
...     cairn.put("jobs", "job-42", {**job.document, "priority": 990}, if_match=job.version)
...     for rec in cairn.query("jobs", {"status": "PENDING"}, order_by="priority", order="desc"):
...         print(rec.id, rec.document["priority"])

:class:`Client` is synchronous, :class:`AsyncClient` the same surface for ``async`` code. Errors are the
classes of :mod:`cairn_client.errors`; the repository interface of the platform's stores is
:class:`Repository`. Later server features get modules of their own beside these.
"""

from .aio import AsyncChangeFeed, AsyncChangeStream, AsyncClient, AsyncQuery, AsyncTransaction
from .client import ChangeFeed, ChangeStream, Client, Query, Transaction
from .errors import (
    ApiError,
    BadRequest,
    CairnError,
    ChangesTrimmed,
    ConcurrencyConflictError,
    Conflict,
    Contended,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServerError,
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
    Health,
    Index,
    Page,
    Record,
    TransactionResult,
    decode_document,
    encode_document,
)
from .repository import AsyncRepository, EntityNotFoundError, Repository, RepositoryTransaction
from .retry import RetryPolicy
from .transactions import TransactionBuilder

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncChangeFeed",
    "AsyncChangeStream",
    "AsyncClient",
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
    "EntityNotFoundError",
    "Forbidden",
    "Health",
    "Index",
    "MethodNotAllowed",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Query",
    "Record",
    "Repository",
    "RepositoryTransaction",
    "RetryPolicy",
    "ServerError",
    "Transaction",
    "TransactionBuilder",
    "TransactionResult",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "decode_document",
    "encode_document",
]
