"""Request rate limiting: a token bucket per key (a token's name, a client address), in memory.

Memory is bounded: a bucket that has refilled to `burst` is the same as no bucket and is
dropped, and at most `max_keys` buckets are kept (the least recently used goes first), so a
flood from ever-new (spoofed) addresses cannot grow the table without limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate_per_second
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        # key -> (tokens, last); dict order = least recently used first
        self._buckets: dict[str, tuple[float, float]] = {}
        self.rejected = 0

    def __len__(self) -> int:
        """Buckets held now."""
        return len(self._buckets)

    def allow(self, key: str) -> float:
        """0.0 when allowed, else the seconds to wait before retrying."""
        now = self._clock()
        state = self._buckets.pop(key, None)
        self._evict(now)
        tokens, last = state if state is not None else (self.burst, now)
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        self.rejected += 1
        return (1.0 - tokens) / self.rate

    def _evict(self, now: float) -> None:
        """Drop refilled buckets from the least recently used end, and any over `max_keys`
        (room is left for the key being charged)."""
        while self._buckets:
            key = next(iter(self._buckets))
            tokens, last = self._buckets[key]
            full = tokens + (now - last) * self.rate >= self.burst
            if not full and len(self._buckets) < self.max_keys:
                return
            del self._buckets[key]
