"""Stopping a NATS service gracefully: the worker and the model router drain the same way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from nats.aio.subscription import Subscription

__all__ = ["drain_in_flight"]


async def drain_in_flight(
    subs: Iterable[Subscription], tasks: Iterable[asyncio.Task[object]], grace_s: float
) -> None:
    """Stop taking requests (unsubscribe), let in-flight `tasks` finish, and cancel what is
    still running after `grace_s`."""
    for sub in subs:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    running = set(tasks)
    if not running:
        return
    _, pending = await asyncio.wait(running, timeout=grace_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
