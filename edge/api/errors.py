"""Every error leaves the API as `{"error": {"code", "message", "detail"?}}`; no stack traces.

Domain errors (`AivosError`) get their status from the shared table (`shared.http_status`)
and carry their own `code`; `ApiError` is for conditions only HTTP knows (auth, rate
limits, signatures, malformed bodies)."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException

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
        message = _validation_message(request, detail) or str(exc.detail)
        return error_response(400, "invalid_request", message, detail, headers)
    if status == 400 and isinstance(exc.__cause__, SerializationException):
        problem = str(exc.__cause__) or "malformed"
        message = f"the body is not valid JSON ({problem}); send a JSON object{_expected(request)}"
        return error_response(400, "invalid_json", message, None, headers)
    if status >= 500:  # the framework's own failure: its message is internal, keep it here
        log.error("server error on %s %s: %s", request.method, request.url.path, exc.detail)
        return error_response(status, _CODES.get(status, "error"), _INTERNAL, None, headers)
    message = str(exc.detail) if exc.detail else _CODES.get(status, "error").replace("_", " ")
    return error_response(status, _CODES.get(status, "error"), message, None, headers)


def _expected(request: Request[Any, Any, Any]) -> str:
    """The fields of the route's body Struct: `; required: text (optional: session_id,
    metadata)`; empty when the body is not a Struct."""
    handler = request.scope.get("route_handler")
    field = getattr(handler, "parsed_data_field", None)
    body = getattr(field, "annotation", None)
    if not (isinstance(body, type) and issubclass(body, msgspec.Struct)):
        return ""
    fields = msgspec.structs.fields(body)
    required = ", ".join(f.encode_name for f in fields if f.required) or "none"
    optional = ", ".join(f.encode_name for f in fields if not f.required)
    return f"; required: {required}" + (f" (optional: {optional})" if optional else "")


_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`")


def _validation_message(request: Request[Any, Any, Any], detail: Any) -> str | None:
    """One sentence for the first problem, e.g. `unknown field 'txt'; required: text
    (optional: ...)` (every problem stays in `detail`)."""
    if not isinstance(detail, list) or not detail or not isinstance(detail[0], dict):
        return None
    first = detail[0]
    message, key = str(first.get("message", "")), str(first.get("key", ""))
    if first.get("source") != "body":
        return f"{first.get('source') or 'parameter'} {key!r}: {message}" if key else None
    if found := _UNKNOWN.match(message):
        problem = f"unknown field {found['name']!r}"
    elif found := _MISSING.match(message):
        problem = f"missing required field {found['name']!r}"
    elif key == "data" and message == "'data'":
        problem = "the body is empty; send a JSON object"
    else:
        said = message[:1].lower() + message[1:].replace("`", "'")
        problem = f"the body: {said}" if key == "data" else f"field {key!r}: {said}"
    return problem + _expected(request)


# a domain error the table does not list is a failure of something the agent depends on
_UNLISTED_STATUS = 503


def _domain_error(request: Request[Any, Any, Any], exc: AivosError) -> Response[ErrorBody]:
    status = http_status(exc, _UNLISTED_STATUS)
    if status == _UNLISTED_STATUS:
        log.warning("domain error on %s: %s", request.url.path, exc.code)
    return error_response(status, exc.code, str(exc))


def _bad_encoding(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[ErrorBody]:
    return error_response(400, "invalid_encoding", "request body is not valid UTF-8")


def _too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[ErrorBody]:
    # a body nested deeper than the decoder's recursion limit: the client's doing, no traceback
    log.info("refused a too deeply nested body on %s %s", request.method, request.url.path)
    return error_response(400, "invalid_request", "the JSON body is nested too deeply")


_INTERNAL = "internal error; see the agent log"


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", _INTERNAL)


exception_handlers: dict[Any, Any] = {
    HTTPException: _http_error,
    AivosError: _domain_error,
    UnicodeDecodeError: _bad_encoding,
    RecursionError: _too_deep,
    Exception: _unexpected,
}
