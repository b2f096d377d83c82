"""`generate`: render text locally, or have the cloud generate it (PII masked on the way
out, restored on the way back), then parse its allow-listed fields."""

from __future__ import annotations

import logging

from aivos.edge.workflows.generation import parse_fields
from aivos.edge.workflows.spec import GenerateStep
from aivos.edge.workflows.steps.base import Outcome, StepCall, StepEnv
from aivos.edge.workflows.template import Template
from aivos.shared.errors import AivosError
from aivos.shared.residency import Masker

__all__ = ["generate"]

log = logging.getLogger(__name__)


async def generate(step: GenerateStep, call: StepCall, env: StepEnv) -> Outcome:
    ctx = call.ctx
    text = Template(step.template).render(ctx)
    by = "local"
    if step.mode == "cloud":
        masked = env.masker.mask(text)
        system = (
            env.masker.mask(Template(step.system).render(ctx), masked.mapping).text
            if step.system
            else None
        )
        try:
            generated = await env.generator(
                masked.text,
                system=system,
                max_tokens=step.max_tokens,
                timeout_s=step.timeout_s,
                trace_id=call.run.trace_id,
            )
            text, by = Masker.restore(generated, masked.mapping), "cloud"
        except (AivosError, TimeoutError) as exc:
            log.info("generate step %s fell back: %s", step.id, type(exc).__name__)
            text, by = Template(step.fallback).render(ctx), "fallback"
    fields = parse_fields(text, step.fields)
    missing = [name for name in step.fields if name not in fields]
    if missing and by != "fallback":
        # model text that does not validate never fills a field: the operator-written
        # fallback does (it is checked against the same allow-list)
        fallback_fields = parse_fields(Template(step.fallback).render(ctx), step.fields)
        fields.update({k: v for k, v in fallback_fields.items() if k in missing})
    return Outcome(
        output={"text": text, "by": by, "fields": fields, "fields_missing_from_model": missing}
    )
