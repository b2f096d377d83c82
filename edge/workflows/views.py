"""What the API and CLI show of a run: summaries and step timelines, PII-masked."""

from __future__ import annotations

from typing import Any

import msgspec

from aivos.edge.workflows.rows import TERMINAL, RunRow, StepRow
from aivos.shared.residency import Masker

__all__ = [
    "RunResult",
    "RunSummary",
    "StepView",
    "RunDetail",
    "EventAccepted",
    "mask_value",
    "result_of",
    "summary",
    "detail",
]


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `start_run` returns: finished with a response, or still going (poll `status_url`)."""

    run_id: str
    workflow: str
    state: str
    done: bool
    response: str | None = None
    deadline_missed: bool = False
    status_url: str = ""


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    workflow: str
    state: str
    trigger: str
    trace_id: str
    created_at: str
    updated_at: str
    finished_at: str | None
    steps_done: int
    next_step: str | None
    deadline_missed: bool


class StepView(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    step: str
    kind: str
    state: str
    attempts: int
    started_at: str
    finished_at: str | None
    duration_ms: float | None
    input: Any = None
    output: Any = None
    error: str | None = None
    attempt_log: list[dict[str, Any]] = []
    idempotency_key: str | None = None
    approval: dict[str, Any] | None = None


class RunDetail(msgspec.Struct, frozen=True, kw_only=True):
    run: RunSummary
    inputs: Any
    response: str | None
    error: str | None
    steps: list[StepView]


class EventAccepted(msgspec.Struct, frozen=True, kw_only=True):
    event: str
    runs: list[RunResult]


def mask_value(value: Any, masker: Masker) -> Any:
    """Every string inside `value` with its PII replaced by typed placeholders."""
    if isinstance(value, str):
        return masker.mask(value).text
    if isinstance(value, dict):
        return {k: mask_value(v, masker) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(v, masker) for v in value]
    return value


def result_of(run: RunRow) -> RunResult:
    return RunResult(
        run_id=run.id,
        workflow=run.workflow,
        state=run.state,
        done=run.state in TERMINAL,
        response=run.response,
        deadline_missed=run.deadline_missed,
        status_url=f"/v1/runs/{run.id}",
    )


def summary(run: RunRow) -> RunSummary:
    return RunSummary(
        run_id=run.id,
        workflow=run.workflow,
        state=run.state,
        trigger=run.trigger,
        trace_id=run.trace_id,
        created_at=run.created_at,
        updated_at=run.updated_at,
        finished_at=run.finished_at,
        steps_done=run.seq,
        next_step=run.cursor,
        deadline_missed=run.deadline_missed,
    )


def detail(run: RunRow, steps: list[StepRow], masker: Masker) -> RunDetail:
    views = []
    for s in steps:
        approval = None
        if s.kind == "approve":
            approval = {
                "decision": s.decision,
                "decided_by": s.decided_by,
                "note": mask_value(s.note, masker),
                "wait_until": s.wait_until,
            }
        views.append(
            StepView(
                seq=s.seq,
                step=s.step_id,
                kind=s.kind,
                state=s.state,
                attempts=s.attempts,
                started_at=s.started_at,
                finished_at=s.finished_at,
                duration_ms=s.duration_ms,
                input=mask_value(s.input, masker),
                output=mask_value(s.output, masker),
                error=s.error,
                attempt_log=s.attempt_log,
                idempotency_key=s.idem_key,
                approval=approval,
            )
        )
    return RunDetail(
        run=summary(run),
        inputs=mask_value(run.inputs, masker),
        response=mask_value(run.response, masker),
        error=run.error,
        steps=views,
    )
