"""Domain errors as the console answers them, through the shared status table
(`shared.http_status`): one translation for every page and API route.

A class the table does not list is a request the fleet refused (400). The body is
litestar's error body (the HTML error page for pages): the message as `detail` and the
error's code in `extra`, except for 404s, which have always been litestar's plain
`NotFoundException`."""

from __future__ import annotations

from litestar.exceptions import HTTPException, NotFoundException

from aivos.shared.errors import AivosError
from aivos.shared.http_status import http_status

__all__ = ["http_error"]

_UNLISTED_STATUS = 400


def http_error(exc: AivosError, status: int | None = None) -> HTTPException:
    """`exc` as an HTTP error; `status` overrides the table where a route knows better."""
    code = status or http_status(exc, _UNLISTED_STATUS)
    if code == 404:
        return NotFoundException(str(exc))
    return HTTPException(status_code=code, detail=str(exc), extra={"code": exc.code})
