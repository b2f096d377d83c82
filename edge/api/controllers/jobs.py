"""Asynchronous requests: `POST /v1/jobs` returns 202 and a handle; `GET /v1/jobs/{id}` polls it."""

from __future__ import annotations

from litestar import Controller, Response, get, post

from aivos.edge.agent import Agent
from aivos.edge.api.auth import requires
from aivos.edge.api.convert import job_accepted, job_out
from aivos.edge.api.schemas import JobAccepted, JobOut, JobRequest

__all__ = ["JobsController"]


class JobsController(Controller):
    path = "/v1/jobs"
    guards = [requires("client")]

    @post("/", status_code=202)
    async def submit(self, data: JobRequest, agent: Agent) -> Response[JobAccepted]:
        accepted = job_accepted(await agent.jobs.submit(data))
        return Response(accepted, status_code=202, headers={"Location": accepted.status_url})

    @get("/{job_id:str}")
    async def status(self, job_id: str, agent: Agent) -> JobOut:
        return job_out(agent.jobs.status(job_id))
