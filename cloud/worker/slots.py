"""Generation slots handed out by priority: interactive requests before background ones.

A llama.cpp model runs one generation at a time, so requests queue inside a worker. Without
an order, a backlog of escalations completed after a WAN outage (background) would sit in
front of a user waiting on `/v1/infer` (interactive). `PrioritySlots.hold` grants a free
slot at once, else queues the caller: interactive first, then in arrival order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["PrioritySlots", "PRIORITY_RANK"]

PRIORITY_RANK = {"interactive": 0, "background": 1}


class PrioritySlots:
    """`size` slots (None = unlimited, `hold` never waits)."""

    def __init__(self, size: int | None) -> None:
        if size is not None and size < 1:
            raise ValueError("size must be >= 1 or None")
        self.size = size
        self._free = size or 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, fut in self._waiters if not fut.done())

    @asynccontextmanager
    async def hold(self, priority: str) -> AsyncIterator[None]:
        if self.size is None:
            yield
            return
        await self._acquire(PRIORITY_RANK.get(priority, 0))
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, rank: int) -> None:
        if self._free > 0:  # a freed slot goes straight to a live waiter, so none is waiting
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (rank, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # the slot was handed over just as we were cancelled
            else:
                fut.cancel()  # stays in the heap; _release skips it
            raise

    def _release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next waiter
                return
        self._free += 1
