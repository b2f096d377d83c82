"""The generation worker: serves ``aivos.gen.*`` in the queue group ``aivos-gen``.

Per request (see `shared.messages` for the protocol):

* undecodable -> `Error(bad_request)`; deadline already passed -> `Error(deadline_exceeded)`;
* `concurrency` requests already in flight -> `Saturated(retry_after_ms)` at once, so the
  edge can retry (the queue group may pick another worker) or fall back; `background`
  requests (escalations completed after an outage) get at most `concurrency - 1` places,
  so one is always left for an `interactive` one;
* the backend runs at most `slots` requests at once (llama.cpp: 1); accepted requests wait
  for a slot interactive-first (`cloud.worker.slots`), within their deadline;
* otherwise `Accepted`, then one `Token` per chunk as the backend produces it (when the
  request asks to stream), then `Done`; if the deadline passes mid-generation the backend
  is stopped and `Error(deadline_exceeded)` is sent.

To an edge that reads finish reasons (`shared.messages.reads_finish_reason`), `Done` names
why generation stopped, as the backend reported it (``stop``, or ``length``: cut at
``max_tokens``). A deadline passing mid-generation stays an `Error`: the edge then falls
back (and a model router tries the class's next model), which a partial `Done` would stop.

Serving a catalogue model (``model=``, see `cloud.worker.catalogue`), the worker also
clamps ``max_tokens`` to the model's limit, names the model and version in `Done` when the
request named a model class (requests that name none are answered exactly as before, so
an edge built before model routing decodes them), and publishes `WorkerStats` on
``aivos.poolstats`` every ``stats_interval_s`` for its pool supervisor.

**Behind a model router** (the request carries `ACCEPT_WITHIN_HEADER`, ms): a request
that does not stream gets its `Accepted` only if no `Done`/`Error` went out within that
time (or half the request's remaining budget, if less), so a quick answer costs one
message, not two, on the router's hop; the router still hears from a live, busy worker
long before its accept wait runs out. With ``Aivos-Reply-Direct`` (`REPLY_DIRECT_HEADER`)
as well, such a request's `Done` goes to the edge's inbox named there, labelled with the
router's ``Aivos-Generator``, and the router gets a batched notice of it
(`cloud.worker.notices`); `Accepted`, `Saturated` and errors still go to the router, which
falls back on them. When the backend counted the prompt's tokens, the
`Done` carries them in the NATS header `PROMPT_TOKENS_HEADER` (usage and cost; a header,
so no message type changes and an edge never sees it), or the notice does.

`drain()` stops taking requests (unsubscribes), lets in-flight ones finish within a grace
period, then drains the connection. The CLI calls it on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from aivos.cloud.worker.backend import Finished, GenerationBackend
from aivos.cloud.worker.draining import drain_in_flight
from aivos.cloud.worker.notices import NoticeBatcher
from aivos.cloud.worker.slots import PrioritySlots
from aivos.cloud.worker.stats import LatencyWindow, WorkerStats, encode_stats
from aivos.shared.errors import ConfigError
from aivos.shared.messages import (
    Accepted,
    Done,
    Error,
    FinishReason,
    GenerateRequest,
    Reply,
    Saturated,
    Timings,
    Token,
    decode_request,
    encode,
    reads_finish_reason,
)
from aivos.shared.subjects import GEN_ALL_SITES, GEN_QUEUE_GROUP, POOL_STATS
from aivos.shared.tracing import extract_context, tracer

__all__ = [
    "ACCEPT_WITHIN_HEADER",
    "GENERATOR_HEADER",
    "PROMPT_TOKENS_HEADER",
    "REPLY_DIRECT_HEADER",
    "Direct",
    "GenerationWorker",
    "parse_generator",
]

# a router's request header: send `Accepted` only when not answered within this many ms
ACCEPT_WITHIN_HEADER = "Aivos-Accept-Within"
# the worker's `Done` header: the prompt's tokens as the model's tokenizer counted them
PROMPT_TOKENS_HEADER = "Aivos-Prompt-Tokens"
# a router's request header, "<requester's inbox> <notices subject>[ now]": the `Done` of
# a request that does not stream goes to the inbox, a notice of it to the router's notices
# subject, batched (`cloud.worker.notices`); with "now", sent before the `Done` (a site
# under a quota, a breaker's trial: counted before the requester's next request)
REPLY_DIRECT_HEADER = "Aivos-Reply-Direct"
# with `REPLY_DIRECT_HEADER`: "<fallback 0|1> <model> <version>", what the `Done` names
GENERATOR_HEADER = "Aivos-Generator"

log = logging.getLogger(__name__)
_tracer = tracer(__name__)


class Direct(msgspec.Struct, frozen=True):
    """Where a router's request is answered straight (`REPLY_DIRECT_HEADER`), and the
    generator its `Done` names (`GENERATOR_HEADER`)."""

    inbox: str
    notices: str  # the router's notices subject
    now: bool = False  # the notice goes out before the `Done`, not in a later batch
    model: str = ""
    version: str = ""
    fallback: bool = False


def parse_generator(value: str | None) -> tuple[str, str, bool] | None:
    """(model, version, fallback) of a `GENERATOR_HEADER` value; None when malformed."""
    if not value:
        return None
    parts = value.split(" ", 2)
    if len(parts) != 3 or parts[0] not in ("0", "1") or not parts[1]:
        return None
    return parts[1], parts[2], parts[0] == "1"


def _direct(headers: dict[str, str] | None, request: GenerateRequest) -> Direct | None:
    """The `Direct` a router asked for, if any (a streamed request is always relayed: the
    router must see its tokens to know when the answer is committed)."""
    value = headers.get(REPLY_DIRECT_HEADER) if headers else None
    if not value or request.stream:
        return None
    inbox, _, notices = value.partition(" ")
    notices, _, when = notices.partition(" ")
    if not inbox or not notices:
        return None
    assert headers is not None
    now = when == "now"
    generator = parse_generator(headers.get(GENERATOR_HEADER))
    if generator is None:
        return Direct(inbox, notices, now)
    model, version, fallback = generator
    return Direct(inbox, notices, now, model, version, fallback)


class GenerationWorker:
    """Serve generation requests from NATS with one `GenerationBackend`."""

    def __init__(
        self,
        backend: GenerationBackend,
        *,
        concurrency: int = 2,
        name: str | None = None,
        subject: str = GEN_ALL_SITES,
        queue: str = GEN_QUEUE_GROUP,
        retry_after_ms: int = 50,
        slots: int | None = None,
        model: str = "",
        version: str = "",
        max_tokens: int | None = None,
        also: tuple[tuple[str, str], ...] = (),
        stats_interval_s: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError("worker.concurrency", "must be >= 1")
        self.backend = backend
        self.concurrency = concurrency
        # how many generations the backend runs at once (None: no limit of the worker's own)
        self.slots = PrioritySlots(slots or getattr(backend, "parallel", None))
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.subject = subject
        self.queue = queue
        self.retry_after_ms = retry_after_ms
        self.model = model
        self.version = version
        self.max_tokens = max_tokens
        # further (subject, queue group) pairs served, e.g. the default path for a model
        self.also = also
        self.stats_interval_s = stats_interval_s
        self.latencies = LatencyWindow()
        self._stats_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._nc: NATS | None = None
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._late: set[asyncio.Task[None]] = set()  # late `Accepted` sends in flight
        self._notices = NoticeBatcher(self._publish_raw)  # answers sent straight to edges
        self.served = 0
        self.rejected = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self, nc: NATS) -> None:
        """Join the queue group on `nc` (nats-py restores the subscription on reconnect)."""
        self._nc = nc
        for subject, queue in ((self.subject, self.queue), *self.also):
            self._subs.append(await nc.subscribe(subject, queue=queue, cb=self._on_request))
        await nc.flush()
        if self.model and self.stats_interval_s:
            self._stats_task = asyncio.create_task(self._publish_stats())
        log.info(
            "worker %s serving %s (queue %s, backend %s, concurrency %d)",
            self.name,
            self.subject,
            self.queue,
            self.backend.name,
            self.concurrency,
        )

    async def drain(self, grace_s: float = 30.0) -> None:
        """Stop taking requests, finish in-flight ones (cancel after `grace_s`)."""
        self._stopping = True
        await drain_in_flight(self._subs, self._tasks, grace_s)
        self._subs = []
        await self._notices.close()
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
            await self._send_stats()  # the supervisor sees this worker leave at once
        if self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)

    def stats(self) -> WorkerStats:
        p95 = self.latencies.p(95)
        return WorkerStats(
            model=self.model,
            worker=self.name,
            in_flight=self.in_flight,
            waiting=self.slots.waiting,
            capacity=self.concurrency,
            served=self.served,
            rejected=self.rejected,
            p95_ms=0.0 if math.isnan(p95) else p95,
            sent_unix_ms=time.time_ns() // 1_000_000,
            stopping=self._stopping,
        )

    async def _send_stats(self) -> None:
        if self._nc is None or not self._nc.is_connected:
            return
        with contextlib.suppress(Exception):
            await self._nc.publish(POOL_STATS, encode_stats(self.stats()))

    async def _publish_stats(self) -> None:
        assert self.stats_interval_s
        while True:
            await self._send_stats()
            await asyncio.sleep(self.stats_interval_s)

    async def _reply(
        self, subject: str, message: Reply, headers: dict[str, str] | None = None
    ) -> None:
        assert self._nc is not None
        with contextlib.suppress(Exception):  # the link may be gone; the edge times out
            await self._nc.publish(subject, encode(message), headers=headers)

    async def _publish_raw(self, subject: str, data: bytes) -> None:
        assert self._nc is not None
        with contextlib.suppress(Exception):  # lost: the router's attempt times out
            await self._nc.publish(subject, data)

    def _accept_late(self, request_id: str, reply_to: str) -> None:
        """The late `Accepted` of a router's request (a timer callback)."""
        task = asyncio.create_task(
            self._reply(reply_to, Accepted(request_id=request_id, worker=self.name))
        )
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _on_request(self, msg: Msg) -> None:
        # Runs serially for the subscription: decide fast, generate in a task.
        received = time.monotonic()
        reply_to = msg.reply
        if not reply_to:
            return
        try:
            request = decode_request(msg.data)
        except msgspec.MsgspecError as exc:
            await self._reply(reply_to, Error(request_id="", code="bad_request", message=str(exc)))
            return
        if request.expired():
            log.info("dropping expired request %s", request.request_id)
            await self._reply(
                reply_to,
                Error(
                    request_id=request.request_id,
                    code="deadline_exceeded",
                    message="deadline passed before the worker started",
                ),
            )
            return
        if self.max_tokens is not None and request.max_tokens > self.max_tokens:
            request = msgspec.structs.replace(request, max_tokens=self.max_tokens)
        places = self.concurrency
        if request.priority == "background" and places > 1:
            places -= 1  # keep a place for an interactive request
        if len(self._tasks) >= places:
            self.rejected += 1
            await self._reply(
                reply_to,
                Saturated(
                    request_id=request.request_id,
                    retry_after_ms=self.retry_after_ms,
                    worker=self.name,
                ),
            )
            return
        headers = msg.headers
        within = headers.get(ACCEPT_WITHIN_HEADER) if headers else None
        accept_after: float | None = None
        if within is not None and not request.stream:
            try:
                accept_after = min(float(within), request.remaining_ms() / 2) / 1000.0
            except ValueError:
                accept_after = None
        if accept_after is None:
            await self._reply(reply_to, Accepted(request_id=request.request_id, worker=self.name))
        parent = extract_context(headers)
        finish = reads_finish_reason(headers)
        direct = _direct(headers, request)
        task = asyncio.create_task(
            self._serve_traced(request, reply_to, received, parent, finish, accept_after, direct)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_traced(
        self,
        request: GenerateRequest,
        reply_to: str,
        received: float,
        parent: Context,
        finish: bool = False,
        accept_after: float | None = None,
        direct: Direct | None = None,
    ) -> None:
        """`_serve` inside a `worker.generate` span, child of the edge's `nats.request`;
        `accept_after`: send `Accepted` only if still serving after that many seconds;
        `direct`: the `Done` goes straight to the requester (a router's request)."""
        late = None
        if accept_after is not None:
            late = asyncio.get_running_loop().call_later(
                max(0.0, accept_after), self._accept_late, request.request_id, reply_to
            )
        try:
            with _tracer.start_as_current_span(
                "worker.generate",
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"aivos.worker": self.name, "aivos.site": request.site},
            ):
                await self._serve(request, reply_to, received, finish, late, direct)
        finally:
            if late is not None:
                late.cancel()

    async def _serve(
        self,
        request: GenerateRequest,
        reply_to: str,
        received: float,
        finish: bool = False,
        late: asyncio.TimerHandle | None = None,
        direct: Direct | None = None,
    ) -> None:
        """Generate and answer. `finish`: the edge reads `Done.finish_reason`; `late`: the
        pending late `Accepted`, cancelled before the answer goes out; `direct`: where the
        `Done` goes instead of `reply_to` (which gets a notice of it)."""
        start = time.monotonic()
        first: float | None = None
        parts: list[str] = []
        reason: FinishReason | None = None
        prompt_tokens: int | None = None
        stream = self.backend.stream(request)
        try:
            remaining_ms = request.remaining_ms()
            budget_s = None if math.isinf(remaining_ms) else remaining_ms / 1000.0
            async with asyncio.timeout(budget_s), self.slots.hold(request.priority):
                start = time.monotonic()  # waiting for a slot counts as queueing
                async for text in stream:
                    if isinstance(text, Finished):
                        reason = text.reason or reason
                        prompt_tokens = text.prompt_tokens or prompt_tokens
                        continue
                    if first is None:
                        first = time.monotonic()
                    if request.stream:
                        await self._reply(
                            reply_to,
                            Token(request_id=request.request_id, seq=len(parts), text=text),
                        )
                    parts.append(text)
        except TimeoutError:
            if late is not None:
                late.cancel()
            log.info("request %s hit its deadline after %d chunks", request.request_id, len(parts))
            await self._reply(
                reply_to,
                Error(
                    request_id=request.request_id,
                    code="deadline_exceeded",
                    message="deadline passed during generation",
                ),
            )
            return
        except asyncio.CancelledError:
            await self._reply(
                reply_to,
                Error(
                    request_id=request.request_id, code="shutting_down", message="worker stopped"
                ),
            )
            raise
        except Exception as exc:
            log.warning("request %s failed: %s", request.request_id, type(exc).__name__)
            await self._reply(
                reply_to,
                Error(request_id=request.request_id, code="backend_error", message=str(exc)),
            )
            return
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        if late is not None:
            late.cancel()
        await self._done(
            request,
            reply_to,
            received,
            start,
            first,
            parts,
            reason if finish else None,
            prompt_tokens,
            direct,
        )

    async def _done(
        self,
        request: GenerateRequest,
        reply_to: str,
        received: float,
        start: float,
        first: float | None,
        parts: list[str],
        reason: FinishReason | None,
        prompt_tokens: int | None = None,
        direct: Direct | None = None,
    ) -> None:
        end = time.monotonic()
        self.served += 1
        self.latencies.add((end - received) * 1000.0)
        named = request.model_class is not None  # an edge (or router) that knows the fields
        timings = Timings(
            queue_ms=(start - received) * 1000.0,
            first_token_ms=((first or end) - start) * 1000.0,
            total_ms=(end - received) * 1000.0,
        )
        done = Done(
            request_id=request.request_id,
            text="".join(parts),
            n_tokens=len(parts),
            timings=timings,
            backend=self.backend.name,
            worker=self.name,
            model=self.model if named else "",
            version=self.version if named else "",
            finish_reason=reason,
        )
        # any requester may get it: a header is ignored by whoever does not read it
        counted = {PROMPT_TOKENS_HEADER: str(prompt_tokens)} if prompt_tokens else None
        if direct is None:
            await self._reply(reply_to, done, counted)
            return
        if direct.model:  # what the router resolved: the model, its version, fallback or not
            done = msgspec.structs.replace(
                done,
                model=direct.model,
                version=self.version or direct.version,
                fallback=direct.fallback,
            )
        # the answer to the edge; the router hears of it in its next batch of notices (for
        # its breaker, usage and quotas), keyed by this attempt's reply subject
        notice = (direct.notices, reply_to, done.version, done.n_tokens, prompt_tokens or 0)
        if direct.now:  # on the connection ahead of the `Done`: NATS keeps the order
            await self._publish_raw(direct.notices, self._notices.take(*notice))
        else:
            self._notices.add(*notice)
        await self._reply(direct.inbox, done)
