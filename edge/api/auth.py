"""Bearer-token authentication, scopes and the per-token rate limit.

Every route except the open ones (/healthz, /readyz, /schema) needs `Authorization:
Bearer <token>`. Scopes nest: admin ⊇ operator ⊇ client.
"""

from __future__ import annotations

from typing import Any, Protocol

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from aivos.edge.api.errors import ApiError
from aivos.edge.api.ratelimit import RateLimiter

__all__ = ["Principal", "TokenAuthMiddleware", "requires", "OPEN_PATHS", "SCOPE_RANK"]

OPEN_PATHS = ["^/healthz$", "^/readyz$", "^/schema"]
SCOPE_RANK = {"client": 0, "operator": 1, "admin": 2}


class Principal(Protocol):
    name: str
    scope: str


class _Authenticator(Protocol):
    def authenticate(self, token: str) -> Any: ...


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthorized",
                "missing bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        state = connection.app.state
        tokens: _Authenticator = state.tokens
        principal = tokens.authenticate(token.strip())
        if principal is None:
            raise ApiError(
                401,
                "unauthorized",
                "invalid or revoked token",
                headers={"WWW-Authenticate": "Bearer"},
            )
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


def requires(scope: str) -> Any:
    """A guard that admits principals whose scope ranks at least `scope`.

    Async on purpose: Litestar runs a sync guard in a worker thread on every request."""
    needed = SCOPE_RANK[scope]

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.user
        if SCOPE_RANK.get(getattr(principal, "scope", ""), -1) < needed:
            raise ApiError(403, "forbidden", f"this route needs the '{scope}' scope")

    return guard
