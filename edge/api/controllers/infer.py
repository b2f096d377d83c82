"""`POST /v1/infer`: classify, route, answer (or stream the answer as Server-Sent Events)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)
from litestar.response import ServerSentEvent

from aivos.edge.agent import Agent
from aivos.edge.api.auth import caller_of, require_scope
from aivos.edge.api.convert import infer_response
from aivos.edge.api.responses import raises
from aivos.edge.api.schemas import InferRequest, InferResponse, documented_body
from aivos.edge.api.sse import sse_events
from aivos.shared.errors import AivosError, DiskFull, InvalidInput, NotFound, TextTooLong

__all__ = ["InferController"]


class _EventStream(ServerSentEvent):
    """SSE whose media type wins over the handler's JSON default."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = "text/event-stream"
        return super().to_asgi_response(*args, **kwargs)


@dataclass
class _StreamingOperation(Operation):
    """The operation's 200 also comes as `text/event-stream` (`"stream": true` or
    `Accept: text/event-stream`): events `meta`, `token`..., then `done` or `error`."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            # the JSON answer is an InferResponse; Litestar adds an empty alternative for
            # the `ServerSentEvent` return type, which every body would match as well
            answer = ok.content.get("application/json")
            union = answer.schema if answer is not None else None
            if answer is not None and isinstance(union, Schema) and union.one_of:
                refs = [s for s in union.one_of if isinstance(s, Reference)]
                if len(refs) == 1:
                    answer.schema = refs[0]
            # OpenAPI describes each event of a stream (its `event` and `data` fields)
            ok.content["text/event-stream"] = OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.OBJECT,
                    description=_SSE_EVENTS,
                    required=["event", "data"],
                    properties={
                        "event": Schema(
                            type=OpenAPIType.STRING,
                            enum=["meta", "token", "done", "error"],
                        ),
                        "data": Schema(
                            type=OpenAPIType.STRING, description="the event's JSON payload"
                        ),
                        "id": Schema(type=OpenAPIType.STRING),
                        "retry": Schema(type=OpenAPIType.INTEGER),
                    },
                )
            )


_SSE_EVENTS = "Server-Sent Events: meta, token..., then done (the JSON answer) or error"


class InferController(Controller):
    """Checks the `client` scope inline (`require_scope`) instead of with the `requires`
    guard: the busiest route is spared a copy of its handler per request."""

    path = "/v1/infer"
    opt = raises(InvalidInput, TextTooLong, NotFound, DiskFull, AivosError)

    @post("/", status_code=200, operation_class=_StreamingOperation)
    async def infer(
        self,
        data: Annotated[InferRequest, documented_body(("text",))],
        agent: Agent,
        request: Request[Any, Any, Any],
    ) -> InferResponse | ServerSentEvent:
        require_scope(request, "client")
        caller = caller_of(request)
        wants_sse = data.stream or "text/event-stream" in request.headers.get("accept", "")
        if wants_sse:
            # another token's session is a 404 before the stream starts, not an event
            await agent.pipeline.admit(data, caller)
            return _EventStream(sse_events(agent.pipeline.events(data, caller)))
        return infer_response(await agent.pipeline.infer(data, caller))
