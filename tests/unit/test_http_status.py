"""The one domain error -> HTTP status table, and the SSE translation of a rejected text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from aivos.edge.api.sse import sse_events
from aivos.edge.results import StreamEvent, StreamToken
from aivos.shared.errors import (
    AivosError,
    CallbackHostNotAllowed,
    ConfigError,
    Conflict,
    DataError,
    DocumentNotFound,
    EmptyDocument,
    EmptyText,
    FactNotFound,
    InvalidCallbackUrl,
    JetStreamNotEnabled,
    JobNotFound,
    LinkDown,
    NotFound,
    QuotaExceeded,
    ResidencyDenied,
    StoreClosed,
    TextTooLong,
    WorkflowInvalid,
)
from aivos.shared.http_status import http_status


@pytest.mark.parametrize(
    ("exc", "status", "code", "message"),
    [
        (
            TextTooLong(4001, 4000),
            413,
            "text_too_long",
            "text has 4001 characters; the limit is 4000",
        ),
        (EmptyText(), 400, "empty_text", "text must contain non-whitespace characters"),
        (EmptyDocument(), 400, "empty_document", "document text is empty"),
        (
            InvalidCallbackUrl("ftp://x"),
            400,
            "invalid_callback_url",
            "callback_url must be an absolute http(s) URL",
        ),
        (
            CallbackHostNotAllowed("example.com"),
            400,
            "callback_host_not_allowed",
            "callback host 'example.com' is not in jobs.callback_allow_hosts",
        ),
        (JobNotFound("j1"), 404, "job_not_found", "no job j1"),
        (DocumentNotFound("d1"), 404, "document_not_found", "no document d1"),
        (FactNotFound("s1", "k"), 404, "fact_not_found", "no fact 'k' in session s1"),
        (NotFound("gone"), 404, "not_found", "gone"),
        (WorkflowInvalid("wf.toml", "bad"), 400, "invalid_workflow", "wf.toml: bad"),
        (DataError("f", "bad"), 400, "invalid_data", "f: bad"),
        (Conflict("busy"), 409, "conflict", "busy"),
        (ResidencyDenied("audit", "eu", "local-only"), 403, "residency_denied", None),
        (QuotaExceeded("full"), 507, "quota_exceeded", "full"),
        (LinkDown("hub"), 503, "link_down", "hub: uplink is down"),
        (
            JetStreamNotEnabled("KV bucket b"),
            503,
            "jetstream_not_enabled",
            str(JetStreamNotEnabled("KV bucket b")),
        ),
    ],
)
def test_listed_errors_keep_their_status_code_and_message(
    exc: AivosError, status: int, code: str, message: str | None
) -> None:
    assert http_status(exc, default=599) == status
    assert exc.code == code
    if message is not None:
        assert str(exc) == message


@pytest.mark.parametrize("exc", [StoreClosed("closed"), ConfigError("x", "bad"), AivosError()])
def test_unlisted_errors_get_the_tiers_default(exc: AivosError) -> None:
    assert http_status(exc, default=503) == 503  # the edge agent
    assert http_status(exc, default=400) == 400  # the console


def test_a_rejected_text_becomes_the_error_event() -> None:
    async def events() -> AsyncGenerator[StreamEvent, None]:
        raise TextTooLong(9, 4)
        yield StreamToken("never")

    async def collect() -> list[tuple[str | None, str]]:
        return [(m.event, str(m.data)) async for m in sse_events(events())]

    assert asyncio.run(collect()) == [
        (
            "error",
            '{"error":{"code":"text_too_long","message":"text has 9 characters; the limit is 4"}}',
        )
    ]
