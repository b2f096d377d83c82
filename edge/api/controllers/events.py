"""`POST /v1/events/{source}`: inbound webhooks from site systems, HMAC-signed per source.

No bearer token: the caller proves itself with `X-Aivos-Signature: sha256=<hex>` over
``<X-Aivos-Timestamp>.<raw body>`` using the source's secret from the secrets file.
Unsigned, stale, replayed or badly signed calls get 401 and an `auth_failure` audit row.
The event name is ``<source>.<type>`` (`X-Aivos-Event` header or the body's `type`);
every workflow whose `[trigger] events` lists it starts. `X-Aivos-Delivery` (optional)
makes redeliveries start no second run.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Controller, Request, Response, post

from aivos.edge.api.errors import ApiError
from aivos.edge.workflows.engine import EventRefused, WorkflowEngine
from aivos.edge.workflows.views import EventAccepted
from aivos.shared.errors import StepFailed

__all__ = ["EventsController"]

_SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class EventsController(Controller):
    path = "/v1/events"

    @post("/{source:str}", status_code=202, opt={"exclude_from_auth": True})
    async def receive(
        self, source: str, workflows: WorkflowEngine, request: Request[Any, Any, Any]
    ) -> Response[EventAccepted]:
        if not _SOURCE_RE.match(source):
            raise ApiError(404, "unknown_source", "no such event source")
        body = await request.body()
        try:
            accepted = await workflows.accept_event(source, body, request.headers)
        except EventRefused as exc:
            raise ApiError(
                401, "bad_signature", "the event is not correctly signed", {"reason": exc.reason}
            ) from exc
        except StepFailed as exc:
            raise ApiError(400, "invalid_event", str(exc)) from exc
        return Response(accepted, status_code=202)
