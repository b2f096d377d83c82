"""The model router: resolves a request's model class to a chain of catalogue models and
relays it to the first one that answers.

An edge names a class by publishing to ``aivos.gen.<site>.<class>`` (`GenerateRequest.
model_class`); routers queue-subscribe ``aivos.gen.*.*`` in the group ``aivos-route``.
Per request:

1. the subject's site must be the request's site (site credentials can only publish their
   own subjects, so the subject is what NATS vouches for); the class must exist
   (``unknown_model_class``); the site, and the site's intent (the ``Aivos-Intent``
   header) when the catalogue budgets it, must have quota left today (``quota_exceeded``,
   which the edge treats like saturation: it falls back);
2. for each link of the class's chain, primary first: skip it while its circuit breaker is
   open, or when less of the budget is left than its ``min_budget_ms`` (deadline pressure);
   otherwise forward the request to ``aivos.model.<site>.<model>`` with a deadline that
   keeps the next link's ``min_budget_ms`` in reserve. A request that does not stream is
   answered by the worker itself: its `Done` goes to the edge's inbox (header
   ``Aivos-Reply-Direct``), naming what the router put in ``Aivos-Generator``, and the
   router hears of it from the worker's batched notices (`cloud.worker.notices`). A
   streamed one is relayed: the worker's replies (`Accepted`, `Token`..., `Done`) go to
   the edge's inbox as they arrive;
3. `Saturated`, an error, no responders or a timeout before any token was relayed move
   the request down the chain (errors and timeouts count against the model's breaker;
   saturation does not). Once tokens have reached the edge the answer is committed: a
   later failure is relayed as it is;
4. the `Done` names the model and version that produced it, and ``fallback`` is true
   unless that was the class's primary; usage and cost are counted per site and model.

When every link was saturated (or saturated/skipped) the edge gets `Saturated` and retries
or falls back as with a busy worker; when none could answer, ``no_model_available``.

**The default path behind the router.** With quotas in the catalogue, requests naming no
class (``aivos.gen.<site>``) must not skip them, and with ``meter_default_path = true`` (what
`aivos up` writes) their usage is counted too: the catalogue's default model then leaves
the ``aivos-gen`` queue group (`cloud.worker.cli.catalogue_worker`) and routers serve
``aivos.gen.*`` too (`routes_default_path`), as a one-link chain of the default model with
the quota check and usage counting of any class; the `Done` is the worker's own, naming
no model, as a request without a class always got. No default model: such requests
get ``unknown_model_class``.

Replies from the workers all arrive on one wildcard subscription (`cloud.models.replies`)
and are relayed from its callback (`cloud.models.attempt`). The first link is tried from
the request subscription's callback itself; an attempt's end comes back to `_on_end`,
which counts an answer on the spot; only a request that moves down the chain (or is lost)
gets a task, off the answer's path.

**The hop's cost** (benchmarks/model_routing.py): the answer of a request that does not
stream takes three hops (edge -> router -> worker -> edge), not four: the router is off
its way back and reads one small notice per batch of answers instead of relaying each
`Done`. Errors, saturation, `Accepted` and the worker's deadline error still come to the
router (the attempt's reply subject), so the chain falls back as before; a worker that
dies silent ends the attempt on its timer (its first wait gets `NOTICE_GRACE_S` more:
the notice of a quick answer may come a batch later). A notice lost with its worker
counts as that worker's failure and moves the request on: the edge, which already has
its answer, no longer reads the fallback's. For a site under a quota, and for a breaker's
half-open trial, the worker sends the notice ahead of the `Done` (``now``), so the answer
is counted (the breaker closed) before the edge's next request, as when the router
relayed it. ``direct_reply=False`` relays every answer (the benchmark's "before"). A
forwarded request also carries ``Aivos-Accept-Within`` (a quarter of the accept wait),
so a worker that answers a non-streamed request quickly sends no `Accepted`
(`cloud.worker.service`); the request's own bytes are forwarded unless a reserve or a
``max_tokens`` clamp changes them; subjects per (site, model) are cached.
``eager_accept=True`` restores the `Accepted` per request.

**A new catalogue** (`apply_catalogue`, from the KV watch of `cloud.models.
catalogue_store`): chains, pins, limits, costs, quotas and the breaker policy are replaced
between two requests; a request already in flight keeps the chain it started with. A
model's breaker and counters survive while the model stays in the catalogue (a removed
one's are kept, unused, so a late answer still counts). When quotas appear or go, the
default path's subscription follows.

Tokens in are what the worker's tokenizer counted (`Done` header ``Aivos-Prompt-Tokens``:
llama.cpp and OpenAI-compatible endpoints that report usage); else characters / 4.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from aivos.cloud.models.attempt import Attempt, Exchange, Outcome
from aivos.cloud.models.breaker import CircuitBreaker
from aivos.cloud.models.replies import ReplyInbox
from aivos.cloud.models.usage import (
    INTENT_HEADER,
    QuotaExhausted,
    UsageLedger,
    estimate_prompt_tokens,
)
from aivos.cloud.worker.catalogue import Catalogue, ChainLink
from aivos.cloud.worker.service import (
    ACCEPT_WITHIN_HEADER,
    GENERATOR_HEADER,
    REPLY_DIRECT_HEADER,
)
from aivos.cloud.worker.stats import LatencyWindow
from aivos.shared.messages import (
    Error,
    Reply,
    Saturated,
    decode_request,
    encode,
)
from aivos.shared.subjects import (
    GEN_ALL_CLASSES,
    GEN_ALL_SITES,
    GEN_ROUTE_QUEUE_GROUP,
    model_subject,
)

__all__ = ["ModelRouter", "ModelCounters", "routes_default_path"]

log = logging.getLogger(__name__)

# hand-over time counted into a reserve: the attempt's grace after its budget (attempt.py,
# ACCEPTED_GRACE_S) plus ~100 ms to hand the request to the next link
_RESERVE_SLACK_MS = 350
# codes that say nothing about the model's health: a worker that answers `deadline_exceeded`
# is alive but busy (its queue outlived the request); counting that as a failure would open
# the breaker under load and refuse requests while the workers sit idle
_NOT_A_FAILURE = {"shutting_down", "bad_request", "deadline_exceeded"}
_SUBJECT_CACHE_MAX = 4096  # (site, model) -> subject; sites x models, cleared when full


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


def routes_default_path(catalogue: Catalogue) -> bool:
    """Whether requests naming no class go through the router (quotas, or metering asked
    for), rather than straight to the default model's workers on ``aivos-gen``."""
    return catalogue.routes_default_path


def _default_chain(catalogue: Catalogue) -> tuple[ChainLink, ...]:
    default = catalogue.default_model
    if default is None:
        return ()
    return (ChainLink(model=default, entry=catalogue.entry(default), primary=True),)


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
        eager_accept: bool = False,
        direct_reply: bool = True,
    ) -> None:
        self.ledger = ledger or UsageLedger(catalogue)
        self.accept_timeout_s = accept_timeout_s
        self.max_in_flight = max_in_flight
        self.flush_interval_s = flush_interval_s
        # the worker answers `Accepted` only past this (ms); well inside the accept wait
        self._within = None if eager_accept else f"{accept_timeout_s * 250:.0f}"
        # a worker answers a request that does not stream straight to the edge
        self.direct_reply = direct_reply
        self.breakers: dict[str, CircuitBreaker] = {}
        self.counters: dict[str, ModelCounters] = {}
        self.catalogue_version = 0  # 0: the bootstrap catalogue (file); else pushed
        self._use(catalogue)
        self._subjects: dict[tuple[str, str], str] = {}
        self._nc: NATS | None = None
        self._subs: dict[str, Subscription] = {}
        self._replies = ReplyInbox()
        self._live: set[Exchange] = set()  # requests not answered yet
        self._idle = asyncio.Event()  # set when _live empties (drain waits on it)
        self._tasks: set[asyncio.Task[None]] = set()  # requests moving down their chain
        self._flusher: asyncio.Task[None] | None = None

    def _use(self, catalogue: Catalogue) -> None:
        """Make `catalogue` the one routed on (synchronous: between two requests)."""
        policy = catalogue.breaker
        for name in catalogue.models:
            breaker = self.breakers.get(name)
            if breaker is None:
                self.breakers[name] = CircuitBreaker(policy.failures, policy.cooldown_s)
            else:  # keep its state, take the new policy
                breaker.threshold = policy.failures
                breaker.cooldown_s = policy.cooldown_s
            self.counters.setdefault(name, ModelCounters())
        self._chains = {name: catalogue.resolve(name) for name in catalogue.classes}
        self._default_chain = _default_chain(catalogue)
        self.catalogue = catalogue
        self.ledger.catalogue = catalogue  # costs and quotas

    @property
    def subjects(self) -> tuple[str, ...]:
        """What this router serves (queue group ``aivos-route``)."""
        if routes_default_path(self.catalogue):
            return (GEN_ALL_CLASSES, GEN_ALL_SITES)
        return (GEN_ALL_CLASSES,)

    async def start(self, nc: NATS) -> None:
        self._nc = nc
        await self._replies.start(nc)
        await self._subscribe()
        if self.ledger.path is not None:
            self._flusher = asyncio.create_task(self._flush_loop())
        log.info(
            "model router serving %s (%d classes)",
            ", ".join(self.subjects),
            len(self.catalogue.classes),
        )

    async def _subscribe(self) -> None:
        """Serve `subjects`, and no other: a new catalogue may add or drop the default path."""
        assert self._nc is not None
        wanted = self.subjects
        for subject in [s for s in self._subs if s not in wanted]:
            with contextlib.suppress(Exception):
                await self._subs.pop(subject).unsubscribe()
        for subject in wanted:
            if subject not in self._subs:
                self._subs[subject] = await self._nc.subscribe(
                    subject, queue=GEN_ROUTE_QUEUE_GROUP, cb=self._on_request
                )
        await self._nc.flush()

    async def apply_catalogue(self, catalogue: Catalogue, version: int = 0, text: str = "") -> None:
        """Route on `catalogue` from the next request on (see the module docstring)."""
        self._use(catalogue)
        self.catalogue_version = version
        if self._nc is not None:
            await self._subscribe()
        log.info(
            "model router: catalogue v%d (%s)",
            version,
            "; ".join(f"{c}={[link.model for link in ch]}" for c, ch in self._chains.items()),
        )

    async def drain(self, grace_s: float = 30.0) -> None:
        """Stop taking requests, let those in flight end (give up after `grace_s`)."""
        for sub in self._subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = {}
        if self._live:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
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
        try:
            await self._nc.publish(subject, data)
        except Exception:  # the edge times out if this is lost
            log.debug("reply to %s lost", subject, exc_info=True)

    async def _on_request(self, msg: Msg) -> None:
        """Check the request and forward it to its first model from here (no task hop
        before the request is on its way); its end comes back to `_on_end`."""
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
        rid = request.request_id
        if request.site != site or request.model_class not in (None, model_class):
            message = "site and model class must match the subject"
            await self._send(msg.reply, Error(rid, code="bad_request", message=message))
            return
        if len(self._live) >= self.max_in_flight:
            await self._send(msg.reply, Saturated(request_id=rid, worker="router"))
            return
        data: bytes | None = msg.data
        if request.model_class != model_class:
            request = msgspec.structs.replace(request, model_class=model_class)
            data = None
        chain = self._chains.get(model_class) if model_class is not None else self._default_chain
        if not chain:
            text = (
                f"no model class {model_class!r}"
                if model_class is not None
                else "this cloud needs a model class (no default model)"
            )
            await self._send(msg.reply, Error(rid, code="unknown_model_class", message=text))
            return
        headers = msg.headers or None
        intent = headers.get(INTENT_HEADER) if headers else None
        try:
            self.ledger.check(site, intent)
        except QuotaExhausted as exc:
            await self._send(msg.reply, Error(rid, code="quota_exceeded", message=str(exc)))
            return
        direct = self.direct_reply and not request.stream
        if direct:  # the worker answers the edge's inbox: `_forward` adds the headers
            headers = dict(headers) if headers else {}
            if self._within is not None:
                headers[ACCEPT_WITHIN_HEADER] = self._within
        elif self._within is not None:
            headers = (
                {**headers, ACCEPT_WITHIN_HEADER: self._within}
                if headers
                else {ACCEPT_WITHIN_HEADER: self._within}
            )
        ex = Exchange(request, chain, data, msg.reply, headers, intent)
        if direct:
            ex.direct = f"{msg.reply} {self._replies.notices}"
            ex.now = self.catalogue.quota(site).limited
        self._live.add(ex)
        if await self._next_attempt(ex, 0) is None:
            await self._give_up(ex)

    async def _next_attempt(self, ex: Exchange, start: int) -> Attempt | None:
        """Forward the request to the first link from `start` that may take it (None: none
        is left). Links are skipped while their breaker is open or when less of the budget
        is left than their ``min_budget_ms``."""
        request, chain = ex.request, ex.chain
        for i in range(start, len(chain)):
            link = chain[i]
            remaining = request.remaining_ms()
            if remaining <= 0:
                return None
            if remaining < link.entry.min_budget_ms:
                self.counters[link.model].skipped_deadline += 1
                ex.reasons.append(f"{link.model}: budget")
                continue
            if not self.breakers[link.model].allow():
                self.counters[link.model].skipped_open += 1
                ex.reasons.append(f"{link.model}: breaker open")
                continue
            reserve = self._reserve(chain, i + 1, remaining)
            return await self._forward(ex, link, i, remaining, reserve)
        return None

    def _reserve(self, chain: tuple[ChainLink, ...], start: int, remaining: float) -> float:
        """Budget kept back for the next link that could still run (its min_budget_ms)."""
        for link in chain[start:]:
            if self.breakers[link.model].state != "open":
                need = link.entry.min_budget_ms
                if need <= 0:
                    return 0.0
                need += _RESERVE_SLACK_MS  # so the link still passes its own check
                return need if need < remaining else 0.0
        return 0.0

    async def _forward(
        self, ex: Exchange, link: ChainLink, index: int, remaining: float, reserve: float
    ) -> Attempt:
        """Publish the request to `link`'s workers: its own bytes when nothing changes (no
        reserve to keep, max_tokens within the model's limit), else re-encoded with the
        deadline moved up by the reserve and max_tokens clamped."""
        assert self._nc is not None
        request = ex.request
        limit = link.entry.limits.max_tokens
        data = ex.data
        if data is None or reserve or request.max_tokens > limit:
            deadline = request.deadline_unix_ms
            if deadline > 0:
                deadline -= int(reserve)
            forwarded = msgspec.structs.replace(
                request, deadline_unix_ms=deadline, max_tokens=min(request.max_tokens, limit)
            )
            data = encode(forwarded)
        attempt = Attempt(
            ex,
            link,
            index,
            send=self._send,
            on_end=self._on_end,
            accept_timeout_s=self.accept_timeout_s,
            budget_ms=remaining - reserve,
        )
        attempt.subject = self._replies.open(attempt)
        key = (request.site, link.model)
        subject = self._subjects.get(key)
        if subject is None:
            if len(self._subjects) >= _SUBJECT_CACHE_MAX:
                self._subjects.clear()
            subject = self._subjects[key] = model_subject(*key)
        headers = ex.headers
        if ex.direct:
            # the exchange's own copy of the headers (nats-py encodes them before `publish`
            # first yields). The notice comes ahead of the answer, not in a later batch,
            # for a site under a quota and for a breaker's trial: the router has counted
            # the answer (closed the breaker) before the edge can send its next request
            assert headers is not None
            now = ex.now or self.breakers[link.model].state != "closed"
            headers[REPLY_DIRECT_HEADER] = f"{ex.direct} now" if now else ex.direct
            if request.model_class is not None:  # what the worker's `Done` names
                headers[GENERATOR_HEADER] = (
                    f"{0 if link.primary else 1} {link.model} {link.entry.version}"
                )
        try:
            await self._nc.publish(subject, data, reply=attempt.subject, headers=headers)
        except Exception as exc:  # connection closed or draining: try the next link
            attempt.end(Outcome("failed", code="publish_failed", message=str(exc)))
        return attempt

    def _on_end(self, attempt: Attempt, outcome: Outcome) -> None:
        """An attempt ended (called from the reply callback or the attempt's timer): an
        answer is counted here and then; anything else continues in a task."""
        self._replies.close(attempt.subject)
        if outcome.kind != "lost" and self._settle(attempt.ex, attempt.link, outcome):
            self._answered(attempt.ex)
            return
        task = asyncio.create_task(self._continue(attempt, outcome))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _continue(self, attempt: Attempt, outcome: Outcome) -> None:
        """After an attempt that did not answer: tell the edge about a lost, committed
        answer, or move down the chain (the next attempt's end comes to `_on_end`)."""
        ex = attempt.ex
        if outcome.kind == "lost":
            outcome = await attempt.lost(outcome.code)
            if self._settle(ex, attempt.link, outcome):
                self._answered(ex)
                return
        if await self._next_attempt(ex, attempt.index + 1) is None:
            await self._give_up(ex)

    async def _give_up(self, ex: Exchange) -> None:
        """No link is left: the edge gets why."""
        rid = ex.request.request_id
        if ex.request.expired():
            reply: Reply = Error(rid, code="deadline_exceeded", message="; ".join(ex.reasons))
        elif ex.saturated:
            retry = min(o.retry_after_ms for o in ex.saturated)
            reply = Saturated(rid, retry_after_ms=retry, worker="router")
        else:
            reply = Error(rid, code="no_model_available", message="; ".join(ex.reasons))
        await self._send(ex.reply_to, reply)
        self._answered(ex)

    def _answered(self, ex: Exchange) -> None:
        self._live.discard(ex)
        if not self._live:
            self._idle.set()

    def _settle(self, ex: Exchange, link: ChainLink, outcome: Outcome) -> bool:
        """Tell the breaker and the counters how an attempt ended; True when the request is
        answered (or committed to this model: tokens reached the edge)."""
        breaker = self.breakers[link.model]
        counters = self.counters[link.model]
        if outcome.kind == "done":
            breaker.success()
            self._count(ex, link, outcome)
            return True
        if outcome.kind == "saturated":
            breaker.release()
            counters.saturated += 1
            ex.saturated.append(outcome)
        elif outcome.code in _NOT_A_FAILURE:
            breaker.release()
        else:
            breaker.failure()
            counters.failures += 1
        if outcome.kind == "committed":
            return True
        ex.reasons.append(f"{link.model}: {outcome.code or outcome.kind}")
        return False

    def _count(self, ex: Exchange, link: ChainLink, outcome: Outcome) -> None:
        counters = self.counters[link.model]
        if link.primary:
            counters.primary += 1
        else:
            counters.fallback += 1
        counters.latency.add(outcome.took_s * 1000.0)
        request = ex.request
        self.ledger.record(
            request.site,
            link.model,
            outcome.version,
            outcome.prompt_tokens or estimate_prompt_tokens(request),
            outcome.n_tokens,
            fallback=not link.primary,
            intent=ex.intent,
            latency_ms=outcome.took_s * 1000.0,
        )
