"""Model output never drives a side effect directly.

A value produced by a `generate` step (its `text`, or anything but a validated field) is
*tainted*. A tainted reference may appear in an `http` or `emit` step, or in a `branch`
condition, only when an earlier `approve` step lists that exact reference in `review`
(a human saw and approved it). Validated fields, `steps.<gen>.fields.<name>`, are not
tainted: the engine only stores a field whose value is in the step's allow-list.

`check_workflow` enforces this at load time; `check_runtime` enforces it again just before
a side effect runs (the approval must actually have been granted in this run, and each
field value must still be in its allow-list).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aivos.edge.workflows.expr import parse_expr, resolve_ref
from aivos.edge.workflows.spec import (
    ApproveStep,
    BranchStep,
    EmitStep,
    GenerateStep,
    HttpStep,
    Step,
    Workflow,
    kind_of,
)
from aivos.edge.workflows.template import Template, value_refs
from aivos.shared.errors import StepFailed

__all__ = ["side_effect_refs", "taint_violations", "check_runtime"]

Ref = tuple[str, ...]


def side_effect_refs(step: Step) -> list[Ref]:
    """References a side-effect (or control-flow) step reads."""
    if isinstance(step, HttpStep):
        refs = list(Template(step.path).refs)
        refs += [r for v in step.query.values() for r in Template(v).refs]
        refs += value_refs(step.body) if step.body is not None else []
        return refs
    if isinstance(step, EmitStep):
        return value_refs(step.payload) + list(Template(step.path).refs)
    if isinstance(step, BranchStep):
        return list(parse_expr(step.when).refs)
    return []


def _generate_steps(workflow: Workflow) -> dict[str, GenerateStep]:
    return {s.id: s for s in workflow.steps if isinstance(s, GenerateStep)}


def _is_tainted(ref: Ref, gens: Mapping[str, GenerateStep]) -> bool:
    if len(ref) < 2 or ref[0] != "steps" or ref[1] not in gens:
        return False
    gen = gens[ref[1]]
    # steps.<gen>.fields.<declared name> is a validated, allow-listed value
    return not (len(ref) == 4 and ref[2] == "fields" and ref[3] in gen.fields)


def taint_violations(workflow: Workflow) -> list[tuple[str, str]]:
    """(step id, message) for each tainted reference reaching a side effect unreviewed."""
    gens = _generate_steps(workflow)
    reviewed: set[Ref] = set()
    problems: list[tuple[str, str]] = []
    for step in workflow.steps:
        if isinstance(step, ApproveStep):
            reviewed.update(tuple(r.split(".")) for r in step.review)
            continue
        if not isinstance(step, HttpStep | EmitStep | BranchStep):
            continue
        for ref in side_effect_refs(step):
            if _is_tainted(ref, gens) and ref not in reviewed:
                dotted = ".".join(ref)
                problems.append(
                    (
                        step.id,
                        f"{{{dotted}}} is model output and may not drive a {kind_of(step)} "
                        "step; use a declared `fields` value (allow-listed) or list it in "
                        "the `review` of an earlier approve step",
                    )
                )
    return problems


def check_runtime(
    workflow: Workflow, step: Step, context: Mapping[str, Any], approvals: Mapping[str, str]
) -> None:
    """Raise StepFailed (not retryable) if `step` would use model output unguarded.

    `approvals` maps approve-step ids to their decision in this run."""
    gens = _generate_steps(workflow)
    for ref in side_effect_refs(step):
        if len(ref) < 2 or ref[0] != "steps" or ref[1] not in gens:
            continue
        gen = gens[ref[1]]
        if not _is_tainted(ref, gens):
            found, value = resolve_ref(context, ref)
            if found and value not in gen.fields[ref[3]]:
                raise StepFailed("unsafe_value", f"{'.'.join(ref)} is not in its allow-list")
            continue
        dotted = ".".join(ref)
        granted = any(
            isinstance(s, ApproveStep) and dotted in s.review and approvals.get(s.id) == "approved"
            for s in workflow.steps
        )
        if not granted:
            raise StepFailed("unsafe_value", f"{dotted} is model output and was not approved")
