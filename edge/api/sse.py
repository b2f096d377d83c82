"""The streamed answer as Server-Sent Events: `meta`, `token`..., `done` (the body
`/v1/infer` returns), or an `error` event whenever the answer cannot be finished: the text
is rejected, or the answer cannot be recorded (a full disk, a full outbox: the same code as
the plain endpoint's error body). The status line (200) was sent with the first event, so a
stream never ends silently: its last event is `done` or `error`."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec
from litestar.response import ServerSentEventMessage

from aivos.edge.results import StreamDone, StreamEvent, StreamMeta, StreamToken
from aivos.shared.errors import AivosError

__all__ = ["sse_events"]

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


def _message(event: str, data: Any) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=_encode(data).decode())


def _name(event: StreamEvent) -> str:
    if isinstance(event, StreamToken):
        return "token"
    if isinstance(event, StreamMeta):
        return "meta"
    return "done"


async def sse_events(
    events: AsyncGenerator[StreamEvent, None],
) -> AsyncIterator[ServerSentEventMessage]:
    async with aclosing(events):
        try:
            async for event in events:
                data = event.result if isinstance(event, StreamDone) else event
                yield _message(_name(event), data)
        except AivosError as exc:
            yield _error(exc.code, str(exc))
        except Exception:
            log.exception("streamed answer failed")
            yield _error("internal_error", "internal error; see the agent log")


def _error(code: str, message: str) -> ServerSentEventMessage:
    return _message("error", {"error": {"code": code, "message": message}})
