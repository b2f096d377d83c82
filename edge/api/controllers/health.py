"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from litestar import Controller, MediaType, Response, get

from aivos.edge.agent import Agent
from aivos.edge.api.convert import ready_out
from aivos.edge.api.schemas import HealthOut, ReadyOut

__all__ = ["HealthController"]


class HealthController(Controller):
    @get("/healthz", sync_to_thread=False)
    def healthz(self) -> HealthOut:
        return HealthOut(status="ok")

    @get("/readyz")
    async def readyz(self, agent: Agent) -> Response[ReadyOut]:
        ready = ready_out(await agent.readiness())
        return Response(ready, status_code=200 if ready.ready else 503)

    @get("/metrics", media_type=MediaType.TEXT)
    async def metrics(self, agent: Agent) -> str:
        return agent.metrics.render()
