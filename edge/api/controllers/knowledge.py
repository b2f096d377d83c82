"""The site's knowledge index: add, list, delete documents; search passages."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.params import Parameter

from aivos.edge.agent import Agent
from aivos.edge.api.auth import requires
from aivos.edge.api.convert import document_out, search_out
from aivos.edge.api.responses import raises
from aivos.edge.api.schemas import NON_BLANK, DocumentOut, KnowledgeIn, SearchOut, documented_body
from aivos.shared.errors import AivosError, DataError, DiskFull, InvalidInput, NotFound

__all__ = ["KnowledgeController"]


class KnowledgeController(Controller):
    path = "/v1/knowledge"

    @post(
        "/",
        status_code=201,
        guards=[requires("operator")],
        opt=raises(InvalidInput, DataError, DiskFull, AivosError),
    )
    async def add(
        self, data: Annotated[KnowledgeIn, documented_body(("source", "text"))], agent: Agent
    ) -> DocumentOut:
        return document_out(await agent.documents.add(data.source, data.text, data.title))

    @get("/", guards=[requires("client")])
    async def list_documents(self, agent: Agent) -> list[DocumentOut]:
        return [document_out(d) for d in await agent.documents.list()]

    @get("/search", guards=[requires("client")], opt=raises(DataError))
    async def search(
        self,
        agent: Agent,
        q: Annotated[
            str, Parameter(min_length=1, max_length=4000, schema_extra={"pattern": NON_BLANK})
        ],
        k: Annotated[int, Parameter(ge=1, le=20)] = 3,
    ) -> SearchOut:
        return search_out(await agent.documents.search(q, k))

    @delete(
        "/{doc_id:str}",
        status_code=204,
        guards=[requires("operator")],
        opt=raises(NotFound, DiskFull, AivosError),
    )
    async def remove(self, doc_id: str, agent: Agent) -> None:
        await agent.documents.delete(doc_id)
