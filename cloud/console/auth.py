"""Console authentication: server-side sessions, CSRF tokens, operator bearer tokens.

* Login checks the operator's scrypt hash; a session is a random 32-byte token in the cookie
  ``aivos_session`` (HttpOnly, SameSite=Strict, Path=/), stored only as its sha256 with the
  session's CSRF token and expiry (8 h).
* Every state-changing form carries the session's CSRF token (field ``csrf``); JSON API
  writes made with a session cookie must send it as ``X-CSRF-Token``. Bearer-token
  requests need no CSRF token (browsers never attach them on their own).
* The login form itself uses a double-submit token (cookie ``aivos_login_csrf`` = field).
* Roles (``viewer`` < ``operator`` < ``admin``, `ROLES`): every page and API route needs
  one. A route declares it as ``opt={"role": ...}``; otherwise reads (GET/HEAD) need
  ``viewer`` and writes need ``operator``. Sessions take the operator's role (read at
  every request), tokens the role they were created with; expired or revoked tokens and
  sessions are refused.
* Login throttling (`LoginThrottle`): back-off per client address, and per user name
  once failures for it come from many addresses, sparing addresses the operator has
  logged in from: an attacker cannot lock the real operator out.
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
from aivos.cloud.fleet.registry.operators import ROLES
from aivos.cloud.fleet.tokens import TOKEN_PREFIX, hash_token

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
    "ROLES",
    "required_role",
]

SESSION_COOKIE = "aivos_session"
LOGIN_CSRF_COOKIE = "aivos_login_csrf"
SESSION_TTL_S = 8 * 3600


class LoginRequired(NotAuthorizedException):
    """An HTML page was requested without a session: the app redirects to /login."""


class Operator:
    __slots__ = ("name", "via", "csrf", "session_hash", "role")

    def __init__(
        self, name: str, via: str, csrf: str = "", session_hash: str = "", role: str = "viewer"
    ) -> None:
        self.name = name
        self.via = via  # "session" | "token"
        self.csrf = csrf
        self.session_hash = session_hash
        self.role = role

    def may(self, role: str) -> bool:
        """True if this operator's role is `role` or stronger."""
        return self.role in ROLES and ROLES.index(self.role) >= ROLES.index(role)


def _registry(connection: ASGIConnection[Any, Any, Any, Any]) -> Registry:
    registry: Registry = connection.app.state.registry
    return registry


def identify(connection: ASGIConnection[Any, Any, Any, Any]) -> Operator | None:
    registry = _registry(connection)
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
        info = registry.token_info(hash_token(token)) if token.startswith(TOKEN_PREFIX) else None
        return Operator(f"token:{info[0]}", "token", role=info[1]) if info else None
    cookie = connection.cookies.get(SESSION_COOKIE)
    if cookie:
        digest = hash_token(cookie)
        found = registry.session(digest)
        if found is not None:
            return Operator(found[0], "session", csrf=found[1], session_hash=digest, role=found[2])
    return None


def required_role(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> str:
    """The role a route needs: its ``opt["role"]``, else viewer to read, operator to write."""
    declared = handler.opt.get("role")
    if declared is not None:
        return str(declared)
    return "viewer" if connection.scope.get("method", "GET") in ("GET", "HEAD") else "operator"


def _check_role(
    op: Operator, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    role = required_role(connection, handler)
    if not op.may(role):
        raise PermissionDeniedException(f"this needs the {role} role (you are {op.role})")


def page_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    op = identify(connection)
    if op is None or op.via != "session":
        raise LoginRequired("login required")
    _check_role(op, connection, handler)
    connection.state.operator = op


def api_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    op = identify(connection)
    if op is None:
        raise NotAuthorizedException("an operator token or session is required")
    _check_role(op, connection, handler)
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
    """Exponential back-off on failed logins, never a hard lock.

    * Per client address: after `free_failures` failures within `window_s` (for any user
      names: a spray of 30 names from one address is slowed like 30 guesses at one), the
      address must wait ``base_s * 2**(extra failures)`` (at most `cap_s`) after its last
      failure.
    * Per user name: once failures for a name come from `spread_addresses` different
      addresses (a distributed guess), the name backs off the same way, except from
      addresses where it has logged in before. Failures from one address never slow the
      name down elsewhere, so an attacker cannot lock the real operator out.
    """

    def __init__(
        self,
        free_failures: int = 5,
        window_s: float = 900.0,
        base_s: float = 2.0,
        cap_s: float = 300.0,
        spread_addresses: int = 10,
        max_keys: int = 10_000,
    ) -> None:
        self.free_failures = free_failures
        self.window_s = window_s
        self.base_s = base_s
        self.cap_s = cap_s
        self.spread_addresses = spread_addresses
        self.max_keys = max_keys
        self._by_address: dict[str, list[float]] = {}
        self._by_user: dict[str, dict[str, float]] = {}  # user -> address -> last failure
        self._known: dict[str, set[str]] = {}  # user -> addresses it logged in from

    def _wait(self, failures: list[float], now: float) -> float:
        extra = len(failures) - self.free_failures
        if extra < 0:
            return 0.0
        delay = min(self.cap_s, self.base_s * 2 ** min(extra, 30))
        return max(0.0, failures[-1] + delay - now)

    def retry_after(self, username: str, address: str, now: float | None = None) -> float:
        """Seconds this address must wait before trying `username` (0: go ahead)."""
        now = time.time() if now is None else now
        wait = self._wait(self._recent_address(address, now), now)
        spread = self._recent_user(username, now)
        if len(spread) >= self.spread_addresses and address not in self._known.get(username, ()):
            extra = len(spread) - self.spread_addresses
            delay = min(self.cap_s, self.base_s * 2 ** min(extra, 30))
            wait = max(wait, max(spread.values()) + delay - now)
        return wait

    def blocked(self, username: str, address: str = "") -> bool:
        return self.retry_after(username, address) > 0

    def failed(self, username: str, address: str = "", now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._recent_address(address, now)
        self._by_address.setdefault(address, []).append(now)
        self._recent_user(username, now)
        self._by_user.setdefault(username, {})[address] = now
        for table in (self._by_address, self._by_user):
            if len(table) > self.max_keys:  # bounded memory under a spray
                table.pop(next(iter(table)), None)

    def succeeded(self, username: str, address: str = "") -> None:
        self._by_address.pop(address, None)
        known = self._known.setdefault(username, set())
        if len(known) < 100:
            known.add(address)
        if len(self._known) > self.max_keys:
            self._known.pop(next(iter(self._known)), None)

    def _recent_address(self, address: str, now: float) -> list[float]:
        recent = [t for t in self._by_address.get(address, []) if now - t < self.window_s]
        if recent:
            self._by_address[address] = recent
        else:
            self._by_address.pop(address, None)
        return recent

    def _recent_user(self, username: str, now: float) -> dict[str, float]:
        recent = {
            a: t for a, t in self._by_user.get(username, {}).items() if now - t < self.window_s
        }
        if recent:
            self._by_user[username] = recent
        else:
            self._by_user.pop(username, None)
        return recent
