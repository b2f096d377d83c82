"""One reply subscription for every request a router forwards.

A request forwarded to a model's workers gets the reply subject ``<inbox>.<n>``, under one
wildcard subscription ``<inbox>.*`` opened when the router starts; each reply (and the NATS
no-responders status) is handed, by that last token, to the handler its attempt registered
(`cloud.models.attempt.Attempt.on_reply`), in the subscription's callback. Per attempt
this costs a dict entry, not a SUB and an UNSUB on the connection and a subscription task
in the client, and a reply wakes no other task.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["ReplyHandler", "ReplyInbox"]

ReplyHandler = Callable[[Msg], Awaitable[None]]


class ReplyInbox:
    """The router's wildcard reply subscription and the attempts waiting on it."""

    def __init__(self) -> None:
        self._handlers: dict[str, ReplyHandler] = {}
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

    def open(self, handler: ReplyHandler) -> str:
        """A reply subject of its own whose messages go to `handler`; `close` it when the
        attempt ends."""
        subject = f"{self._prefix}{next(self._ids)}"
        self._handlers[subject] = handler
        return subject

    def close(self, subject: str) -> None:
        self._handlers.pop(subject, None)  # late replies to it are dropped

    def __len__(self) -> int:
        return len(self._handlers)

    async def _dispatch(self, msg: Msg) -> None:
        handler = self._handlers.get(msg.subject)
        if handler is not None:
            await handler(msg)
