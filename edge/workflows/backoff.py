"""Retry timing: capped exponential back-off with jitter, and what counts as retryable."""

from __future__ import annotations

import random

__all__ = ["backoff_delay", "retryable_status"]


def backoff_delay(
    attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """Delay before retry number `attempt` (1 = first retry): equal jitter over
    min(cap, base * 2**(attempt-1)), i.e. uniform in [half, full] of the exponential step."""
    step = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    r = (rng or random).random()
    return step / 2 + r * step / 2


def retryable_status(status: int) -> bool:
    """5xx and 429 may succeed later; other 4xx never will."""
    return status == 429 or 500 <= status <= 599
