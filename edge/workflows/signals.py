"""`RunSignals`: in-memory events between a run's task and the callers waiting on it.

`paused(run)` is set while the run waits for an operator (so `wait` can return a handle);
`approval(run)` is set when an operator decides (so the waiting step reads the decision).
Both are forgotten when the run's task ends; the journal holds the durable state.
"""

from __future__ import annotations

import asyncio

__all__ = ["RunSignals"]


class RunSignals:
    def __init__(self) -> None:
        self._paused: dict[str, asyncio.Event] = {}
        self._approval: dict[str, asyncio.Event] = {}

    def paused(self, run_id: str) -> asyncio.Event:
        return self._paused.setdefault(run_id, asyncio.Event())

    def resumed(self, run_id: str) -> None:
        self._paused.pop(run_id, None)

    def approval(self, run_id: str) -> asyncio.Event:
        return self._approval.setdefault(run_id, asyncio.Event())

    def approval_waiter(self, run_id: str) -> asyncio.Event | None:
        """The approval event of a run whose task is waiting for it, if any."""
        return self._approval.get(run_id)

    def forget(self, run_id: str) -> None:
        self._approval.pop(run_id, None)
        self._paused.pop(run_id, None)
