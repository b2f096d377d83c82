"""Every error leaves the API as `{"error": {"code", "message", "detail"?}}`; no stack traces.

Domain errors (`AivosError`) get their status from the shared table (`shared.http_status`)
and carry their own `code`; `ApiError` is for conditions only HTTP knows (auth, rate
limits, signatures, malformed bodies)."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from aivos.edge.api.schemas import ErrorBody, ErrorDetail
from aivos.shared.errors import AivosError
from aivos.shared.http_status import http_status

__all__ = ["ApiError", "exception_handlers", "error_response"]

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(HTTPException):
    """An HTTP error with an explicit machine-readable code."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.extra_detail = detail


def error_response(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(ErrorDetail(code=code, message=message, detail=detail)),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    headers = dict(exc.headers or {})
    if isinstance(exc, ApiError):
        return error_response(status, exc.code, exc.message, exc.extra_detail, headers)
    if isinstance(exc, ValidationException):
        detail = exc.extra if exc.extra else None
        return error_response(400, "invalid_request", str(exc.detail), detail, headers)
    message = str(exc.detail) if exc.detail else _CODES.get(status, "error").replace("_", " ")
    return error_response(status, _CODES.get(status, "error"), message, None, headers)


# a domain error the table does not list is a failure of something the agent depends on
_UNLISTED_STATUS = 503


def _domain_error(request: Request[Any, Any, Any], exc: AivosError) -> Response[ErrorBody]:
    status = http_status(exc, _UNLISTED_STATUS)
    if status == _UNLISTED_STATUS:
        log.warning("domain error on %s: %s", request.url.path, exc.code)
    return error_response(status, exc.code, str(exc))


def _bad_encoding(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[ErrorBody]:
    return error_response(400, "invalid_encoding", "request body is not valid UTF-8")


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; see the agent log")


exception_handlers: dict[Any, Any] = {
    HTTPException: _http_error,
    AivosError: _domain_error,
    UnicodeDecodeError: _bad_encoding,
    Exception: _unexpected,
}
