"""`POST /v1/feedback`: rate an answered request; votes re-rank passages per intent."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, post

from aivos.edge.agent import Agent
from aivos.edge.api.auth import requires
from aivos.edge.api.responses import raises
from aivos.edge.api.schemas import FeedbackIn, FeedbackOut, documented_body
from aivos.shared.errors import AivosError, DiskFull, InvalidInput, NotFound

__all__ = ["FeedbackController"]


# `doc_id` and `chunk_id` name a passage together, or are both left out (or null)
_PASSAGE_REF = [
    {"properties": {"doc_id": {"type": "null"}, "chunk_id": {"type": "null"}}},
    {
        "required": ["doc_id", "chunk_id"],
        # Litestar drops `ge=0` of an optional field: the minimum is restated here
        "properties": {"doc_id": {"type": "string"}, "chunk_id": {"type": "integer", "minimum": 0}},
    },
]


class FeedbackController(Controller):
    path = "/v1/feedback"
    guards = [requires("client")]

    @post("/", status_code=201, opt=raises(InvalidInput, NotFound, DiskFull, AivosError))
    async def feedback(
        self, data: Annotated[FeedbackIn, documented_body(any_of=_PASSAGE_REF)], agent: Agent
    ) -> FeedbackOut:
        done = await agent.pipeline.feedback.record(
            data.request_id, data.helpful, data.doc_id, data.chunk_id
        )
        return FeedbackOut(
            request_id=done.request_id,
            intent=done.intent,
            helpful=done.helpful,
            doc_id=done.doc_id,
            chunk_id=done.chunk_id,
            votes_up=done.votes_up,
            votes_down=done.votes_down,
        )
