"""Bearer-token authentication, scopes and the per-token rate limit.

Every route except the open ones (/healthz, /readyz, /schema) needs `Authorization:
Bearer <token>`. Scopes nest: admin ⊇ operator ⊇ client. `caller_of(request)` is who the
request acts for in the edge core: a client token sees only the sessions, jobs and runs it
made; operator and admin tokens see all of them.
"""

from __future__ import annotations

from typing import Any, Protocol

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from aivos.edge.api.errors import ApiError
from aivos.edge.api.ratelimit import RateLimiter
from aivos.edge.results import Caller

__all__ = [
    "Principal",
    "TokenAuthMiddleware",
    "requires",
    "caller_of",
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

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("missing bearer token")
        state = connection.app.state
        tokens: _Authenticator = state.tokens
        principal = tokens.authenticate(token.strip())
        if principal is None:
            raise _unauthorized("invalid or revoked token")
        limiter: RateLimiter = state.rate_limiter
        wait = limiter.allow(principal.name)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                "request rate limit exceeded for this token",
                {"retry_after_s": round(wait, 3)},
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        return AuthenticationResult(user=principal, auth=None)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


class _Requires:
    """The guard `requires(scope)` returns; `scope` tells the API docs (`responses.py`)
    whether the route can answer 403.

    Async on purpose: Litestar runs a sync guard in a worker thread on every request."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self._needed = SCOPE_RANK[scope]

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
    ) -> None:
        principal = connection.scope.get("user")  # absent when a route skipped the middleware
        if principal is None:
            raise _unauthorized("missing bearer token")
        if SCOPE_RANK.get(getattr(principal, "scope", ""), -1) < self._needed:
            raise ApiError(403, "forbidden", f"this route needs the '{self.scope}' scope")


def requires(scope: str) -> Any:
    """A guard that admits principals whose scope ranks at least `scope`."""
    return _Requires(scope)


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """The authenticated token as the edge core sees it (no token: sees nothing)."""
    principal = connection.scope.get("user")
    rank = SCOPE_RANK.get(getattr(principal, "scope", ""), -1)
    token_id = getattr(principal, "id", None) or None
    bound = getattr(principal, "bound", None) or {}
    return Caller(token_id=token_id, sees_all=rank >= SCOPE_RANK["operator"], bound=dict(bound))
