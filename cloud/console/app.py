"""The fleet console: `create_app(settings)` assembles the Litestar app.

The app owns a `FleetService` (registry, heartbeat ingest, config store, rollout controller)
started in the lifespan; with ``connect=False`` (tests, page benchmarks) it serves from the
registry alone."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Controller, Litestar, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.params import Body
from litestar.response import Redirect, Template
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from aivos.cloud.console.api import ApiController
from aivos.cloud.console.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL_S,
    LoginRequired,
    LoginThrottle,
    identify,
    new_session,
)
from aivos.cloud.console.errors import http_error
from aivos.cloud.console.headers import header_map, security_headers
from aivos.cloud.console.health import ApiHealthController, HealthController, link_banner
from aivos.cloud.console.models_page import ModelsController
from aivos.cloud.console.queries import open_cloud_store
from aivos.cloud.console.review import ReviewController, setup_review
from aivos.cloud.console.views import PagesController
from aivos.cloud.fleet.registry import Registry
from aivos.cloud.fleet.service import FleetService
from aivos.cloud.fleet.tokens import verify_password
from aivos.cloud.ingest.store import CloudStore
from aivos.shared.errors import AivosError
from aivos.shared.paths import default_bundle_dir

__all__ = ["ConsoleSettings", "create_app"]

_HERE = Path(__file__).parent
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


class ConsoleSettings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: Path
    nats_url: str = "nats://127.0.0.1:4222"
    connect: bool = True  # start the FleetService (NATS ingest + rollout controller)
    secure_cookies: bool = False  # set when served over https
    tick_s: float = 1.0
    db: str | None = None  # a postgresql:// URL (--db); None: SQLite files in data_dir
    js_replicas: int = 1  # replicas of the JetStream assets the fleet service creates
    # the bundle whose encoder clusters hard examples on /review (None: the default bundle)
    review_bundle: Path | None = None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s % 3600) // 60:02d}m"
    return f"{s // 86400}d {(s % 86400) // 3600}h"


def _ts(value: float | None) -> str:
    return "-" if value is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def _template_config(fleet: FleetService) -> TemplateConfig[Any]:
    from litestar.contrib.jinja import JinjaTemplateEngine

    def setup(engine: JinjaTemplateEngine) -> None:
        engine.engine.filters["age"] = _age
        engine.engine.filters["ts"] = _ts
        # base.html's banner while the hub link is down, on every page
        engine.engine.globals["fleet_link_banner"] = lambda: link_banner(fleet.link.status())

    return TemplateConfig(
        directory=_HERE / "templates", engine=JinjaTemplateEngine, engine_callback=setup
    )


class LoginController(Controller):
    include_in_schema = False

    @get("/login")
    async def login_page(self, request: Request[Any, Any, Any]) -> Response[Any]:
        token = secrets.token_urlsafe(24)
        response: Response[Any] = Template(
            "login.html",
            context={
                "csrf": token,
                "error": request.query_params.get("error", ""),
                "next": request.query_params.get("next", "/"),
                "nav": "",
            },
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.app.state.secure_cookies,
            max_age=3600,
        )
        return response

    @post("/login")
    async def login(self, request: Request[Any, Any, Any], data: Form) -> Redirect:
        registry: Registry = request.app.state.registry
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not secrets.compare_digest(cookie, data.get("csrf", "")):
            return Redirect("/login?error=Your+form+expired%3B+try+again", status_code=303)
        username = data.get("username", "")
        throttle: LoginThrottle = request.app.state.login_throttle
        address = request.client.host if request.client else ""
        wait_s = throttle.retry_after(username, address)
        if wait_s > 0:
            await asyncio.to_thread(
                registry.record_action, username or "?", "login.throttled", "console"
            )
            return Redirect(
                "/login?error=Too+many+failed+attempts%3B+try+again+later",
                status_code=303,
                headers={"Retry-After": str(max(1, round(wait_s)))},
            )
        stored = await asyncio.to_thread(registry.operator_hash, username)
        ok = stored is not None and await asyncio.to_thread(
            verify_password, data.get("password", ""), stored
        )
        if not ok:
            throttle.failed(username, address)
            await asyncio.to_thread(
                registry.record_action, username or "?", "login.failed", "console"
            )
            return Redirect("/login?error=Wrong+username+or+password", status_code=303)
        throttle.succeeded(username, address)
        token = await asyncio.to_thread(new_session, registry, username)
        await asyncio.to_thread(registry.record_action, username, "login", "console")
        target = data.get("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        return Redirect(
            target,
            status_code=303,
            cookies=[
                Cookie(
                    key=SESSION_COOKIE,
                    value=token,
                    httponly=True,
                    samesite="strict",
                    secure=request.app.state.secure_cookies,
                    max_age=SESSION_TTL_S,
                    path="/",
                ),
                Cookie(key=LOGIN_CSRF_COOKIE, value="", max_age=0),
            ],
        )

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any], data: Form) -> Redirect:
        op = identify(request)
        if (
            op is not None
            and op.via == "session"
            and secrets.compare_digest(data.get("csrf", ""), op.csrf)
        ):
            registry: Registry = request.app.state.registry
            await asyncio.to_thread(registry.drop_session, op.session_hash)
            await asyncio.to_thread(registry.record_action, op.name, "logout", "console")
        return Redirect(
            "/login", status_code=303, cookies=[Cookie(key=SESSION_COOKIE, value="", max_age=0)]
        )


def _login_redirect(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    from urllib.parse import quote

    return Redirect(f"/login?next={quote(request.url.path)}", status_code=303)


def _html_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if request.url.path.startswith("/api/"):
        body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
        if exc.extra:
            body["extra"] = exc.extra
        headers = {**header_map(), **(exc.headers or {})}
        return Response(body, status_code=exc.status_code, headers=headers)
    return Template(
        "error.html",
        context={"status": exc.status_code, "detail": exc.detail, "nav": ""},
        status_code=exc.status_code,
        headers=header_map(),
    )


def _domain_error(request: Request[Any, Any, Any], exc: AivosError) -> Response[Any]:
    return _html_error(request, http_error(exc))


async def _answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
    """`before_request`: `OPTIONS` lists every method of the path. Litestar (2.25) keeps the
    automatic `OPTIONS` handler of the first route built for a path, so its `Allow` misses
    methods added later (`GET` + `POST /api/rollouts`); guards still run first."""
    if request.method != "OPTIONS":
        return None
    template = request.scope.get("path_template")
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            methods |= set(route.methods)
    if not methods:
        return None
    return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})


def create_app(settings: ConsoleSettings, fleet: FleetService | None = None) -> Litestar:
    owned = fleet is None
    fleet = fleet or FleetService(
        settings.data_dir,
        settings.nats_url,
        tick_s=settings.tick_s,
        db=settings.db,
        js_replicas=settings.js_replicas,
    )
    cloud_store: list[Any] = []

    def get_cloud_store() -> Any:
        if not cloud_store:
            store = (
                CloudStore.open(db=settings.db)
                if settings.db
                else open_cloud_store(settings.data_dir)
            )
            if store is None:
                return None
            cloud_store.append(store)
        return cloud_store[0]

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if owned and settings.connect:
            await fleet.start(wait_for_hub=False)
        try:
            yield
        finally:
            if owned and settings.connect:
                await fleet.stop()
            elif owned:
                fleet.registry.close()
            for store in cloud_store:
                store.close()

    def provide_fleet() -> FleetService:
        return fleet

    def provide_registry() -> Registry:
        return fleet.registry

    app = Litestar(
        route_handlers=[
            HealthController,
            ApiHealthController,
            LoginController,
            PagesController,
            ModelsController,
            ApiController,
            ReviewController,
            create_static_files_router(
                path="/static", directories=[_HERE / "static"], include_in_schema=False
            ),
        ],
        dependencies={
            "fleet": Provide(provide_fleet, sync_to_thread=False),
            "registry": Provide(provide_registry, sync_to_thread=False),
        },
        template_config=_template_config(fleet),
        lifespan=[lifespan],
        exception_handlers={
            LoginRequired: _login_redirect,
            NotAuthorizedException: _html_error,
            PermissionDeniedException: _html_error,
            HTTPException: _html_error,
            AivosError: _domain_error,
        },
        openapi_config=None,
        before_request=_answer_options,
        middleware=[security_headers],
    )
    app.state.registry = fleet.registry
    app.state.secure_cookies = settings.secure_cookies
    app.state.cloud_store = get_cloud_store
    app.state.login_throttle = LoginThrottle()
    setup_review(app.state, settings.review_bundle or default_bundle_dir())
    return app
