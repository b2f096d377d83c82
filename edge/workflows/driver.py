"""`RunDriver`: executes one run's steps from its cursor, one at a time, until it ends or
stops on a failure.

Each step runs through the `StepRunner` (under the workflow's deadline, except kinds that
wait for a human); how it ended becomes one `StepResult` (the step's row, the run's next
cursor and state), which the journal records. The deadline (`deadline_s`) covers the
automated steps only. A run that misses it, or whose step fails with
``on_error = "fallback"``, ends with the workflow's fallback answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aivos.edge.workflows.journal import RunJournal
from aivos.edge.workflows.metrics import WorkflowMetrics
from aivos.edge.workflows.rows import ACTIVE, RunRow, StepResult, StepRow
from aivos.edge.workflows.spec import END, ApproveStep, Step, Workflow, kind_of
from aivos.edge.workflows.steps import Outcome, StepCall, StepRunner
from aivos.edge.workflows.template import Template
from aivos.shared.errors import AivosError, StepFailed

__all__ = ["RunDriver"]

log = logging.getLogger(__name__)


class _Deadline(Exception):
    pass


class RunDriver:
    def __init__(
        self,
        journal: RunJournal,
        runner: StepRunner,
        metrics: WorkflowMetrics,
        lookup: Callable[[str], Workflow | None],
    ) -> None:
        self._journal = journal
        self._runner = runner
        self._metrics = metrics
        self._lookup = lookup  # the loaded workflow of this name, if any

    async def drive(self, run_id: str, new_run: RunRow | None = None) -> None:
        """Execute the run's steps from its cursor. `new_run`: a run just created in this
        process (its row may still be in the writer queue; it has no steps yet)."""
        journal = self._journal
        run = new_run if new_run is not None else journal.get_run(run_id)
        if run.state not in ACTIVE:
            return
        wf = self._lookup(run.workflow)
        if wf is None:
            await journal.end_run(
                run_id, state="failed", cursor=run.cursor, error="workflow_not_loaded"
            )
            return
        if wf.digest != run.digest:
            log.warning("run %s resumes on a changed definition of %s", run_id, wf.name)
        resumed = new_run is None
        ctx, approvals = self._context(run, wf, journal.steps_of(run_id) if resumed else [])
        active, cursor, seq = run.active_s, run.cursor, run.seq
        while cursor is not None and cursor != END:
            try:
                step = wf.step(cursor)
            except KeyError:
                await journal.end_run(
                    run_id, state="failed", cursor=cursor, error=f"step {cursor!r} is gone"
                )
                return
            seq += 1
            # only the first step after a resume / retry can have been started before
            prior = journal.in_flight(run_id, seq) if seq == run.seq + 1 and resumed else None
            if prior is not None and prior.step_id != step.id:
                prior = None
            call = _call(wf, run, seq, prior, ctx, approvals)
            started = time.perf_counter()
            outcome, error, missed = await self._attempt(wf, step, call, active)
            elapsed = time.perf_counter() - started
            if self._runner.timed(step):
                active += elapsed
            result = _settle(wf, step, call, outcome, error, missed, elapsed, active)
            if missed:
                self._metrics.deadline_misses.inc(workflow=wf.name)
            self._metrics.steps.inc(kind=result.kind, outcome=result.state)
            await journal.record_step(run, result)
            if result.run_state != "running":
                self._metrics.runs.inc(workflow=run.workflow, state=result.run_state)
                return
            cursor = result.cursor

    @staticmethod
    def _context(
        run: RunRow, wf: Workflow, done: list[StepRow]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """What templates read (inputs, run, outputs of the finished steps), and the
        decisions of the finished approve steps."""
        ctx: dict[str, Any] = {
            "inputs": run.inputs,
            "run": {"id": run.id, "workflow": wf.name, "trace_id": run.trace_id},
            "steps": {},
        }
        approvals: dict[str, str] = {}
        for row in done:
            if row.seq <= run.seq:
                ctx["steps"][row.step_id] = row.output
                if row.kind == "approve" and isinstance(row.output, dict):
                    approvals[row.step_id] = str(row.output.get("decision"))
        return ctx, approvals

    async def _attempt(
        self, wf: Workflow, step: Step, call: StepCall, active: float
    ) -> tuple[Outcome | None, StepFailed | None, bool]:
        """Run the step: (its outcome, or the failure and whether it was the deadline)."""
        try:
            if not self._runner.timed(step):
                return await self._runner.run(step, call), None, False
            remaining = wf.deadline_s - active
            if remaining <= 0:
                raise _Deadline
            try:
                async with asyncio.timeout(remaining):
                    return await self._runner.run(step, call), None, False
            except TimeoutError as exc:
                raise _Deadline from exc
        except _Deadline:
            return (
                None,
                StepFailed("deadline", f"workflow deadline of {wf.deadline_s}s reached"),
                True,
            )
        except StepFailed as exc:
            return None, exc, False
        except AivosError as exc:
            return None, StepFailed(exc.code, str(exc)), False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("workflow step %s.%s failed unexpectedly", wf.name, step.id)
            return None, StepFailed("internal", type(exc).__name__), False


def _call(
    wf: Workflow,
    run: RunRow,
    seq: int,
    prior: StepRow | None,
    ctx: dict[str, Any],
    approvals: dict[str, str],
) -> StepCall:
    return StepCall(
        workflow=wf,
        run=run,
        seq=seq,
        prior=prior,
        ctx=ctx,
        approvals=approvals,
        attempt_log=list(prior.attempt_log) if prior else [],
    )


def _settle(
    wf: Workflow,
    step: Step,
    call: StepCall,
    outcome: Outcome | None,
    error: StepFailed | None,
    missed: bool,
    elapsed: float,
    active: float,
) -> StepResult:
    """How the step ended, and where the run goes next (updates `call.ctx` with the step's
    output for the steps that follow)."""
    common: dict[str, Any] = {
        "seq": call.seq,
        "step_id": step.id,
        "kind": kind_of(step),
        "attempts": len(call.attempt_log) if call.attempt_log else 1,
        "attempt_log": call.attempt_log,
        "duration_ms": round(elapsed * 1000, 3),
        "active_s": active,
    }
    steps = call.ctx["steps"]
    if outcome is not None:
        steps[step.id] = outcome.output
        if isinstance(step, ApproveStep):
            call.approvals[step.id] = outcome.output["decision"]
        nxt = outcome.next or step.next or wf.following(step.id)
        run_state = outcome.terminal or ("succeeded" if nxt in (None, END) else "running")
        response = outcome.response
        if outcome.terminal == "rejected":
            response = Template(wf.fallback).render(call.ctx)
            nxt = None
        return StepResult(
            **common,
            state="done",
            input=outcome.input,
            output=outcome.output,
            cursor=None if run_state != "running" else nxt,
            advance=True,
            run_state=run_state,
            response=response,
        )
    assert error is not None
    if not missed and step.on_error != "fallback":
        # the failure is handled: the run goes on (or ends) as the workflow says
        nxt = wf.following(step.id) if step.on_error == "continue" else step.on_error
        output = {"error": error.reason}
        steps[step.id] = output
        run_state = "succeeded" if nxt in (None, END) else "running"
        return StepResult(
            **common,
            state="failed",
            output=output,
            error=str(error),
            cursor=None if run_state != "running" else nxt,
            advance=True,
            run_state=run_state,
        )
    # the run stops on this step with the fallback answer (`retry` resumes it here)
    return StepResult(
        **common,
        state="failed",
        error=str(error),
        cursor=step.id,
        advance=False,
        run_state="timed_out" if missed else "failed",
        response=Template(wf.fallback).render(call.ctx),
        run_error=str(error),
        deadline_missed=missed,
    )
