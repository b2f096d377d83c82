"""A circuit breaker per model: stop sending to a model that keeps failing, for a while.

closed -> (``failures`` consecutive failures) -> open -> (``cooldown_s``) -> half-open:
one trial request; its success closes the breaker, its failure opens it again.
Saturation is not a failure: a busy model is healthy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker", "BreakerState"]

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        failures: int = 3,
        cooldown_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False  # a half-open trial is in flight
        self.opened = 0  # how many times it opened (for metrics)

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a request be sent now? In half-open state, only one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False

    def failure(self) -> None:
        self._trial = False
        if self._opened_at is not None:  # the trial failed: open for another cooldown
            self._opened_at = self._clock()
            self.opened += 1
            return
        self._failures += 1
        if self._failures >= self.threshold:
            self._opened_at = self._clock()
            self.opened += 1

    def release(self) -> None:
        """A trial that ended neither way (saturated, cancelled): let another one try."""
        self._trial = False
