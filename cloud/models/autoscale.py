"""When to grow or shrink a worker pool: a pure decision on queue depth, saturation and p95.

Grow when, for ``up_after_s`` on end, requests wait for a slot (``waiting`` per worker at
or above ``queue_up``), or workers answered `Saturated`, or the p95 is above ``p95_up_ms``.
Shrink when, for ``down_after_s`` on end, nothing waits, nothing was turned away, the
in-flight requests would fit in one worker fewer at ``down_utilisation`` of its places, and
the p95 is below ``p95_down_ratio`` x ``p95_up_ms``. The different thresholds and the
longer shrink window are the hysteresis: a pool does not flap at a boundary. After any
change the pool holds for ``cooldown_s`` (new workers need time to load their model).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from aivos.shared.errors import ConfigError

__all__ = ["ScalePolicy", "PoolSignals", "Autoscaler"]


class ScalePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_workers: int = 1
    max_workers: int = 4
    queue_up: float = 1.0
    p95_up_ms: float | None = None
    p95_down_ratio: float = 0.5
    down_utilisation: float = 0.5
    up_after_s: float = 1.0
    down_after_s: float = 10.0
    cooldown_s: float = 3.0

    def validate(self) -> ScalePolicy:
        if not 1 <= self.min_workers <= self.max_workers:
            raise ConfigError("pool", "need 1 <= min_workers <= max_workers")
        if self.queue_up <= 0 or not 0 < self.down_utilisation <= 1:
            raise ConfigError("pool", "queue_up > 0 and 0 < down_utilisation <= 1")
        return self


class PoolSignals(msgspec.Struct, frozen=True):
    workers: int  # live workers reporting
    capacity: int  # in-flight places per worker
    in_flight: int
    waiting: int
    rejected: int  # Saturated answers since the previous decision
    p95_ms: float  # 0 when nothing was served recently


class Autoscaler:
    def __init__(self, policy: ScalePolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy.validate()
        self._clock = clock
        self._up_since: float | None = None
        self._down_since: float | None = None
        self._changed_at: float | None = None

    def wants_up(self, s: PoolSignals) -> bool:
        p = self.policy
        if s.rejected > 0 or s.waiting >= p.queue_up * max(1, s.workers):
            return True
        # p95 is over the workers' last 60 s: an idle pool's figure is history, not load
        return p.p95_up_ms is not None and s.in_flight > 0 and s.p95_ms > p.p95_up_ms

    def wants_down(self, s: PoolSignals) -> bool:
        p = self.policy
        if s.workers <= 1 or s.waiting or s.rejected:
            return False
        if s.in_flight > (s.workers - 1) * s.capacity * p.down_utilisation:
            return False
        if p.p95_up_ms is None or s.in_flight == 0:  # idle: a stale p95 must not pin the size
            return True
        return s.p95_ms < p.p95_up_ms * p.p95_down_ratio

    def decide(self, desired: int, s: PoolSignals) -> int:
        """The new desired size, given the current one and the latest signals."""
        p = self.policy
        now = self._clock()
        up, down = self.wants_up(s), self.wants_down(s)
        if not up:
            self._up_since = None
        elif self._up_since is None:
            self._up_since = now
        if not down:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = now
        clamped = min(max(desired, p.min_workers), p.max_workers)
        if clamped != desired:
            return self._changed(clamped, now)
        if self._changed_at is not None and now - self._changed_at < p.cooldown_s:
            return desired
        held_up = now - self._up_since if self._up_since is not None else -1.0
        held_down = now - self._down_since if self._down_since is not None else -1.0
        if held_up >= p.up_after_s and desired < p.max_workers:
            return self._changed(desired + 1, now)
        if held_down >= p.down_after_s and desired > p.min_workers:
            return self._changed(desired - 1, now)
        return desired

    def _changed(self, size: int, now: float) -> int:
        self._changed_at = now
        self._up_since = self._down_since = None
        return size
