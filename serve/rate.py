"""A per-key write rate limit (token bucket), so one client cannot monopolise the one writer.

Reads are not limited here: Serve's ``max_queued_requests`` sheds read overload with 503 and
``Retry-After``. Writes go through one lock in one writer, so a burst of enrollments from one
key would stall everyone else's; each key gets ``rate_per_min`` writes a minute with bursts of
``burst``, and the rest are answered 429 with the wait in ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import time


class RateLimit:
    """Token buckets per key (keys are held hashed; this replica's view of its own traffic).

    Args:
        rate_per_min: sustained writes per minute per key; 0 = no limit.
        burst: writes a key may make at once.
    """

    def __init__(self, rate_per_min: float, burst: int) -> None:
        if rate_per_min < 0 or burst < 1:
            raise ValueError("rate_per_min >= 0 and burst >= 1 are required")
        self.rate = rate_per_min / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key digest -> (tokens, at)

    def take(self, key: str | None, now: float | None = None) -> float:
        """Takes one write for ``key``; returns 0 when allowed, else the seconds until one is."""
        if self.rate == 0:
            return 0.0
        now = time.monotonic() if now is None else now
        digest = hashlib.sha256((key or "").encode()).hexdigest()[:16]
        tokens, at = self._buckets.get(digest, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[digest] = (tokens - 1.0, now)
            return 0.0
        self._buckets[digest] = (tokens, now)
        return (1.0 - tokens) / self.rate
