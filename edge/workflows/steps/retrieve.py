"""`retrieve`: search the knowledge index for passages."""

from __future__ import annotations

import asyncio
from typing import Any

from aivos.edge.workflows.spec import RetrieveStep
from aivos.edge.workflows.steps.base import Outcome, StepCall, StepEnv
from aivos.edge.workflows.template import Template

__all__ = ["retrieve"]


async def retrieve(step: RetrieveStep, call: StepCall, env: StepEnv) -> Outcome:
    query = Template(step.query).render(call.ctx)
    index = env.index
    passages: list[dict[str, Any]] = []
    if index is not None and query.strip() and len(index) > 0:
        found = await asyncio.to_thread(index.search, query, step.k)
        passages = [
            {"text": p.text, "source": p.source, "score": round(float(p.score), 4)}
            for p in found
            if p.score >= step.min_score
        ]
    output = {
        "passages": passages,
        "top": passages[0]["text"] if passages else "",
        "count": len(passages),
    }
    return Outcome(output=output, input={"query": query})
