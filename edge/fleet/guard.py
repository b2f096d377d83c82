"""Live-health guard after a bundle swap: decide whether the new bundle must be rolled back.

The baseline is the previous bundle's traffic just before the swap; the guard compares
the new bundle's traffic since the swap against it (see `GuardOptions`)."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from aivos.edge.fleet.options import GuardOptions
from aivos.edge.stats import RollingStats, StatsSnapshot

__all__ = ["GuardVerdict", "HealthGuard", "judge"]

log = logging.getLogger(__name__)


class GuardVerdict(msgspec.Struct, frozen=True):
    breached: bool
    reason: str
    requests: int


def judge(options: GuardOptions, baseline: StatsSnapshot, live: StatsSnapshot) -> GuardVerdict:
    """One check: breached (with the reason), or not (yet)."""
    n = live.requests + live.errors
    if n < options.min_requests:
        return GuardVerdict(False, f"{n} < {options.min_requests} requests", n)
    if live.error_rate > options.max_error_rate:
        return GuardVerdict(
            True,
            f"error rate {live.error_rate:.3f} > {options.max_error_rate:.3f} over {n} requests",
            n,
        )
    esc = live.escalation_rate
    if esc > options.max_escalation_rate:
        return GuardVerdict(
            True,
            f"escalation rate {esc:.3f} > {options.max_escalation_rate:.3f} over {n} requests",
            n,
        )
    if baseline.requests >= options.min_requests:
        base = baseline.escalation_rate
        limit = max(base * options.max_escalation_ratio, base + options.min_escalation_delta)
        if esc > limit:
            return GuardVerdict(
                True,
                f"escalation rate {esc:.3f} > {limit:.3f} (previous bundle {base:.3f}) "
                f"over {n} requests",
                n,
            )
    return GuardVerdict(False, "healthy", n)


class HealthGuard:
    def __init__(self, stats: RollingStats, options: GuardOptions) -> None:
        self.stats = stats
        self.options = options

    def baseline(self) -> StatsSnapshot:
        """The live bundle's recent traffic; take it just before a swap."""
        return self.stats.snapshot(self.options.baseline_window_s)

    async def watch(self, baseline: StatsSnapshot, since: float | None = None) -> GuardVerdict:
        """Check every `check_interval_s` for `window_s`; return at the first breach, or
        the final verdict (not breached) when the window closes."""
        opts = self.options
        since = time.monotonic() if since is None else since
        deadline = since + opts.window_s
        verdict = GuardVerdict(False, "no traffic", 0)
        while True:
            await asyncio.sleep(min(opts.check_interval_s, max(0.0, deadline - time.monotonic())))
            live = self.stats.snapshot(opts.window_s, since=since)
            verdict = judge(opts, baseline, live)
            log.debug("guard check: %s (live %s, baseline %s)", verdict, live, baseline)
            if verdict.breached:
                log.warning("bundle health guard breached: %s", verdict.reason)
                return verdict
            if time.monotonic() >= deadline:
                return verdict
