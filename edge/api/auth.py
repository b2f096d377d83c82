"""Bearer-token authentication, scopes and the rate limits.

Every route except the open ones (/healthz, /readyz, /schema, and routes with
`opt["exclude_from_auth"]`: the signed webhooks) needs `Authorization: Bearer <token>`.
Scopes nest: admin ⊇ operator ⊇ client. `caller_of(request)` is who the request acts for in
the edge core: a client token sees only the sessions, jobs and runs it made; operator and
admin tokens see all of them.

Two limits, both token buckets answering 429 `rate_limited` with `Retry-After`: a valid
token is limited per token (`limits.rate_*`, `state.rate_limiter`); every request to an open
route and every failed bearer authentication (no token, a wrong or revoked one) is limited
per client address (`limits.anon_rate_*`, `state.anon_limiter`), so neither a flood of
unauthenticated requests nor token guessing is free, while a valid token sent from the
same address keeps only its own limit.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

# the parent class's own bypass decision, so "open" here means exactly "not authenticated"
from litestar.middleware._utils import should_bypass_middleware
from litestar.types import Receive, Scope, Send

from aivos.edge.api.errors import ApiError
from aivos.edge.api.ratelimit import RateLimiter
from aivos.edge.results import Caller

__all__ = [
    "Principal",
    "TokenAuthMiddleware",
    "requires",
    "require_scope",
    "caller_of",
    "caller_for_principal",
    "rate_limited",
    "OPEN_PATHS",
    "SCOPE_RANK",
]

OPEN_PATHS = ["^/healthz$", "^/readyz$", "^/schema"]
SCOPE_RANK = {"client": 0, "operator": 1, "admin": 2}


class Principal(Protocol):
    name: str
    scope: str


class _Authenticator(Protocol):
    def authenticate(self, token: str) -> Any: ...


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    """Litestar's base class lets `OPTIONS` through unauthenticated by default; here every
    method needs the token (the API serves no browser CORS preflights)."""

    def __init__(
        self,
        app: Any,
        exclude: str | list[str] | None = None,
        exclude_from_auth_key: str = "exclude_from_auth",
        exclude_http_methods: Any = None,
        scopes: Any = None,
    ) -> None:
        super().__init__(app, exclude, exclude_from_auth_key, exclude_http_methods or (), scopes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the parent's __call__, with its bypass decision taken once for both uses
        if should_bypass_middleware(
            exclude_http_methods=self.exclude_http_methods,
            exclude_opt_key=self.exclude_opt_key,
            exclude_path_pattern=self.exclude,
            scope=scope,
            scopes=self.scopes,
        ):
            if scope["type"] == ScopeType.HTTP:
                _charge_address(ASGIConnection(scope))  # an open route
        else:
            result = await self.authenticate_request(ASGIConnection(scope))
            scope["user"] = result.user
            scope["auth"] = result.auth
        await self.app(scope, receive, send)

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            _charge_address(connection)
            raise _unauthorized("missing bearer token")
        state = connection.app.state
        tokens: _Authenticator = state.tokens
        principal = tokens.authenticate(token.strip())
        if principal is None:
            _charge_address(connection)
            raise _unauthorized("invalid or revoked token")
        limiter: RateLimiter = state.rate_limiter
        wait = limiter.allow(principal.name)
        if wait > 0:
            raise rate_limited(wait, "this token")
        return AuthenticationResult(user=principal, auth=None)


def _charge_address(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Take one request from the client address's bucket; 429 when it is empty.

    The address is the connection's peer (never a forwarding header a client could set).
    No `anon_limiter` in the app state (an app assembled without `create_app`): no limit."""
    limiter: RateLimiter | None = getattr(connection.app.state, "anon_limiter", None)
    if limiter is None:
        return
    client = connection.scope.get("client")
    wait = limiter.allow(client[0] if client else "unknown")
    if wait > 0:
        raise rate_limited(wait, "this client address")


def rate_limited(wait: float, whom: str) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"request rate limit exceeded for {whom}",
        {"retry_after_s": round(wait, 3)},
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


class _Requires:
    """The guard `requires(scope)` returns; `scope` tells the API docs (`responses.py`)
    whether the route can answer 403.

    Async on purpose: Litestar runs a sync guard in a worker thread on every request."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self._needed = SCOPE_RANK[scope]  # an unknown scope fails when the route is declared

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
    ) -> None:
        require_scope(connection, self.scope)


def require_scope(connection: ASGIConnection[Any, Any, Any, Any], scope: str) -> None:
    """What the `requires(scope)` guard checks, for a hot route that checks inline: Litestar
    (2.x) copies the route handler for every guard call, on every request."""
    principal = connection.scope.get("user")  # absent when a route skipped the middleware
    if principal is None:
        raise _unauthorized("missing bearer token")
    if SCOPE_RANK.get(getattr(principal, "scope", ""), -1) < SCOPE_RANK[scope]:
        raise ApiError(403, "forbidden", f"this route needs the '{scope}' scope")


def requires(scope: str) -> Any:
    """A guard that admits principals whose scope ranks at least `scope`."""
    return _Requires(scope)


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """The authenticated token as the edge core sees it (no token: sees nothing)."""
    return caller_for_principal(connection.scope.get("user"))


def caller_for_principal(principal: Any) -> Caller:
    """`caller_of` for a principal already at hand (None: sees nothing)."""
    rank = SCOPE_RANK.get(getattr(principal, "scope", ""), -1)
    token_id = getattr(principal, "id", None) or None
    bound = getattr(principal, "bound", None) or {}
    return Caller(token_id=token_id, sees_all=rank >= SCOPE_RANK["operator"], bound=dict(bound))
