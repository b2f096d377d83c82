"""`StepRunner`: runs one step through its kind's function (the `KINDS` table)."""

from __future__ import annotations

from dataclasses import dataclass

from aivos.edge.workflows.spec import (
    ApproveStep,
    BranchStep,
    EmitStep,
    GenerateStep,
    HttpStep,
    RespondStep,
    RetrieveStep,
    Step,
    kind_of,
)
from aivos.edge.workflows.steps.approve import approve
from aivos.edge.workflows.steps.base import Outcome, StepCall, StepEnv, StepFn
from aivos.edge.workflows.steps.branch import branch
from aivos.edge.workflows.steps.effects import emit, http
from aivos.edge.workflows.steps.generate import generate
from aivos.edge.workflows.steps.respond import respond
from aivos.edge.workflows.steps.retrieve import retrieve
from aivos.shared.errors import StepFailed

__all__ = ["StepKind", "KINDS", "StepRunner"]


@dataclass(frozen=True, slots=True)
class StepKind:
    run: StepFn
    timed: bool = True  # its time counts toward the workflow's deadline


# One row per step kind: the spec Struct (`spec.py`) and the function that runs it.
KINDS: dict[type[Step], StepKind] = {
    RetrieveStep: StepKind(retrieve),
    HttpStep: StepKind(http),
    GenerateStep: StepKind(generate),
    BranchStep: StepKind(branch),
    ApproveStep: StepKind(approve, timed=False),  # waits for a human
    EmitStep: StepKind(emit),
    RespondStep: StepKind(respond),
}


class StepRunner:
    def __init__(self, env: StepEnv) -> None:
        self.env = env

    def timed(self, step: Step) -> bool:
        kind = KINDS.get(type(step))
        return kind is None or kind.timed

    async def run(self, step: Step, call: StepCall) -> Outcome:
        kind = KINDS.get(type(step))
        if kind is None:
            raise StepFailed("unknown_kind", kind_of(step))
        return await kind.run(step, call, self.env)
