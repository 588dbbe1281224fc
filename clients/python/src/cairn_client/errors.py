"""The exception hierarchy, mapped from the server's ``application/problem+json`` answers (RFC 9457).

Every exception raised by the client is a :class:`CairnError`. An answer with an error status is an
:class:`ApiError` subclass chosen by its status (and, for 503, its problem type); the server's ``detail``
is the message, and the whole problem document is kept in :attr:`ApiError.problem`. A request that never
got an answer (connection refused, reset, timed out) is a :class:`TransportError`.

======================  ======  ==========================================================
class                   status  raised when
======================  ======  ==========================================================
BadRequest              400     malformed input: bad JSON, names, ids, parameters
Unauthorized            401     no token, or a token the server does not know
Forbidden               403     the token's role or project does not allow the request
NotFound                404     no such record, collection or route
MethodNotAllowed        405     a method the route does not have
Conflict                409     a declaration that conflicts, a transaction that kept
                                losing to concurrent commits, a backup into a non-empty dir
StaleToken              409     a job's fencing token is not its current one (re-claimed)
InvalidTransition       409     a job's state does not allow the call (not running ...)
NotFinished             409     purging a job that is not finished
ChangesTrimmed          410     the change feed no longer holds the changes asked for
PreconditionFailed      412     ``if_match`` / create-only / a transaction's check failed
PayloadTooLarge         413     a body over the server's ``max_body_bytes``
ServerError             5xx     the server or its disk failed (500)
Unavailable             503     shed, timed out, too many streams (``retry_after``)
Contended               503     a claim lost every race; nothing was claimed
======================  ======  ==========================================================
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx

__all__ = [
    "ApiError",
    "BadRequest",
    "CairnError",
    "ChangesTrimmed",
    "ConcurrencyConflictError",
    "Conflict",
    "Contended",
    "Forbidden",
    "InvalidTransition",
    "MethodNotAllowed",
    "NotFinished",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ServerError",
    "StaleToken",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "error_from_problem",
    "error_from_response",
]


class CairnError(Exception):
    """Base of every error the client raises."""


class TransportError(CairnError):
    """No answer: the connection failed, was reset, or timed out.

    ``sent`` says whether the request may have reached the server: ``False`` when the connection was
    never made (nothing was applied), ``True`` when the outcome is unknown.
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class ApiError(CairnError):
    """An answer with an error status. ``str(e)`` is the server's ``detail``."""

    status: int = 0

    def __init__(self, status: int, problem: dict[str, Any], *, retry_after: float | None = None) -> None:
        detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        super().__init__(str(detail))
        self.status = status
        self.problem = problem
        self.detail: str = str(detail)
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        self.retry_after = retry_after

    @property
    def kind(self) -> str:
        """The problem type's last segment: ``not-found``, ``precondition-failed``, ``contended`` ..."""
        return self.type.rsplit("/", 1)[-1]

    @property
    def collection(self) -> str | None:
        """The collection the problem names, if any."""
        value = self.problem.get("collection")
        return value if isinstance(value, str) else None

    @property
    def id(self) -> str | None:
        """The record id the problem names, if any."""
        value = self.problem.get("id")
        return value if isinstance(value, str) else None

    @property
    def job_id(self) -> int | None:
        """The job the problem names, if any (the job queue's refusals)."""
        return _int(self.problem.get("job"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, detail={self.detail!r})"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class BadRequest(ApiError):
    """400: the request is malformed."""


class Unauthorized(ApiError):
    """401: no bearer token, or one the server does not know."""


class Forbidden(ApiError):
    """403: the token's role or project scope does not allow the request."""


class NotFound(ApiError):
    """404: no such record, collection or route (another project's record answers as absent)."""


class MethodNotAllowed(ApiError):
    """405: the route exists but not with this method."""


class Conflict(ApiError):
    """409: a conflicting declaration, a transaction that kept losing to concurrent commits, a backup into a
    directory that is not empty, or a job queue call the job's state refuses (the subclasses below)."""


class StaleToken(Conflict):
    """409 ``/problems/stale-token``: the fencing token presented is not the job's current one: its lease
    expired and another worker claimed it since. Nothing was changed; the job is no longer this worker's.

    ``current`` is the job's token now, ``presented`` the one sent.
    """

    @property
    def current(self) -> int | None:
        return _int(self.problem.get("current"))

    @property
    def presented(self) -> int | None:
        return _int(self.problem.get("token"))


class InvalidTransition(Conflict):
    """409 ``/problems/invalid-transition``: the job's state does not allow the call (completing a job that
    is no longer running: its lease expired and it was rescued, or it was cancelled; retrying one that is not
    finished). Nothing was changed.

    ``from_state`` is the job's state, ``to_state`` the one the call asked for.
    """

    @property
    def from_state(self) -> str | None:
        value = self.problem.get("from")
        return value if isinstance(value, str) else None

    @property
    def to_state(self) -> str | None:
        value = self.problem.get("to")
        return value if isinstance(value, str) else None


class NotFinished(Conflict):
    """409 ``/problems/not-finished``: only a finished job (completed, discarded, cancelled) can be purged.
    ``state`` is the job's."""

    @property
    def state(self) -> str | None:
        value = self.problem.get("state")
        return value if isinstance(value, str) else None


class ChangesTrimmed(ApiError):
    """410: the changes after the requested sequence were already trimmed from the feed."""

    @property
    def trimmed_through(self) -> int | None:
        """The feed holds no change at or below this sequence."""
        value = self.problem.get("trimmed_through")
        return value if isinstance(value, int) else None


class PreconditionFailed(ApiError):
    """412: ``if_match``, create-only or a transaction's check did not hold.

    ``current_version`` is the record's version now, ``None`` if it does not exist.
    """

    @property
    def current_version(self) -> int | None:
        value = self.problem.get("current_version")
        return value if isinstance(value, int) else None


class ConcurrencyConflictError(PreconditionFailed):
    """The repository adapter's error for a failed ``expected_version`` (:mod:`cairn_client.repository`)."""


class PayloadTooLarge(ApiError):
    """413: the body is larger than the server's ``max_body_bytes``."""


class ServerError(ApiError):
    """5xx other than 503: the server or its storage failed."""


class Unavailable(ApiError):
    """503: shed at the concurrency limit, timed out, or too many open streams. ``retry_after`` is the
    server's ``Retry-After`` in seconds (``None`` if it gave none).

    A timed-out write may or may not have been applied; :attr:`applied_unknown` says so.
    """

    @property
    def applied_unknown(self) -> bool:
        """Whether a write answered by this may still have been applied (a timeout)."""
        return not _known_not_applied(self)


class Contended(Unavailable):
    """503 ``/problems/contended``: a claim lost every race to concurrent workers; nothing was claimed and
    the same request may be retried."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: ChangesTrimmed,
    412: PreconditionFailed,
    413: PayloadTooLarge,
}

# The 409s of the job queue, by problem type.
_CONFLICTS: dict[str, type[ApiError]] = {
    "stale-token": StaleToken,
    "invalid-transition": InvalidTransition,
    "not-finished": NotFinished,
}

# Details of the 503s the server sends before doing any work (load shedding, the engine's task limit, the
# stream limit): the request was not applied. Writes given up without writing are 503 ``contended``. A
# timeout's detail says the write may have been applied.
_SHED_MARKERS = (
    "concurrency limit",
    "max_concurrency tasks",
    "too many open change streams",
)


def _known_not_applied(e: ApiError) -> bool:
    if e.kind == "contended":
        return True
    return any(marker in e.detail for marker in _SHED_MARKERS)


def transient(e: CairnError) -> bool:
    """Whether ``e`` may pass by itself: no answer, 503, or another 5xx but 501 (not supported)."""
    if isinstance(e, TransportError):
        return True
    return isinstance(e, ApiError) and e.status in (500, 502, 503, 504)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date; ``None`` if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_problem(status: int, problem: dict[str, Any], retry_after: float | None = None) -> ApiError:
    """The exception for a problem document answered with ``status``."""
    cls: type[ApiError]
    kind = str(problem.get("type", "")).rsplit("/", 1)[-1]
    if status == 503:
        cls = Contended if kind == "contended" else Unavailable
    elif status == 409:
        cls = _CONFLICTS.get(kind, Conflict)
    elif status in _BY_STATUS:
        cls = _BY_STATUS[status]
    elif status >= 500:
        cls = ServerError
    else:
        cls = ApiError
    return cls(status, problem, retry_after=retry_after)


def error_from_response(response: httpx.Response) -> ApiError:
    """The exception for an error answer (its body read): the problem document if it is one, else a
    problem made of the status and the body's text."""
    problem: dict[str, Any]
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        problem = body
    else:
        text = response.text.strip() if response.content else ""
        problem = {"title": response.reason_phrase, "status": response.status_code, "detail": text or None}
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return error_from_problem(response.status_code, problem, retry_after)
