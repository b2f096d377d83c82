"""Console authentication: server-side sessions, CSRF tokens, operator bearer tokens.

* Login checks the operator's scrypt hash; a session is a random 32-byte token in the cookie
  ``aivos_session`` (HttpOnly, SameSite=Strict, Path=/), stored only as its sha256 with the
  session's CSRF token and expiry (8 h).
* Every state-changing form carries the session's CSRF token (field ``csrf``); JSON API
  writes made with a session cookie must send it as ``X-CSRF-Token``. Bearer-token
  requests need no CSRF token (browsers never attach them on their own).
* The login form itself uses a double-submit token (cookie ``aivos_login_csrf`` = field).
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from aivos.cloud.fleet.registry import Registry
from aivos.cloud.fleet.tokens import check_token, hash_token

__all__ = [
    "SESSION_COOKIE",
    "LOGIN_CSRF_COOKIE",
    "SESSION_TTL_S",
    "LoginRequired",
    "Operator",
    "identify",
    "page_guard",
    "api_guard",
    "new_session",
    "check_csrf",
    "LoginThrottle",
]

SESSION_COOKIE = "aivos_session"
LOGIN_CSRF_COOKIE = "aivos_login_csrf"
SESSION_TTL_S = 8 * 3600


class LoginRequired(NotAuthorizedException):
    """An HTML page was requested without a session: the app redirects to /login."""


class Operator:
    __slots__ = ("name", "via", "csrf", "session_hash")

    def __init__(self, name: str, via: str, csrf: str = "", session_hash: str = "") -> None:
        self.name = name
        self.via = via  # "session" | "token"
        self.csrf = csrf
        self.session_hash = session_hash


def _registry(connection: ASGIConnection[Any, Any, Any, Any]) -> Registry:
    registry: Registry = connection.app.state.registry
    return registry


def identify(connection: ASGIConnection[Any, Any, Any, Any]) -> Operator | None:
    registry = _registry(connection)
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        name = check_token(registry, header[7:].strip())
        return Operator(f"token:{name}", "token") if name is not None else None
    cookie = connection.cookies.get(SESSION_COOKIE)
    if cookie:
        digest = hash_token(cookie)
        found = registry.session(digest)
        if found is not None:
            return Operator(found[0], "session", csrf=found[1], session_hash=digest)
    return None


def page_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    op = identify(connection)
    if op is None or op.via != "session":
        raise LoginRequired("login required")
    connection.state.operator = op


def api_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    op = identify(connection)
    if op is None:
        raise NotAuthorizedException("an operator token or session is required")
    if (
        op.via == "session"
        and connection.scope.get("method", "GET") not in ("GET", "HEAD")
        and not hmac.compare_digest(connection.headers.get("x-csrf-token", ""), op.csrf)
    ):
        raise PermissionDeniedException("missing or wrong X-CSRF-Token")
    connection.state.operator = op


def new_session(registry: Registry, username: str) -> str:
    token = secrets.token_urlsafe(32)
    registry.add_session(
        hash_token(token), username, secrets.token_urlsafe(24), time.time() + SESSION_TTL_S
    )
    return token


def check_csrf(op: Operator, submitted: str | None) -> None:
    if not submitted or not hmac.compare_digest(submitted, op.csrf):
        raise PermissionDeniedException("invalid CSRF token; reload the page and retry")


class LoginThrottle:
    """At most `max_failures` failed logins per username within `window_s`; then that
    username is refused (even with the right password) until the window has passed."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, list[float]] = {}

    def _recent(self, username: str, now: float) -> list[float]:
        recent = [t for t in self._failures.get(username, []) if now - t < self.window_s]
        if recent:
            self._failures[username] = recent
        else:
            self._failures.pop(username, None)
        return recent

    def blocked(self, username: str) -> bool:
        return len(self._recent(username, time.time())) >= self.max_failures

    def failed(self, username: str) -> None:
        now = time.time()
        self._recent(username, now)
        self._failures.setdefault(username, []).append(now)
        if len(self._failures) > 10_000:  # bounded memory under a spray of usernames
            oldest = min(self._failures, key=lambda u: self._failures[u][-1])
            self._failures.pop(oldest, None)

    def succeeded(self, username: str) -> None:
        self._failures.pop(username, None)
