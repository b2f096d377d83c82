"""`create_app(settings)`: the edge agent's Litestar application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin

from aivos.edge.agent import Agent
from aivos.edge.api.auth import OPEN_PATHS, TokenAuthMiddleware
from aivos.edge.api.controllers.events import EventsController
from aivos.edge.api.controllers.feedback import FeedbackController
from aivos.edge.api.controllers.health import HealthController
from aivos.edge.api.controllers.infer import InferController
from aivos.edge.api.controllers.jobs import JobsController
from aivos.edge.api.controllers.knowledge import KnowledgeController
from aivos.edge.api.controllers.runs import RunsController
from aivos.edge.api.controllers.sessions import SessionsController
from aivos.edge.api.errors import exception_handlers
from aivos.edge.api.fast_infer import FastInfer
from aivos.edge.api.options import answer_options
from aivos.edge.api.ratelimit import RateLimiter
from aivos.edge.api.responses import document_errors
from aivos.edge.api.schema_page import OfflineSchemaPage
from aivos.edge.settings import EdgeSettings
from aivos.shared import __version__

__all__ = ["create_app"]


def create_app(settings: EdgeSettings, agent: Agent | None = None) -> Litestar:
    """Build the app. The agent (model, store, index, uplink) opens in the lifespan."""
    holder: dict[str, Agent] = {}

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        running = agent or Agent(settings)
        await running.start()
        holder["agent"] = running
        app.state.tokens = running.tokens
        app.state.rate_limiter = RateLimiter(
            settings.limits.rate_per_second, settings.limits.rate_burst
        )
        # open routes and failed authentications, per client address (auth.py)
        app.state.anon_limiter = RateLimiter(
            settings.limits.anon_rate_per_second, settings.limits.anon_rate_burst
        )
        try:
            yield
        finally:
            await running.stop()

    def provide_agent() -> Agent:
        return holder["agent"]

    def provide_workflows() -> Any:
        return holder["agent"].workflows

    app = Litestar(
        route_handlers=[
            HealthController,
            InferController,
            JobsController,
            KnowledgeController,
            SessionsController,
            RunsController,
            EventsController,
            FeedbackController,
        ],
        dependencies={
            "agent": Provide(provide_agent, sync_to_thread=False),
            "workflows": Provide(provide_workflows, sync_to_thread=False),
        },
        middleware=[DefineMiddleware(TokenAuthMiddleware, exclude=OPEN_PATHS)],
        exception_handlers=exception_handlers,
        before_request=answer_options,
        lifespan=[lifespan],
        request_max_body_size=settings.limits.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="aivos edge agent",
            version=__version__,
            path="/schema",
            # a page with no CDN assets: branch boxes are often offline
            render_plugins=[
                OfflineSchemaPage(),
                JsonRenderPlugin(),
                YamlRenderPlugin(path=["/openapi.yaml", "/openapi.yml"]),
            ],
        ),
        debug=False,
        logging_config=None,  # the entry point configures logging (JSON lines for services)
    )
    document_errors(app)  # every error status of every route, with the real error body
    # the plain JSON `POST /v1/infer` skips Litestar's per-request machinery (fast_infer.py);
    # everything else, and every case it does not serve itself, goes through Litestar
    app.asgi_handler = FastInfer(
        app.asgi_handler, app, lambda: holder.get("agent"), settings.limits.max_body_bytes
    )
    return app
