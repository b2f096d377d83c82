"""Liveness, readiness and Prometheus metrics.

`/readyz` answers 503 only when the box cannot decide (model, index or store not usable).
A box that decides but is not whole answers 200 with `status: "degraded"` and the reasons
(a full outbox, a background task restarting); `tasks` lists every supervised background
task with its state and `sync` says whether the box syncs (`uplink`) or is `standalone`.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, MediaType, Response, get
from litestar.openapi.datastructures import ResponseSpec

from aivos.edge.agent import Agent
from aivos.edge.api.convert import ready_out
from aivos.edge.api.schemas import HealthOut

__all__ = ["HealthController", "ReadinessOut"]


class ReadinessOut(msgspec.Struct, frozen=True):
    """The `/readyz` body: `ReadyOut`'s fields, then what a degraded box reports (new
    fields last, with defaults)."""

    ready: bool
    checks: dict[str, bool]
    model_version: str | None = None
    provider: str | None = None
    link: str | None = None  # uplink state (informational: an offline box is still ready)
    status: str = "ok"  # ok | degraded | not_ready
    degraded: list[str] = []
    tasks: dict[str, str] = {}
    sync: str = "uplink"


class HealthController(Controller):
    @get("/healthz", sync_to_thread=False)
    def healthz(self) -> HealthOut:
        return HealthOut(status="ok")

    @get(
        "/readyz",
        responses={
            503: ResponseSpec(
                ReadinessOut, generate_examples=False, description="Not ready: cannot decide"
            )
        },
    )
    async def readyz(self, agent: Agent) -> Response[ReadinessOut]:
        readiness = await agent.readiness()
        base = msgspec.structs.asdict(ready_out(readiness))
        status = "not_ready" if not readiness.ready else "degraded" if readiness.degraded else "ok"
        body = ReadinessOut(
            **base,
            status=status,
            degraded=readiness.degraded,
            tasks=readiness.tasks,
            sync=readiness.sync,
        )
        return Response(body, status_code=200 if body.ready else 503)

    @get("/metrics", media_type=MediaType.TEXT)
    async def metrics(self, agent: Agent) -> str:
        return agent.metrics.render()
