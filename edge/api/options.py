"""`OPTIONS` answered with every method of the path, in one `before_request` hook.

Litestar (2.25) builds the automatic `OPTIONS` handler of a path with the first route made
for it; when more handlers join that path later (`GET /` and `POST /` of one controller),
the route is rebuilt but keeps the old `OPTIONS` handler, whose `Allow` lists only the
methods known when it was made (`Allow: OPTIONS, POST` for `/v1/knowledge`). This hook
answers `OPTIONS` itself from the finished routes. Guards still run first, so `OPTIONS`
needs the same token as the path's other methods.
"""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT

__all__ = ["allowed_methods", "answer_options"]


def allowed_methods(request: Request[Any, Any, Any]) -> set[str]:
    """Every method served at the path template `request` was routed to."""
    template = request.scope.get("path_template")
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            methods |= set(route.methods)
    return methods


async def answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
    """`before_request`: 204 with the complete `Allow` for `OPTIONS`, else carry on."""
    if request.method != "OPTIONS":
        return None
    methods = allowed_methods(request)
    if not methods:
        return None
    return Response(
        None,
        status_code=HTTP_204_NO_CONTENT,
        headers={"Allow": ", ".join(sorted(methods))},
        media_type=MediaType.TEXT,
    )
