"""`WritePipeline`: writes a run submits without waiting for them, awaited when it matters.

A step's outcome does not need to be on disk before the next pure step runs, only before
the run's next side effect, pause or answer. Submitting it and awaiting later lets the
store's writer commit many runs' steps in one group transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

__all__ = ["WritePipeline"]


class WritePipeline:
    def __init__(self) -> None:
        self._pending: dict[str, list[asyncio.Future[Any]]] = {}

    def submit(self, run_id: str, write: Awaitable[Any]) -> None:
        """Start `write` (a store transaction) now; `sync` waits for it."""
        self._pending.setdefault(run_id, []).append(asyncio.ensure_future(write))

    async def ordered(self, run_id: str) -> None:
        """Let this run's submitted writes reach the writer queue before a write that the
        caller awaits (tasks created earlier run their first step before we resume)."""
        if self._pending.get(run_id):
            await asyncio.sleep(0)

    async def sync(self, run_id: str) -> None:
        """Wait until this run's submitted writes are committed (raising their error)."""
        pending = self._pending.pop(run_id, [])
        if pending:
            await asyncio.gather(*pending)

    async def settle(self, run_id: str) -> None:
        """Let this run's submitted writes land, ignoring their errors."""
        await asyncio.gather(*self._pending.pop(run_id, []), return_exceptions=True)

    async def settle_all(self) -> None:
        pending = [f for futures in self._pending.values() for f in futures]
        self._pending.clear()
        await asyncio.gather(*pending, return_exceptions=True)
