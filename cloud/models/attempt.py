"""One request forwarded to one catalogue model, and the replies relayed on its way back.

An `Attempt`'s replies are handled as they arrive, in the callback of the router's reply
subscription (`cloud.models.replies`): `Accepted` is noted, `Token`s and the `Done` are
published to the edge from there, and the attempt's end is handed to the router's
`on_end` callback at once (no future, no task woken): on the common path, a `Done`, the
router counts it right there and the request costs no task at all. When the worker sent
the `Done` to the edge itself, its notice (`on_delivered`) ends the attempt the same way.
Only a request that must move down the chain gets one (benchmarks/model_routing.py).
Time limits are one timer per attempt, not a timeout per wait.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg

from aivos.cloud.worker.catalogue import ChainLink
from aivos.cloud.worker.notices import NOTICE_GRACE_S, Delivered
from aivos.cloud.worker.service import PROMPT_TOKENS_HEADER
from aivos.shared.messages import (
    Accepted,
    Done,
    Error,
    GenerateRequest,
    Reply,
    Saturated,
    Token,
    decode_reply,
)

__all__ = ["ACCEPTED_GRACE_S", "Attempt", "Exchange", "OnEnd", "Outcome", "Send"]

ACCEPTED_GRACE_S = 0.25  # wait this long past the budget for the worker's own deadline error

Send = Callable[[str, "Reply | bytes"], Awaitable[None]]


class Exchange:
    """One edge request in flight: where to reply, and what was already relayed."""

    __slots__ = (
        "request",
        "chain",
        "data",
        "reply_to",
        "headers",
        "intent",
        "direct",
        "now",
        "accepted_sent",
        "tokens_sent",
        "reasons",
        "saturated",
    )

    def __init__(
        self,
        request: GenerateRequest,
        chain: tuple[ChainLink, ...],
        data: bytes | None,
        reply_to: str,
        headers: dict[str, str] | None,
        intent: str | None,
    ) -> None:
        self.request = request
        self.chain = chain  # resolved when the request came (a new catalogue: later ones)
        self.data = data  # the request's bytes when they can be forwarded as they are
        self.reply_to = reply_to
        self.headers = headers  # forwarded to the workers (the edge's, and the router's)
        self.intent = intent
        # "<edge inbox> <notices subject>": the workers answer the edge themselves
        # (router.py); "" when the router relays their answers
        self.direct = ""
        self.now = False  # their notices come ahead of the answers (a site under a quota)
        self.accepted_sent = False
        self.tokens_sent = 0
        self.reasons: list[str] = []  # why links were passed over, for the final error
        self.saturated: list[Outcome] = []


class Outcome(msgspec.Struct):
    """How an attempt ended. ``lost``: no reply in time (or an unreadable one), `code` says
    which; the router decides what the edge is told."""

    kind: str  # "done", "saturated", "failed", "committed", "lost"
    code: str = ""
    message: str = ""
    retry_after_ms: int = 0
    version: str = ""  # done: the version that answered, its generated tokens, its time
    n_tokens: int = 0
    took_s: float = 0.0
    prompt_tokens: int = 0  # done: as the model's tokenizer counted them (0: not known)


OnEnd = Callable[["Attempt", Outcome], None]


class Attempt:
    """The request sent to `link`'s workers; its `Outcome` goes to `on_end`, once."""

    __slots__ = (
        "ex",
        "link",
        "index",
        "subject",
        "done",
        "_on_end",
        "_send",
        "_start",
        "_deadline",
        "_accepted",
        "_timer",
    )

    def __init__(
        self,
        ex: Exchange,
        link: ChainLink,
        index: int,
        *,
        send: Send,
        on_end: OnEnd,
        accept_timeout_s: float,
        budget_ms: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.ex = ex
        self.link = link
        self.index = index  # position in the class's chain
        self.subject = ""  # its reply subject, set by the router
        self.done = False
        self._on_end = on_end
        self._send = send
        self._start = time.monotonic()
        self._deadline = self._start + budget_ms / 1000.0  # inf without a deadline
        self._accepted = False
        # a quick answer sent straight to the edge is heard of in a batch of notices: its
        # wait may end a little past the budget
        grace = NOTICE_GRACE_S if ex.direct else 0.0  # (a streamed answer is relayed)
        first = min(accept_timeout_s, budget_ms / 1000.0 + grace)
        self._timer: asyncio.TimerHandle | None = loop.call_later(first, self._on_timer)

    def end(self, outcome: Outcome) -> None:
        if self.done:
            return
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_end(self, outcome)

    def _on_timer(self) -> None:
        """The accept wait or the budget ran out (or the accept wait passed, accepted)."""
        self._timer = None
        if self.done:
            return
        if not self._accepted:
            self.end(Outcome("lost", code="no_accept"))
            return
        # an accepted request gets a short grace past its budget for the worker's own
        # `deadline_exceeded` (busy, not broken); a dead worker stays silent -> "timeout"
        left = self._deadline + ACCEPTED_GRACE_S - time.monotonic()
        if left <= 0:
            self.end(Outcome("lost", code="timeout"))
        elif not math.isinf(left):
            self._timer = asyncio.get_running_loop().call_later(left, self._on_timer)

    async def on_reply(self, msg: Msg) -> None:
        """One worker reply (the reply subscription's callback)."""
        if self.done:
            return
        outcome = await self._relay(msg)
        if outcome is not None:
            self.end(outcome)

    async def _relay(self, msg: Msg) -> Outcome | None:
        """Relay one reply to the edge, or say how the attempt ended (None: it goes on)."""
        ex = self.ex
        if msg.headers and msg.headers.get("Status") == "503":
            return Outcome("failed", code="no_responders")
        try:
            reply = decode_reply(msg.data)
        except msgspec.MsgspecError:
            return Outcome("lost", code="bad_reply")
        if reply.request_id != ex.request.request_id:
            return None
        if isinstance(reply, Accepted):
            self._accepted = True
            # relayed for a streamed answer only: an edge waiting for Done ignores it, and
            # the hop's cost is mostly its messages (benchmarks/model_routing.py)
            if ex.request.stream and not ex.accepted_sent:
                ex.accepted_sent = True
                await self._send(ex.reply_to, msg.data)
            return None
        if isinstance(reply, Token):
            self._accepted = True
            ex.tokens_sent += 1
            await self._send(ex.reply_to, msg.data)
            return None
        if isinstance(reply, Done):
            return await self._finish(reply, msg)
        if isinstance(reply, Saturated):
            return Outcome("saturated", retry_after_ms=reply.retry_after_ms)
        assert isinstance(reply, Error)
        if ex.tokens_sent:
            await self._send(ex.reply_to, msg.data)
            return Outcome("committed", code=reply.code)
        return Outcome("failed", code=reply.code, message=reply.message)

    def on_delivered(self, notice: Delivered) -> None:
        """The worker sent its `Done` to the edge itself (`cloud.worker.notices`): the
        attempt answered. Its time is the notice's arrival less its wait in the batch."""
        if self.done:
            return
        took = time.monotonic() - self._start - notice.held_ms / 1000.0
        self.end(
            Outcome(
                "done",
                version=notice.version or self.link.entry.version,
                n_tokens=notice.n_tokens,
                took_s=max(0.0, took),
                prompt_tokens=notice.prompt_tokens,
            )
        )

    async def _finish(self, done: Done, msg: Msg) -> Outcome:
        """Relay the `Done`, naming the model and version (counted by the router)."""
        ex, link = self.ex, self.link
        data = msg.data
        version = done.version or link.entry.version
        if ex.request.model_class is None or (link.primary and done.model == link.model):
            # the default path (no model named), or the primary's worker named itself: the
            # worker's Done as it is, not decoded and encoded again
            await self._send(ex.reply_to, data)
        else:
            stamped = msgspec.structs.replace(
                done, model=link.model, version=version, fallback=not link.primary
            )
            await self._send(ex.reply_to, stamped)
        took = time.monotonic() - self._start
        counted = msg.headers.get(PROMPT_TOKENS_HEADER) if msg.headers else None
        return Outcome(
            "done",
            version=version,
            n_tokens=done.n_tokens,
            took_s=took,
            prompt_tokens=int(counted) if counted and counted.isdigit() else 0,
        )

    async def lost(self, code: str) -> Outcome:
        """No (readable) reply in time: a failure, or, once tokens reached the edge, an
        error the edge is told about (the answer is committed to this model)."""
        ex = self.ex
        if not ex.tokens_sent:
            return Outcome("failed", code=code)
        message = f"model stopped answering mid-stream ({code})"
        await self._send(
            ex.reply_to,
            Error(ex.request.request_id, code="deadline_exceeded", message=message),
        )
        return Outcome("committed", code=code)
