"""`POST /v1/events/{source}`: inbound webhooks from site systems, HMAC-signed per source.

No bearer token: the caller proves itself with the `v1` signature scheme
(`aivos.edge.workflows.signatures`): HMAC-SHA256 with the source's secret over
``v1:<timestamp>:<delivery id>:<event>:<raw body>``, in the headers `X-Aivos-Delivery`,
`X-Aivos-Event`, `X-Aivos-Timestamp` and `X-Aivos-Signature: v1=<hex>`.
Every refusal (unknown source, missing/malformed/wrong signature, stale timestamp, replayed
delivery) gets the same `401 bad_signature`, so sources cannot be enumerated; refusals are
counted and rolled up in the audit log, never written one by one.
The event name is ``<source>.<X-Aivos-Event>``; every workflow whose `[trigger] events`
lists it starts.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Controller, Request, Response, post

from aivos.edge.api.errors import ApiError
from aivos.edge.api.responses import error_responses, raises
from aivos.edge.workflows.engine import EventRefused, WorkflowEngine
from aivos.edge.workflows.views import EventAccepted
from aivos.shared.errors import AivosError, DiskFull, StepFailed

__all__ = ["EventsController"]

_SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class EventsController(Controller):
    path = "/v1/events"

    @post(
        "/{source:str}",
        status_code=202,
        opt={"exclude_from_auth": True, "raw_body": True, **raises(DiskFull, AivosError)},
        # its own signature check, not the token middleware; 429: the per-address limit
        responses=error_responses(401, 429),
    )
    async def receive(
        self, source: str, workflows: WorkflowEngine, request: Request[Any, Any, Any]
    ) -> Response[EventAccepted]:
        if not _SOURCE_RE.match(source):
            raise _refused()
        body = await request.body()
        try:
            accepted = await workflows.accept_event(source, body, request.headers)
        except EventRefused as exc:
            raise _refused() from exc
        except StepFailed as exc:
            raise ApiError(400, "invalid_event", str(exc)) from exc
        return Response(accepted, status_code=202)


def _refused() -> ApiError:
    # one answer for every reason (the reason is in the metric and the rolled-up audit row)
    return ApiError(401, "bad_signature", "the event is not correctly signed")
