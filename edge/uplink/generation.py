"""Edge-side generation client: escalate a `GenerateRequest` to the cloud workers.

The request is published to ``aivos.gen.<site>`` with a private reply inbox; the worker
answers `Accepted`, then `Token` chunks (when ``request.stream``), then `Done`. Chunks
are yielded as they arrive, so time to first token is one NATS round trip plus the
model's prefill.

Failures raise `shared.errors` exceptions, so the router can fall back deterministically:

* `NoResponders`  - no worker is subscribed (NATS 503 status, detected at once);
* `WorkerSaturated` - every attempt hit a worker at its concurrency limit;
* `DeadlineExceeded` - nothing (or not everything) arrived within the budget,
  including a worker that died mid-request;
* `LinkDown` - the NATS connection is closed or reconnecting;
* `GenerationFailed` - the worker reported an error;
* `SiteQuotaExceeded` (a `WorkerSaturated`) - the cloud's model router says this site has
  used up its generation quota for today: fall back as when workers are saturated.

A request naming a model class (``request.model_class``) goes to
``aivos.gen.<site>.<class>``, where the cloud's model router resolves it to a model and its
fallbacks; the `Done` then names the model, version and whether a fallback answered. When
no router serves that subject (a cloud without model routing: NATS reports no responders)
the request is sent once more without the class, on the default ``aivos.gen.<site>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind, set_span_in_context

from aivos.shared.errors import (
    DeadlineExceeded,
    GenerationFailed,
    LinkDown,
    NoResponders,
    WorkerSaturated,
)
from aivos.shared.messages import (
    INTENT_HEADER,
    Accepted,
    Done,
    Error,
    GenerateRequest,
    Saturated,
    Token,
    decode_reply,
    encode,
    now_ms,
    reply_fields_headers,
)
from aivos.shared.subjects import gen_class_subject, gen_subject
from aivos.shared.tracing import inject_headers, tracer

__all__ = ["stream_generate", "generate", "SiteQuotaExceeded"]

log = logging.getLogger(__name__)

_tracer = tracer(__name__)

_LINK_POLL_S = 0.1  # how often a waiting client re-checks the connection state


class SiteQuotaExceeded(WorkerSaturated):
    """The cloud refused the request: the site's generation quota is used up for today."""

    code = "quota_exceeded"


def _link_ok(nc: NATS) -> bool:
    return bool(nc.is_connected) and not nc.is_reconnecting and not nc.is_closed


def _budget(request: GenerateRequest, timeout_s: float | None) -> tuple[GenerateRequest, float]:
    """The request with an absolute deadline set, and that deadline on the monotonic clock."""
    remaining_ms = request.remaining_ms()
    if timeout_s is not None:
        remaining_ms = min(remaining_ms, timeout_s * 1000.0)
    if math.isinf(remaining_ms):
        raise DeadlineExceeded("a generation request needs timeout_s or deadline_unix_ms")
    if remaining_ms <= 0:
        raise DeadlineExceeded(f"request {request.request_id}: budget already spent")
    deadline_ms = now_ms() + int(remaining_ms)
    if request.deadline_unix_ms <= 0 or deadline_ms < request.deadline_unix_ms:
        request = msgspec.structs.replace(request, deadline_unix_ms=deadline_ms)
    return request, time.monotonic() + remaining_ms / 1000.0


async def stream_generate(
    nc: NATS,
    request: GenerateRequest,
    *,
    timeout_s: float | None = None,
    saturated_retries: int = 2,
    intent: str | None = None,
) -> AsyncIterator[Token | Done]:
    """Send `request` and yield `Token` chunks in order, then the final `Done`.

    The budget is the smaller of `timeout_s` and the request's own deadline; the request
    sent carries the resulting absolute deadline so the worker can drop it once expired.
    A `Saturated` answer is retried (the queue group may pick another worker) up to
    `saturated_retries` times while the budget allows, then `WorkerSaturated` is raised.
    """
    request, deadline = _budget(request, timeout_s)
    if not _link_ok(nc):
        raise LinkDown(request.site, "NATS connection is not connected")
    if request.model_class is not None:
        subject = gen_class_subject(request.site, request.model_class)
    else:
        subject = gen_subject(request.site)
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def _on_msg(msg: Msg) -> None:
        queue.put_nowait(msg)

    try:
        sub = await nc.subscribe(inbox, cb=_on_msg)
    except nats.errors.Error as exc:
        raise LinkDown(request.site, f"cannot subscribe: {type(exc).__name__}") from exc
    payload = encode(request)
    attempts = 0
    next_seq = 0
    span = _tracer.start_span(
        "nats.request", kind=SpanKind.CLIENT, attributes={"messaging.destination": subject}
    )
    # the reply-fields header asks workers to say why generation stopped (`Done.finish_reason`)
    headers = {**reply_fields_headers(), **inject_headers({}, context=set_span_in_context(span))}
    if intent:
        headers[INTENT_HEADER] = intent  # the cloud's per-intent token budgets
    try:
        await _publish(nc, subject, payload, inbox, request.site, headers)
        while True:
            msg = await _next(nc, queue, deadline, request)
            if msg.headers and msg.headers.get("Status") == "503":
                if request.model_class is not None and next_seq == 0:
                    # no model router: the default queue group, as before model routing
                    request = msgspec.structs.replace(request, model_class=None)
                    subject, payload = gen_subject(request.site), encode(request)
                    await _publish(nc, subject, payload, inbox, request.site, headers)
                    continue
                raise NoResponders(f"no generation worker serves {subject}")
            try:
                reply = decode_reply(msg.data)
            except msgspec.MsgspecError as exc:
                raise GenerationFailed("bad_reply", str(exc)) from exc
            if reply.request_id != request.request_id:
                continue  # a late answer to an earlier attempt; never expected, but harmless
            if isinstance(reply, Accepted):
                continue
            if isinstance(reply, Token):
                if reply.seq != next_seq:
                    raise GenerationFailed(
                        "out_of_order", f"token {reply.seq}, expected {next_seq}"
                    )
                next_seq += 1
                yield reply
            elif isinstance(reply, Done):
                yield reply
                return
            elif isinstance(reply, Saturated):
                attempts += 1
                wait_s = reply.retry_after_ms / 1000.0
                if attempts > saturated_retries or time.monotonic() + wait_s >= deadline:
                    raise WorkerSaturated(f"generation workers saturated ({attempts} attempts)")
                await asyncio.sleep(wait_s)
                await _publish(nc, subject, payload, inbox, request.site, headers)
            elif isinstance(reply, Error):
                if reply.code == "deadline_exceeded":
                    raise DeadlineExceeded(f"worker dropped request: {reply.message}")
                if reply.code == "quota_exceeded":
                    raise SiteQuotaExceeded(reply.message)
                raise GenerationFailed(reply.code, reply.message)
    finally:
        span.end()
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _publish(
    nc: NATS, subject: str, payload: bytes, inbox: str, site: str, headers: dict[str, str]
) -> None:
    try:
        await nc.publish(subject, payload, reply=inbox, headers=headers or None)
    except nats.errors.Error as exc:  # closed, reconnecting with a full buffer, ...
        raise LinkDown(site, f"cannot publish: {type(exc).__name__}") from exc


async def _next(
    nc: NATS, queue: asyncio.Queue[Msg], deadline: float, request: GenerateRequest
) -> Msg:
    """The next reply message, or DeadlineExceeded / LinkDown."""
    while True:
        if not queue.empty():
            return queue.get_nowait()
        if not _link_ok(nc):
            raise LinkDown(request.site, "NATS connection lost during generation")
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"request {request.request_id}: no answer within budget")
        try:  # `asyncio.timeout`, not `wait_for`: no task per message on the reply path
            async with asyncio.timeout(min(left, _LINK_POLL_S)):
                return await queue.get()
        except TimeoutError:
            continue


async def generate(
    nc: NATS,
    request: GenerateRequest,
    *,
    timeout_s: float | None = None,
    saturated_retries: int = 2,
    intent: str | None = None,
) -> Done:
    """Send `request` and return the final `Done` (tokens, if streamed, are consumed)."""
    stream = stream_generate(
        nc, request, timeout_s=timeout_s, saturated_retries=saturated_retries, intent=intent
    )
    try:
        async for item in stream:
            if isinstance(item, Done):
                return item
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    raise GenerationFailed("no_done", "reply stream ended without Done")
