"""Per-token request rate limiting (token bucket, in memory)."""

from __future__ import annotations

import time

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, rate_per_second: float, burst: int) -> None:
        self.rate = rate_per_second
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last)
        self.rejected = 0

    def allow(self, key: str) -> float:
        """0.0 when allowed, else the seconds to wait before retrying."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        self.rejected += 1
        return (1.0 - tokens) / self.rate
