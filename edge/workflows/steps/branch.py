"""`branch`: evaluate a condition and jump."""

from __future__ import annotations

from aivos.edge.workflows.expr import parse_expr
from aivos.edge.workflows.spec import END, BranchStep
from aivos.edge.workflows.steps.base import Outcome, StepCall, StepEnv

__all__ = ["branch"]


async def branch(step: BranchStep, call: StepCall, env: StepEnv) -> Outcome:
    result = parse_expr(step.when).evaluate(call.ctx)
    target = step.then if result else (step.otherwise or call.workflow.following(step.id))
    return Outcome(output={"result": result, "next": target or END}, next=target or END)
