"""Rolling request statistics for heartbeats and health guards (rate, decision mix, p50/p99)."""

from __future__ import annotations

import time
from collections import deque

import msgspec
import numpy as np

__all__ = ["RollingStats", "StatsSnapshot"]


class StatsSnapshot(msgspec.Struct, frozen=True):
    window_s: float
    requests: int
    rate_per_s: float
    errors: int
    decisions: dict[str, int]
    p50_ms: float
    p99_ms: float

    @property
    def escalation_rate(self) -> float:
        return self.decisions.get("escalate", 0) / self.requests if self.requests else 0.0

    @property
    def error_rate(self) -> float:
        total = self.requests + self.errors
        return self.errors / total if total else 0.0


class RollingStats:
    def __init__(self, maxlen: int = 50_000) -> None:
        self._events: deque[tuple[float, str, float]] = deque(maxlen=maxlen)
        self._errors: deque[float] = deque(maxlen=maxlen)

    def record(self, decision: str, latency_s: float) -> None:
        self._events.append((time.monotonic(), decision, latency_s))

    def record_error(self) -> None:
        self._errors.append(time.monotonic())

    def snapshot(self, window_s: float = 60.0, since: float | None = None) -> StatsSnapshot:
        now = time.monotonic()
        start = max(now - window_s, since or 0.0)
        events = [e for e in list(self._events) if e[0] >= start]
        errors = sum(1 for t in list(self._errors) if t >= start)
        decisions: dict[str, int] = {}
        for _, decision, _ in events:
            decisions[decision] = decisions.get(decision, 0) + 1
        if events:
            lat = np.fromiter((e[2] for e in events), dtype=np.float64) * 1000
            p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
        else:
            p50 = p99 = 0.0
        span = max(1e-9, min(window_s, now - start))
        return StatsSnapshot(
            window_s=round(span, 3),
            requests=len(events),
            rate_per_s=round(len(events) / span, 3),
            errors=errors,
            decisions=decisions,
            p50_ms=round(p50, 3),
            p99_ms=round(p99, 3),
        )
