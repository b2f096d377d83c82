"""`respond`: render the run's answer."""

from __future__ import annotations

from aivos.edge.workflows.spec import RespondStep
from aivos.edge.workflows.steps.base import Outcome, StepCall, StepEnv
from aivos.edge.workflows.template import Template

__all__ = ["respond"]


async def respond(step: RespondStep, call: StepCall, env: StepEnv) -> Outcome:
    text = Template(step.template).render(call.ctx)
    return Outcome(output={"text": text}, response=text)
