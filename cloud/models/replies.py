"""One reply subscription for every request a router forwards.

A request forwarded to a model's workers gets the reply subject ``<inbox>.<n>``, under one
wildcard subscription ``<inbox>.*`` opened when the router starts; each reply (and the NATS
no-responders status) is handed, by that last token, to the handler its attempt registered
(`cloud.models.attempt.Attempt.on_reply`), in the subscription's callback. Per attempt
this costs a dict entry, not a SUB and an UNSUB on the connection and a subscription task
in the client, and a reply wakes no other task.

The same subscription takes the workers' batched notices of answers they sent straight to
the edge (`cloud.worker.notices`) on ``<inbox>.n`` (`notices`): each `Delivered` goes to
the `on_delivered` of the attempt its reply subject names.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Protocol

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from aivos.cloud.worker.notices import Delivered, decode_notices

__all__ = ["Receiver", "ReplyInbox"]

log = logging.getLogger(__name__)


class Receiver(Protocol):
    """What waits on a reply subject (`cloud.models.attempt.Attempt`)."""

    async def on_reply(self, msg: Msg) -> None: ...

    def on_delivered(self, notice: Delivered) -> None: ...


class ReplyInbox:
    """The router's wildcard reply subscription and the attempts waiting on it."""

    def __init__(self) -> None:
        self._handlers: dict[str, Receiver] = {}
        self._ids = itertools.count(1)
        self._prefix = ""
        self.notices = ""  # where workers send their batched `Delivered` notices
        self._sub: Subscription | None = None

    async def start(self, nc: NATS) -> None:
        self._prefix = nc.new_inbox() + "."  # under the connection's inbox prefix
        self.notices = self._prefix + "n"  # never an attempt's (those are numbers)
        self._sub = await nc.subscribe(self._prefix + "*", cb=self._dispatch)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def open(self, receiver: Receiver) -> str:
        """A reply subject of its own whose messages go to `receiver`; `close` it when the
        attempt ends."""
        subject = f"{self._prefix}{next(self._ids)}"
        self._handlers[subject] = receiver
        return subject

    def close(self, subject: str) -> None:
        self._handlers.pop(subject, None)  # late replies to it are dropped

    def __len__(self) -> int:
        return len(self._handlers)

    async def _dispatch(self, msg: Msg) -> None:
        subject = msg.subject
        receiver = self._handlers.get(subject)
        if receiver is not None:
            await receiver.on_reply(msg)
        elif subject == self.notices:
            try:
                notices = decode_notices(msg.data)
            except msgspec.MsgspecError:
                log.warning("unreadable notices from a worker")
                return
            handlers = self._handlers
            for notice in notices:
                receiver = handlers.get(notice.reply)
                if receiver is not None:  # None: the attempt already ended (timed out)
                    receiver.on_delivered(notice)
