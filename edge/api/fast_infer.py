"""A lean path for the busiest request: a plain JSON `POST /v1/infer`.

Litestar's per-request machinery (router lookup, the exception and authentication
middleware, the kwargs model and dependency injection, a `Request` object, the response
object) was ~45 % of the event loop's CPU around the pipeline (docs/performance.md). This
ASGI wrapper sits in front of Litestar's handler and serves the common case itself, with
the same checks and the same bytes out:

* the body is read under Litestar's size limit (the announced `content-length` and the
  bytes received) and decoded into the route's own `InferRequest` (msgspec, strict);
* the bearer token is authenticated, its scope checked (`client`), the per-token rate
  limit charged (`auth.py`'s functions and the app's limiter);
* `pipeline.infer` runs, and its `InferResponse` is encoded with Litestar's own encoder
  under the headers Litestar sends (`content-type`, `content-length`);
* an exception from the rate limit or the pipeline goes through the app's exception
  handlers (`errors.py`), exactly as Litestar's exception middleware would render it.

Anything else is handed to Litestar untouched, with the body it already read replayed:
another path or method, a streaming request (`"stream": true` or `Accept:
text/event-stream`), a body that does not decode strictly (Litestar reports why), a body or
an announced length over the limit, an unparsable or repeated `content-length` or
`authorization`, a missing, malformed, unknown or under-scoped token (Litestar answers
401/403 and charges the address bucket), a content type other than JSON, the app not
started yet. Nothing with a side effect runs before that decision, so a handed-over request
is served exactly as before. The route stays declared in Litestar, so the OpenAPI schema is
the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Litestar
from litestar.middleware._internal.exceptions.middleware import get_exception_handler
from litestar.serialization import encode_json, get_serializer
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from aivos.edge.agent import Agent
from aivos.edge.api.auth import SCOPE_RANK, caller_for_principal, rate_limited
from aivos.edge.api.convert import infer_response
from aivos.edge.api.schemas import InferRequest

__all__ = ["FastInfer"]

_PATH = "/v1/infer"
_EVENT_STREAM = b"text/event-stream"
_JSON = b"application/json"
_CLIENT = SCOPE_RANK["client"]


class FastInfer:
    """ASGI app: serves a plain JSON `POST /v1/infer` (module doc), else calls `inner`."""

    def __init__(
        self,
        inner: ASGIApp,
        app: Litestar,
        agent: Callable[[], Agent | None],
        max_body_bytes: int | None,
    ) -> None:
        self.inner = inner
        self._app = app
        self._agent = agent
        self._max_body = max_body_bytes
        self._decode = msgspec.json.Decoder(InferRequest).decode
        self._serializer = get_serializer(app.type_encoders)
        self.enabled = True  # tests turn it off to compare with Litestar's own answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != _PATH
            or scope.get("method") != "POST"
            or not self.enabled
        ):
            await self.inner(scope, receive, send)
            return
        agent = self._agent()
        read: list[ReceiveMessage] = []
        body = await self._read(receive, read) if agent is not None else None
        request = None
        if body is not None and agent is not None:
            request = self._admit(scope, body)
        if request is None or agent is None:
            await self.inner(scope, _replay(read, receive), send)
            return
        data, principal = request
        state = self._app.state
        try:
            wait = state.rate_limiter.allow(principal.name)
            if wait > 0:
                raise rate_limited(wait, "this token")
            result = await agent.pipeline.infer(data, caller_for_principal(principal))
            payload = encode_json(infer_response(result), self._serializer)
        except Exception as exc:  # rendered as Litestar's exception middleware would
            await self._error(scope, _replay([], receive), send, exc)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", _JSON),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _read(self, receive: Receive, read: list[ReceiveMessage]) -> bytes | None:
        """The whole body, or None (hand over) when it is over the limit or the client left;
        every message taken from `receive` is kept in `read` for the replay."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if self._max_body is not None and size > self._max_body:
                return None
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _admit(self, scope: Scope, body: bytes) -> tuple[InferRequest, Any] | None:
        """(request, principal) when this is the plain case, else None. No side effects."""
        auth: bytes | None = None
        length: bytes | None = None
        for name, value in scope["headers"]:
            name = name.lower()
            if name in (b"authorization", b"content-length"):
                if (auth if name == b"authorization" else length) is not None:
                    return None  # two of them: Litestar decides
                if name == b"authorization":
                    auth = value
                else:
                    length = value
            elif (name == b"accept" and _EVENT_STREAM in value) or (
                name == b"content-type" and value.split(b";", 1)[0].strip().lower() != _JSON
            ):
                return None
        if auth is None or (length is not None and not self._length_ok(length)):
            return None
        scheme, _, token = auth.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            data = self._decode(body)
        except Exception:  # Litestar's decoder reports the problem in its own words
            return None
        if data.stream:
            return None
        principal = self._app.state.tokens.authenticate(token)
        if principal is None or SCOPE_RANK.get(getattr(principal, "scope", ""), -1) < _CLIENT:
            return None
        return data, principal

    def _length_ok(self, header: bytes) -> bool:
        """Litestar refuses an unparsable `content-length` (400) and an announced one over
        the limit (413) before reading the body, whatever the body's real size."""
        try:
            announced = int(header.decode("latin-1"))
        except ValueError:
            return False
        return self._max_body is None or announced <= self._max_body

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        app = self._app
        handler = get_exception_handler(app.exception_handlers, exc)
        if handler is None:
            raise exc
        request = app.request_class(scope=scope, receive=receive, send=send)  # type: ignore[arg-type]
        response = handler(request, exc)
        asgi = response.to_asgi_response(app=None, request=request, type_encoders=app.type_encoders)
        await asgi(scope, receive, send)


def _replay(read: list[ReceiveMessage], receive: Receive) -> Receive:
    """A `receive` that returns the messages already taken, then the live ones."""
    pending = list(read)

    async def replay() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
