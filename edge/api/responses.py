"""The error statuses of every route, documented in one place, with the body they really have.

Every error leaves the API as `ErrorBody` (`{"error": {"code", "message", "detail"?}}`,
`errors.py`), so each documented error status gets that schema. Which statuses a route
can answer is derived here, once, when the app is built (`document_errors`):

- the auth layer (`auth.py`): 429 on every route (per token behind the token middleware,
  per client address on open routes), 401 behind the token middleware, 403 on routes whose
  guard needs more than the `client` scope;
- the request: 400 when the route takes parameters or a body (validation, malformed or
  too deeply nested JSON, bad encoding), 413 when it reads a body (`request_max_body_size`);
- the domain errors the route's controller or handler declares in `opt["raises"]`, each
  mapped by the shared status table (`shared.http_status`): `NotFound` 404, `DiskFull` 507,
  ...; a declared class the table does not list (`AivosError` itself: a store closing, the
  uplink) is the edge's 503.

A route that documents a status itself (`responses=` on the handler, e.g. `/readyz`'s 503
with its readiness body) keeps its own entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from litestar import Litestar
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.routes import HTTPRoute

from aivos.edge.api.auth import OPEN_PATHS
from aivos.edge.api.schemas import ErrorBody
from aivos.shared.errors import AivosError
from aivos.shared.http_status import HTTP_STATUS

__all__ = [
    "UNLISTED_STATUS",
    "document_errors",
    "error_responses",
    "error_statuses",
    "raises",
    "status_of",
]

UNLISTED_STATUS = 503
"""A domain error the shared table does not list: something the agent depends on failed."""

_DESCRIPTIONS = {
    400: "Invalid request: parameters, body fields, malformed or too deeply nested JSON",
    401: "Missing, invalid or revoked bearer token (events: not correctly signed)",
    403: "The token's scope does not allow this route",
    404: "No such resource, or it belongs to another client token",
    409: "The resource is not in a state that allows this (or a limit is reached)",
    413: "The body exceeds the size limit, or a text exceeds its length limit",
    429: "Request rate limit exceeded for this token or client address (see Retry-After)",
    503: "Something the agent depends on is unavailable (store closing, uplink)",
    507: "No space left: the disk is full or the sync outbox quota is reached",
}

# request parameters that are not client input (dependencies are resolved per handler)
_INJECTED = frozenset({"self", "request", "state", "scope", "headers", "cookies", "socket"})


def raises(*errors: type[AivosError]) -> dict[str, Any]:
    """`opt` of a controller or handler that may raise `errors` (a handler's own `raises`
    replaces its controller's)."""
    return {"raises": errors}


def status_of(error: type[AivosError]) -> int:
    """The status of a domain error class: its own or its nearest listed base's entry."""
    for cls in error.__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return UNLISTED_STATUS


def _client_input(handler: HTTPRouteHandler) -> tuple[bool, bool]:
    """(takes parameters or a body, reads a body)."""
    names = set(handler.parsed_fn_signature.parameters) - _INJECTED
    names -= set(handler.resolve_dependencies())
    body = "data" in names or bool(handler.opt.get("raw_body"))
    return bool(names) or body, body


def _behind_token(path: str, handler: HTTPRouteHandler) -> bool:
    if handler.opt.get("exclude_from_auth"):
        return False
    return not any(re.search(pattern, path) for pattern in OPEN_PATHS)


def error_statuses(path: str, handler: HTTPRouteHandler) -> set[int]:
    """Every error status `handler` (served at `path`) can answer (see the module docstring)."""
    # 429 everywhere: routes behind the token are limited per token, open routes (and failed
    # logins) per client address
    statuses: set[int] = {429}
    if _behind_token(path, handler):
        statuses.add(401)
        if any(getattr(guard, "scope", "client") != "client" for guard in handler.resolve_guards()):
            statuses.add(403)
    takes_input, reads_body = _client_input(handler)
    if takes_input:
        statuses.add(400)
    if reads_body:
        statuses.add(413)
    declared: Iterable[type[AivosError]] = handler.opt.get("raises", ())
    statuses |= {status_of(error) for error in declared}
    return statuses


def _specs(statuses: Iterable[int]) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(
            data_container=ErrorBody,
            description=_DESCRIPTIONS[status],
            generate_examples=False,  # random examples would change the document every build
        )
        for status in sorted(statuses)
    }


def document_errors(app: Litestar) -> None:
    """Set `responses` of every documented handler of `app` (before its schema is built)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            own: Mapping[int, ResponseSpec] = handler.responses or {}
            handler.responses = {**_specs(error_statuses(route.path, handler)), **own}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """`responses=` for a handler that answers `statuses` in ways the derivation cannot see
    (e.g. the webhook route's own 401)."""
    return _specs(statuses)
