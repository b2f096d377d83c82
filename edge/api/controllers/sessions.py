"""Per-session memory: recent turns (short-term) and facts (long-term).

A session is visible only to the token that made it (and to operator and admin tokens);
anyone else gets the same 404 as for a session that does not exist."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, put
from litestar.params import Parameter

from aivos.edge.agent import Agent
from aivos.edge.api.auth import caller_of, requires
from aivos.edge.api.convert import fact_out, session_out
from aivos.edge.api.responses import raises
from aivos.edge.api.schemas import FactIn, FactOut, SessionOut, documented_body
from aivos.shared.errors import AivosError, Conflict, DiskFull, NotFound

__all__ = ["SessionsController"]

SessionPath = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
KeyPath = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
_WRITE = raises(NotFound, DiskFull, AivosError)


class SessionsController(Controller):
    path = "/v1/sessions/{session_id:str}"
    guards = [requires("client")]
    opt = raises(NotFound)

    @get("/")
    async def get_session(
        self, session_id: SessionPath, agent: Agent, request: Request[Any, Any, Any]
    ) -> SessionOut:
        return session_out(agent.sessions.get(session_id, caller_of(request)))

    @delete("/", status_code=204, opt=_WRITE)
    async def forget(
        self, session_id: SessionPath, agent: Agent, request: Request[Any, Any, Any]
    ) -> None:
        await agent.sessions.forget(session_id, caller_of(request))

    @get("/facts")
    async def facts(
        self, session_id: SessionPath, agent: Agent, request: Request[Any, Any, Any]
    ) -> list[FactOut]:
        return [fact_out(f) for f in agent.sessions.facts(session_id, caller_of(request))]

    @put("/facts/{key:str}", opt=raises(NotFound, Conflict, DiskFull, AivosError))
    async def put_fact(
        self,
        session_id: SessionPath,
        key: KeyPath,
        data: Annotated[FactIn, documented_body()],
        agent: Agent,
        request: Request[Any, Any, Any],
    ) -> FactOut:
        fact = await agent.sessions.put_fact(session_id, key, data.value, caller_of(request))
        return fact_out(fact)

    @get("/facts/{key:str}")
    async def get_fact(
        self, session_id: SessionPath, key: KeyPath, agent: Agent, request: Request[Any, Any, Any]
    ) -> FactOut:
        return fact_out(agent.sessions.get_fact(session_id, key, caller_of(request)))

    @delete("/facts/{key:str}", status_code=204, opt=_WRITE)
    async def delete_fact(
        self, session_id: SessionPath, key: KeyPath, agent: Agent, request: Request[Any, Any, Any]
    ) -> None:
        await agent.sessions.delete_fact(session_id, key, caller_of(request))
