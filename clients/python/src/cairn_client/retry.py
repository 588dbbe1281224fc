"""When a request is sent again, and after how long.

A request is retried when the server answered 503 (shed, timed out, a contended claim) or when no answer
came, up to :attr:`RetryPolicy.retries` times, waiting the server's ``Retry-After`` when it gave one and an
exponential backoff with jitter otherwise.

A request whose outcome is unknown (the connection broke after it was sent, or a 503 for a timeout, after
which a write may or may not have been applied) is sent again only if sending it twice does no harm: reads,
``PUT`` and ``DELETE`` (HTTP idempotent: the second leaves the same state), declarations, and any write that
carries a precondition (``if_match``, create-only, a transaction whose every operation has one), which the
server checks again. A claim or a transaction without preconditions is then not retried: the error is
raised and the caller decides. A request known not to have been applied (the connection was never made, a
503 from load shedding or a contended claim) is always retried.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    ``retries``: attempts after the first (default 3; 0 never retries). ``backoff``: the first wait when the
    server gave no ``Retry-After`` (default 0.1 s), doubled each attempt up to ``max_backoff`` (default
    5 s), with up to 50 % jitter. ``max_retry_after``: the longest ``Retry-After`` honoured (default 30 s);
    a longer one is raised at once as :class:`~cairn_client.Unavailable`.
    """

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 5.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``attempt`` (0-based), or ``None`` not to retry."""
        if attempt >= self.retries:
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            return retry_after
        base = min(self.max_backoff, self.backoff * (2.0**attempt))
        return base * (0.5 + random.random() / 2)  # jitter


def as_policy(retries: int | RetryPolicy) -> RetryPolicy:
    if isinstance(retries, RetryPolicy):
        return retries
    if retries < 0:
        raise ValueError("retries must be at least 0")
    return RetryPolicy(retries=retries)
