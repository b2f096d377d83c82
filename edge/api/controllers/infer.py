"""`POST /v1/infer`: classify, route, answer (or stream the answer as Server-Sent Events)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.response import ServerSentEvent

from aivos.edge.agent import Agent
from aivos.edge.api.auth import caller_of, requires
from aivos.edge.api.convert import infer_response
from aivos.edge.api.schemas import InferRequest, InferResponse
from aivos.edge.api.sse import sse_events

__all__ = ["InferController"]


class _EventStream(ServerSentEvent):
    """SSE whose media type wins over the handler's JSON default."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = "text/event-stream"
        return super().to_asgi_response(*args, **kwargs)


class InferController(Controller):
    path = "/v1/infer"
    guards = [requires("client")]

    @post("/", status_code=200)
    async def infer(
        self, data: InferRequest, agent: Agent, request: Request[Any, Any, Any]
    ) -> InferResponse | ServerSentEvent:
        caller = caller_of(request)
        wants_sse = data.stream or "text/event-stream" in request.headers.get("accept", "")
        if wants_sse:
            # another token's session is a 404 before the stream starts, not an event
            await agent.pipeline.admit(data, caller)
            return _EventStream(sse_events(agent.pipeline.events(data, caller)))
        return infer_response(await agent.pipeline.infer(data, caller))
