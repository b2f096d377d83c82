"""The streamed answer as Server-Sent Events: `meta`, `token`..., `done` (the body
`/v1/infer` returns), or `error` when the query's text is rejected."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec
from litestar.response import ServerSentEventMessage

from aivos.edge.results import StreamDone, StreamEvent, StreamMeta, StreamToken
from aivos.shared.errors import TextRejected

__all__ = ["sse_events"]

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
        except TextRejected as exc:
            yield _message("error", {"error": {"code": exc.code, "message": str(exc)}})
