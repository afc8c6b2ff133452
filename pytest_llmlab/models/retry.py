"""When and how long to wait before trying a request again.

Only answers that say "try later" are retried: HTTP 429 (rate limited), 503
(unavailable) and 529 (Anthropic's "overloaded"), and a connection reset before the
first byte of the answer. Never a request whose answer had started: a retried
generation would be a different sample, and its first tokens were already seen.

The wait is exponential with full jitter (AWS's "Exponential Backoff And Jitter":
uniform between 0 and ``base x 2^(retry - 1)``, at most `MAX_DELAY_S`), or the server's
``Retry-After`` (seconds or an HTTP date) when it sends one; a wait that would pass the
generation's deadline is not taken, and the error is raised instead, saying so.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "CLOUD_RETRIES",
    "MAX_DELAY_S",
    "RETRY_STATUSES",
    "RetryPolicy",
    "retry_after_s",
]

#: Statuses that mean "try again later".
RETRY_STATUSES = frozenset({429, 503, 529})
#: Retries a cloud provider gets with ``--llm-retries=auto`` (local backends get none:
#: a local server that refuses is broken, not busy).
CLOUD_RETRIES = 3
#: The longest wait between two attempts, unless the server's Retry-After says more.
MAX_DELAY_S = 30.0


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait ``Retry-After`` asks for, in seconds (>= 0), or None without one (or
    with one that does not parse)."""
    value = headers.get("retry-after")
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
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry, and the base of the backoff."""

    retries: int = 0
    base_delay_s: float = 0.5

    def delay_s(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """The wait before retry number ``retry`` (1-based)."""
        if retry_after is not None:
            return retry_after
        return rng.uniform(0.0, min(MAX_DELAY_S, self.base_delay_s * 2 ** (retry - 1)))
