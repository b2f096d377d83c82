"""`approve`: pause the run until an operator decides, or the step's timeout applies its
default. The wait survives a restart: the deadline and the decision are in the journal.
Time spent here does not count toward the workflow's deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aivos.edge.workflows import audit
from aivos.edge.workflows.spec import ApproveStep
from aivos.edge.workflows.steps.base import Outcome, StepCall, StepEnv
from aivos.edge.workflows.template import Template, render_value

__all__ = ["approve"]


async def approve(step: ApproveStep, call: StepCall, env: StepEnv) -> Outcome:
    journal, run, seq, ctx = env.journal, call.run, call.seq, call.ctx
    if call.prior is None or call.prior.state != "waiting":
        message = Template(step.message).render(ctx)
        review = {ref: render_value("{" + ref + "}", ctx, strict=False) for ref in step.review}
        await journal.begin_step(
            run.id,
            seq=seq,
            step_id=step.id,
            kind="approve",
            state="waiting",
            input={"message": message, "review": review},
            wait_until=time.time() + step.timeout_s,
            run_state="waiting_approval",
        )
        await journal.sync(run.id)
        await journal.audit(audit.step_waiting(run, call.workflow.name, seq, step.id))
    else:
        # resumed (restart, or /retry after a cancel): the run is waiting again
        await journal.mark_waiting(run.id)
    env.signals.paused(run.id).set()
    event = env.signals.approval(run.id)
    default = "approved" if step.default == "approve" else "rejected"
    while True:
        row = journal.in_flight(run.id, seq)
        assert row is not None
        if row.decision is not None:
            break
        left = (row.wait_until or 0) - time.time()
        if left <= 0:
            await journal.decide(run.id, seq, default, "timeout", None)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=left)
        event.clear()
    env.signals.resumed(run.id)
    output = {"decision": row.decision, "by": row.decided_by, "note": row.note}
    if row.decision == "approved":
        return Outcome(output=output, input=row.input)
    if step.on_reject is not None:
        return Outcome(output=output, next=step.on_reject, input=row.input)
    return Outcome(output=output, terminal="rejected", input=row.input)
