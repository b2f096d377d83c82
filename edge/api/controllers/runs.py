"""Workflow runs: `GET /v1/runs`, `GET /v1/runs/{id}` (the step timeline, PII-masked), and
the operator actions approve / reject / cancel / retry (`operator` scope).

A client token sees only the runs started for its own requests (404 for any other run);
operator and admin tokens see every run, including those the site started (webhooks).

The engine arrives by dependency injection as `workflows` (a `WorkflowEngine`)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import Parameter
from msgspec import Meta

from aivos.edge.api.auth import caller_of, requires
from aivos.edge.api.errors import ApiError
from aivos.edge.api.responses import raises
from aivos.edge.ownership import check_run, runs_filter
from aivos.edge.workflows.engine import WorkflowEngine
from aivos.edge.workflows.views import RunDetail, RunResult, RunSummary, summary
from aivos.shared.errors import AivosError, Conflict, DiskFull, NotFound

__all__ = ["RunsController", "RunList", "DecisionIn"]


class RunList(msgspec.Struct, frozen=True):
    runs: list[RunSummary]
    next_before: str | None = None


class DecisionIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    note: Annotated[str, Meta(max_length=2000)] | None = None


# an operator action: the run may not exist or not allow it; it writes; the note is a body
_ACTION = raises(NotFound, Conflict, DiskFull, AivosError)
_DECISION = {**_ACTION, "raw_body": True}


def _operator(request: Request[Any, Any, Any]) -> str:
    return str(getattr(request.user, "name", "operator"))


async def _note(request: Request[Any, Any, Any]) -> str | None:
    body = await request.body()
    if not body.strip():
        return None
    try:
        return msgspec.json.decode(body, type=DecisionIn).note
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_request", f"bad decision body: {exc}") from exc


class RunsController(Controller):
    path = "/v1/runs"
    guards = [requires("client")]

    @get("/")
    async def list_runs(
        self,
        workflows: WorkflowEngine,
        request: Request[Any, Any, Any],
        run_state: Annotated[str | None, Parameter(query="state")] = None,
        workflow: str | None = None,
        before: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    ) -> RunList:
        rows = workflows.list_runs(
            state=run_state,
            workflow=workflow,
            limit=limit,
            before=before,
            owner=runs_filter(caller_of(request)),
        )
        return RunList(
            runs=[summary(r) for r in rows],
            next_before=rows[-1].id if len(rows) == limit else None,
        )

    @get("/{run_id:str}", opt=raises(NotFound))
    async def get_run(
        self, run_id: str, workflows: WorkflowEngine, request: Request[Any, Any, Any]
    ) -> RunDetail:
        check_run(workflows, run_id, caller_of(request))
        return workflows.run_detail(run_id)

    @post("/{run_id:str}/approve", guards=[requires("operator")], status_code=200, opt=_DECISION)
    async def approve(
        self, run_id: str, workflows: WorkflowEngine, request: Request[Any, Any, Any]
    ) -> RunResult:
        note = await _note(request)
        return await workflows.approve(run_id, _operator(request), note)

    @post("/{run_id:str}/reject", guards=[requires("operator")], status_code=200, opt=_DECISION)
    async def reject(
        self, run_id: str, workflows: WorkflowEngine, request: Request[Any, Any, Any]
    ) -> RunResult:
        note = await _note(request)
        return await workflows.reject(run_id, _operator(request), note)

    @post("/{run_id:str}/cancel", guards=[requires("operator")], status_code=200, opt=_ACTION)
    async def cancel(
        self, run_id: str, workflows: WorkflowEngine, request: Request[Any, Any, Any]
    ) -> RunResult:
        return await workflows.cancel(run_id, _operator(request))

    @post("/{run_id:str}/retry", guards=[requires("operator")], status_code=202, opt=_ACTION)
    async def retry(
        self, run_id: str, workflows: WorkflowEngine, request: Request[Any, Any, Any]
    ) -> RunResult:
        return await workflows.retry(run_id, _operator(request))
