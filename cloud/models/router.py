"""The model router: resolves a request's model class to a chain of catalogue models and
relays it to the first one that answers.

An edge names a class by publishing to ``aivos.gen.<site>.<class>`` (`GenerateRequest.
model_class`); routers queue-subscribe ``aivos.gen.*.*`` in the group ``aivos-route``.
Per request:

1. the subject's site must be the request's site (site credentials can only publish their
   own subjects, so the subject is what NATS vouches for); the class must exist
   (``unknown_model_class``); the site must have quota left today (``quota_exceeded``,
   which the edge treats like saturation: it falls back);
2. for each link of the class's chain, primary first: skip it while its circuit breaker is
   open, or when less of the budget is left than its ``min_budget_ms`` (deadline pressure);
   otherwise forward the request to ``aivos.model.<site>.<model>`` with a deadline that
   keeps the next link's ``min_budget_ms`` in reserve, and relay the worker's replies
   (`Token`..., `Done`; `Accepted` only when the request streams) to the edge's inbox as
   they arrive;
3. `Saturated`, an error, no responders or a timeout before any token was relayed move
   the request down the chain (errors and timeouts count against the model's breaker;
   saturation does not). Once tokens have reached the edge the answer is committed: a
   later failure is relayed as it is;
4. the `Done` relayed names the model and version that produced it, and ``fallback`` is
   true unless that was the class's primary; usage and cost are counted per site and model.

When every link was saturated (or saturated/skipped) the edge gets `Saturated` and retries
or falls back as with a busy worker; when none could answer, ``no_model_available``.

**The default path behind the router.** With quotas in the catalogue, requests naming no
class (``aivos.gen.<site>``) must not skip them: the catalogue's default model then leaves
the ``aivos-gen`` queue group (`cloud.worker.cli.catalogue_worker`) and routers serve
``aivos.gen.*`` too (`routes_default_path`), as a one-link chain of the default model with
the quota check and usage counting of any class; the `Done` relayed is the worker's own,
naming no model, as a request without a class always got. No default model: such requests
get ``unknown_model_class``.

Replies from the workers all arrive on one wildcard subscription (`cloud.models.replies`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from aivos.cloud.models.breaker import CircuitBreaker
from aivos.cloud.models.replies import ReplyInbox
from aivos.cloud.models.usage import SiteQuotaExhausted, UsageLedger, estimate_prompt_tokens
from aivos.cloud.worker.catalogue import Catalogue, ChainLink
from aivos.cloud.worker.draining import drain_in_flight
from aivos.cloud.worker.stats import LatencyWindow
from aivos.shared.messages import (
    Accepted,
    Done,
    Error,
    GenerateRequest,
    Reply,
    Saturated,
    Token,
    decode_reply,
    decode_request,
    encode,
    now_ms,
)
from aivos.shared.subjects import (
    GEN_ALL_CLASSES,
    GEN_ALL_SITES,
    GEN_ROUTE_QUEUE_GROUP,
    model_subject,
)

__all__ = ["ModelRouter", "ModelCounters", "routes_default_path"]

log = logging.getLogger(__name__)

_RESERVE_SLACK_MS = 100  # hand-over time counted into a reserve
# codes that say nothing about the model's health
_NOT_A_FAILURE = {"shutting_down", "bad_request"}


@dataclass
class ModelCounters:
    """What the router saw of one model since it started."""

    primary: int = 0  # answers as the class's primary
    fallback: int = 0  # answers as a fallback
    saturated: int = 0
    failures: int = 0
    skipped_open: int = 0  # links skipped while the breaker was open
    skipped_deadline: int = 0  # links skipped for lack of budget
    latency: LatencyWindow = field(default_factory=LatencyWindow)


@dataclass
class _Exchange:
    """One edge request in flight: where to reply, and what was already relayed."""

    request: GenerateRequest
    reply_to: str
    headers: dict[str, str] | None
    accepted_sent: bool = False
    tokens_sent: int = 0


def routes_default_path(catalogue: Catalogue) -> bool:
    """Whether requests naming no class go through the router (quotas are set), rather than
    straight to the default model's workers on ``aivos-gen``."""
    return bool(catalogue.quotas)


class _Outcome(msgspec.Struct):
    kind: str  # "done", "saturated", "failed", "committed"; "accepted": still going
    code: str = ""
    message: str = ""
    retry_after_ms: int = 0


_ACCEPTED = _Outcome("accepted")


class ModelRouter:
    """Route class-named requests over the catalogue's chains (see the module docstring)."""

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        ledger: UsageLedger | None = None,
        accept_timeout_s: float = 2.0,
        max_in_flight: int = 1000,
        flush_interval_s: float = 2.0,
    ) -> None:
        self.catalogue = catalogue
        self.ledger = ledger or UsageLedger(catalogue)
        self.accept_timeout_s = accept_timeout_s
        self.max_in_flight = max_in_flight
        self.flush_interval_s = flush_interval_s
        policy = catalogue.breaker
        self.breakers = {
            name: CircuitBreaker(policy.failures, policy.cooldown_s) for name in catalogue.models
        }
        self.counters = {name: ModelCounters() for name in catalogue.models}
        self._chains = {name: catalogue.resolve(name) for name in catalogue.classes}
        default = catalogue.default_model
        self._default_chain = (
            (ChainLink(model=default, entry=catalogue.entry(default), primary=True),)
            if default is not None
            else ()
        )
        self._nc: NATS | None = None
        self._subs: list[Subscription] = []
        self._replies = ReplyInbox()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None

    @property
    def subjects(self) -> tuple[str, ...]:
        """What this router serves (queue group ``aivos-route``)."""
        if routes_default_path(self.catalogue):
            return (GEN_ALL_CLASSES, GEN_ALL_SITES)
        return (GEN_ALL_CLASSES,)

    async def start(self, nc: NATS) -> None:
        self._nc = nc
        await self._replies.start(nc)
        for subject in self.subjects:
            self._subs.append(
                await nc.subscribe(subject, queue=GEN_ROUTE_QUEUE_GROUP, cb=self._on_request)
            )
        await nc.flush()
        if self.ledger.path is not None:
            self._flusher = asyncio.create_task(self._flush_loop())
        log.info(
            "model router serving %s (%d classes)",
            ", ".join(self.subjects),
            len(self.catalogue.classes),
        )

    async def drain(self, grace_s: float = 30.0) -> None:
        await drain_in_flight(self._subs, self._tasks, grace_s)
        self._subs = []
        await self._replies.stop()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await asyncio.to_thread(self.ledger.close)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await asyncio.to_thread(self.ledger.flush)
            except Exception as exc:  # the file may be busy; counts stay pending
                log.warning("usage flush failed: %s", exc)

    # -- one request ---------------------------------------------------------------------

    async def _send(self, subject: str, message: Reply | bytes) -> None:
        assert self._nc is not None
        data = message if isinstance(message, bytes) else encode(message)
        with contextlib.suppress(Exception):  # the edge times out if this is lost
            await self._nc.publish(subject, data)

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            request = decode_request(msg.data)
        except msgspec.MsgspecError as exc:
            await self._send(msg.reply, Error(request_id="", code="bad_request", message=str(exc)))
            return
        tokens = msg.subject.split(".")
        site = tokens[2]
        model_class = tokens[3] if len(tokens) == 4 else None  # None: the default path
        if request.site != site or request.model_class not in (None, model_class):
            await self._send(
                msg.reply,
                Error(
                    request_id=request.request_id,
                    code="bad_request",
                    message="site and model class must match the subject",
                ),
            )
            return
        if len(self._tasks) >= self.max_in_flight:
            await self._send(msg.reply, Saturated(request_id=request.request_id, worker="router"))
            return
        if request.model_class != model_class:
            request = msgspec.structs.replace(request, model_class=model_class)
        exchange = _Exchange(request, msg.reply, dict(msg.headers) if msg.headers else None)
        task = asyncio.create_task(self._route(exchange))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _route(self, ex: _Exchange) -> None:
        request = ex.request
        rid = request.request_id
        chain = (
            self._chains.get(request.model_class)
            if request.model_class is not None
            else self._default_chain
        )
        if not chain:
            msg = (
                f"no model class {request.model_class!r}"
                if request.model_class is not None
                else "this cloud needs a model class (no default model)"
            )
            await self._send(ex.reply_to, Error(rid, code="unknown_model_class", message=msg))
            return
        try:
            self.ledger.check(request.site)
        except SiteQuotaExhausted as exc:
            await self._send(ex.reply_to, Error(rid, code="quota_exceeded", message=str(exc)))
            return
        saturated: list[_Outcome] = []
        reasons: list[str] = []
        for i, link in enumerate(chain):
            counters = self.counters[link.model]
            remaining = request.remaining_ms()
            if remaining <= 0:
                break
            if remaining < link.entry.min_budget_ms:
                counters.skipped_deadline += 1
                reasons.append(f"{link.model}: budget")
                continue
            breaker = self.breakers[link.model]
            if not breaker.allow():
                counters.skipped_open += 1
                reasons.append(f"{link.model}: breaker open")
                continue
            reserve = self._reserve(chain[i + 1 :], remaining)
            outcome = await self._attempt(ex, link, remaining - reserve)
            if outcome.kind == "done":
                breaker.success()
                return
            if outcome.kind == "committed":  # tokens reached the edge: no fallback now
                if outcome.code in _NOT_A_FAILURE:
                    breaker.release()
                else:
                    breaker.failure()
                    counters.failures += 1
                return
            if outcome.kind == "saturated":
                breaker.release()
                counters.saturated += 1
                saturated.append(outcome)
            else:
                if outcome.code in _NOT_A_FAILURE:
                    breaker.release()
                else:
                    breaker.failure()
                    counters.failures += 1
            reasons.append(f"{link.model}: {outcome.code or outcome.kind}")
        if request.expired():
            reply: Reply = Error(rid, code="deadline_exceeded", message="; ".join(reasons))
        elif saturated:
            retry = min(o.retry_after_ms for o in saturated)
            reply = Saturated(rid, retry_after_ms=retry, worker="router")
        else:
            reply = Error(rid, code="no_model_available", message="; ".join(reasons))
        await self._send(ex.reply_to, reply)

    def _reserve(self, rest: tuple[ChainLink, ...], remaining: float) -> float:
        """Budget kept back for the next link that could still run (its min_budget_ms)."""
        for link in rest:
            if self.breakers[link.model].state != "open":
                need = link.entry.min_budget_ms
                if need <= 0:
                    return 0.0
                need += _RESERVE_SLACK_MS  # so the link still passes its own check
                return need if need < remaining else 0.0
        return 0.0

    async def _attempt(self, ex: _Exchange, link: ChainLink, budget_ms: float) -> _Outcome:
        """Send the request to `link`'s workers and relay their replies."""
        assert self._nc is not None
        nc = self._nc
        request = ex.request
        limit = link.entry.limits.max_tokens
        forwarded = msgspec.structs.replace(
            request,
            deadline_unix_ms=now_ms() + int(budget_ms),
            max_tokens=min(request.max_tokens, limit),
        )
        replies = self._replies
        box = replies.open()
        start = time.monotonic()
        deadline = start + budget_ms / 1000.0
        accept_by = start + self.accept_timeout_s
        accepted = False
        try:
            await nc.publish(
                model_subject(request.site, link.model),
                encode(forwarded),
                reply=box.subject,
                headers=ex.headers,
            )
            while True:
                wait = deadline - time.monotonic()
                if not accepted:
                    wait = min(wait, accept_by - time.monotonic())
                if wait <= 0:
                    return await self._lost(ex, "timeout" if accepted else "no_accept")
                msg = await box.get(wait)
                if msg is None:
                    continue
                outcome = await self._relay(ex, link, msg, start)
                if outcome is _ACCEPTED:
                    accepted = True
                elif outcome is not None:
                    return outcome
        finally:
            replies.close(box)

    async def _relay(
        self, ex: _Exchange, link: ChainLink, msg: Msg, start: float
    ) -> _Outcome | None:
        """Handle one worker reply: relay it, or say how the attempt ended (`_ACCEPTED`: it
        goes on, now accepted; None: it goes on)."""
        if msg.headers and msg.headers.get("Status") == "503":
            return _Outcome("failed", code="no_responders")
        try:
            reply = decode_reply(msg.data)
        except msgspec.MsgspecError:
            return await self._lost(ex, "bad_reply")
        if reply.request_id != ex.request.request_id:
            return None
        if isinstance(reply, Accepted):
            # relayed for a streamed answer only: an edge waiting for Done ignores it, and
            # the hop's cost is mostly its messages (benchmarks/model_routing.py)
            if ex.request.stream and not ex.accepted_sent:
                ex.accepted_sent = True
                await self._send(ex.reply_to, msg.data)
            return _ACCEPTED
        if isinstance(reply, Token):
            ex.tokens_sent += 1
            await self._send(ex.reply_to, msg.data)
            return _ACCEPTED
        if isinstance(reply, Done):
            await self._finish(ex, link, reply, msg.data, time.monotonic() - start)
            return _Outcome("done")
        if isinstance(reply, Saturated):
            return _Outcome("saturated", retry_after_ms=reply.retry_after_ms)
        assert isinstance(reply, Error)
        if ex.tokens_sent:
            await self._send(ex.reply_to, msg.data)
            return _Outcome("committed", code=reply.code)
        return _Outcome("failed", code=reply.code, message=reply.message)

    async def _lost(self, ex: _Exchange, code: str) -> _Outcome:
        if not ex.tokens_sent:
            return _Outcome("failed", code=code)
        message = f"model stopped answering mid-stream ({code})"
        await self._send(
            ex.reply_to,
            Error(ex.request.request_id, code="deadline_exceeded", message=message),
        )
        return _Outcome("committed", code=code)

    async def _finish(
        self, ex: _Exchange, link: ChainLink, done: Done, data: bytes, took_s: float
    ) -> None:
        """Relay the `Done`, then count it once the relay is on its way (the client writes
        to the socket on the loop's next turn: counting first would delay the answer)."""
        version = done.version or link.entry.version
        if ex.request.model_class is None or (link.primary and done.model == link.model):
            # the default path (no model named), or the primary's worker named itself: the
            # worker's Done as it is, not decoded and encoded again
            await self._send(ex.reply_to, data)
        else:
            stamped = msgspec.structs.replace(
                done, model=link.model, version=version, fallback=not link.primary
            )
            await self._send(ex.reply_to, stamped)
        asyncio.get_running_loop().call_soon(
            self._count, ex.request, link, version, done.n_tokens, took_s
        )

    def _count(
        self, request: GenerateRequest, link: ChainLink, version: str, n_out: int, took_s: float
    ) -> None:
        counters = self.counters[link.model]
        if link.primary:
            counters.primary += 1
        else:
            counters.fallback += 1
        counters.latency.add(took_s * 1000.0)
        tokens_in = estimate_prompt_tokens(request)
        fallback = not link.primary
        self.ledger.record(request.site, link.model, version, tokens_in, n_out, fallback=fallback)
