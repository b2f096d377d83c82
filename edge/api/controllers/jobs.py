"""Asynchronous requests: `POST /v1/jobs` returns 202 and a handle; `GET /v1/jobs/{id}` polls it.

A job belongs to the token that submitted it; another client token gets 404 for it."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post

from aivos.edge.agent import Agent
from aivos.edge.api.auth import caller_of, requires
from aivos.edge.api.convert import job_accepted, job_out
from aivos.edge.api.responses import raises
from aivos.edge.api.schemas import JobAccepted, JobOut, JobRequest, documented_body
from aivos.edge.ownership import check_job, own_job
from aivos.shared.errors import AivosError, DiskFull, InvalidInput, NotFound, TextTooLong

__all__ = ["JobsController"]


class JobsController(Controller):
    path = "/v1/jobs"
    guards = [requires("client")]

    @post(
        "/", status_code=202, opt=raises(InvalidInput, TextTooLong, NotFound, DiskFull, AivosError)
    )
    async def submit(
        self,
        data: Annotated[JobRequest, documented_body(("text",))],
        agent: Agent,
        request: Request[Any, Any, Any],
    ) -> Response[JobAccepted]:
        caller = caller_of(request)
        await agent.pipeline.admit(data, caller)  # the session, if any, is the caller's
        job = await agent.jobs.submit(data)
        await own_job(agent.store, job.job_id, caller)  # before its id leaves
        accepted = job_accepted(job)
        return Response(accepted, status_code=202, headers={"Location": accepted.status_url})

    @get("/{job_id:str}", opt=raises(NotFound))
    async def status(self, job_id: str, agent: Agent, request: Request[Any, Any, Any]) -> JobOut:
        check_job(agent.store, job_id, caller_of(request))
        return job_out(agent.jobs.status(job_id))
