"""One reply subscription for every request a router forwards.

A request forwarded to a model's workers gets the reply subject ``<inbox>.<n>``, under one
wildcard subscription ``<inbox>.*`` opened when the router starts; the replies (and the
NATS no-responders status) are dispatched by that last token to the attempt's `Mailbox`.
Per attempt this costs a dict entry, not a SUB and an UNSUB on the connection and a
subscription task in the client, and waiting for a reply is a future with a timer, not a
task per `asyncio.wait_for(queue.get())`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Mailbox", "ReplyInbox"]


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Mailbox:
    """The replies of one forwarded attempt, in arrival order."""

    __slots__ = ("subject", "_items", "_waiter")

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self._items: deque[Msg] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, msg: Msg) -> None:
        self._items.append(msg)
        if self._waiter is not None:
            _wake(self._waiter)

    async def get(self, timeout_s: float) -> Msg | None:
        """The next reply, or None when none arrived within `timeout_s`."""
        if not self._items and timeout_s > 0:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout_s, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self._items.popleft() if self._items else None


class ReplyInbox:
    """The router's wildcard reply subscription and the attempts waiting on it."""

    def __init__(self) -> None:
        self._boxes: dict[str, Mailbox] = {}
        self._ids = itertools.count(1)
        self._prefix = ""
        self._sub: Subscription | None = None

    async def start(self, nc: NATS) -> None:
        self._prefix = nc.new_inbox() + "."  # under the connection's inbox prefix
        self._sub = await nc.subscribe(self._prefix + "*", cb=self._dispatch)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def open(self) -> Mailbox:
        """A mailbox with its own reply subject; `close` it when the attempt ends."""
        box = Mailbox(f"{self._prefix}{next(self._ids)}")
        self._boxes[box.subject] = box
        return box

    def close(self, box: Mailbox) -> None:
        self._boxes.pop(box.subject, None)  # late replies to it are dropped

    def __len__(self) -> int:
        return len(self._boxes)

    async def _dispatch(self, msg: Msg) -> None:
        box = self._boxes.get(msg.subject)
        if box is not None:
            box.put(msg)
