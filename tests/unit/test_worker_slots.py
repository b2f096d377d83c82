"""`PrioritySlots`: interactive first, arrival order within a priority, no slot leaks."""

from __future__ import annotations

import asyncio
import operator
from functools import partial

import pytest

from aivos.cloud.worker.slots import PrioritySlots
from tests.fixtures.wait import eventually


async def _take(
    slots: PrioritySlots, name: str, priority: str, order: list[str], release: asyncio.Event
) -> None:
    async with slots.hold(priority):
        order.append(name)
        await release.wait()


async def test_waiters_are_served_interactive_first_then_in_arrival_order() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    gates = {n: asyncio.Event() for n in "abcd"}
    tasks = []
    for name, priority in (
        ("a", "background"),
        ("b", "background"),
        ("c", "interactive"),
        ("d", "background"),
    ):
        tasks.append(asyncio.create_task(_take(slots, name, priority, order, gates[name])))
        await asyncio.sleep(0)
    for name in "acbd":
        served = partial(operator.contains, order, name)  # name in order
        await eventually(served, timeout=5, interval=0, what=f"{name} served")
        gates[name].set()
    await asyncio.gather(*tasks)
    assert order == ["a", "c", "b", "d"]
    assert slots.waiting == 0


async def test_a_cancelled_waiter_does_not_leak_the_slot() -> None:
    slots = PrioritySlots(1)
    release = asyncio.Event()
    order: list[str] = []
    holder = asyncio.create_task(_take(slots, "a", "interactive", order, release))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(_take(slots, "b", "interactive", order, asyncio.Event()))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    async with asyncio.timeout(1), slots.hold("background"):  # free again, no waiting
        pass
    assert order == ["a"]


async def test_unlimited_slots_never_wait() -> None:
    slots = PrioritySlots(None)
    async with asyncio.timeout(1), slots.hold("background"), slots.hold("background"):
        pass
