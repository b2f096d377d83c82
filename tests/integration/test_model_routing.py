"""Model classes over a real nats-server: the router picks the primary, falls back on
saturation, errors, a dead or stuck pool and deadline pressure, opens a circuit breaker,
enforces site quotas, and every answer names the model and version that produced it.
Backends are scripted (deterministic); the real model runs in test_worker_pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from aivos.cloud.models.replies import ReplyInbox
from aivos.cloud.models.router import ModelRouter
from aivos.cloud.models.usage import INTENT_HEADER, UsageLedger
from aivos.cloud.worker.backend import BackendError, Finished, GenerationBackend
from aivos.cloud.worker.catalogue import Catalogue, parse_catalogue
from aivos.cloud.worker.cli import catalogue_worker
from aivos.cloud.worker.notices import Delivered, encode_notices
from aivos.cloud.worker.service import GenerationWorker
from aivos.edge.uplink.generation import SiteQuotaExceeded, generate, stream_generate
from aivos.shared.errors import (
    DeadlineExceeded,
    GenerationFailed,
    NoResponders,
    WorkerSaturated,
)
from aivos.shared.messages import Done, Error, GenerateRequest, Token, decode_reply, encode
from aivos.shared.natsconf import NatsServer
from tests.fixtures.nats import ScriptedBackend, running_worker
from tests.fixtures.wait import eventually

CATALOGUE = """
default_model = "backup"

[models.primary]
backend = "llamacpp"
version = "p-2"
limits = { concurrency = 1, max_tokens = 32 }
cost_per_1k_tokens = 1.0

[models.backup]
backend = "llamacpp"
version = "b-1"
min_budget_ms = {min_budget}

[models.slowpoke]
backend = "llamacpp"
version = "s-1"
min_budget_ms = 60000

[classes.small]
chain = ["primary@p-2", "backup"]

[classes.hurried]
chain = ["slowpoke", "backup"]

[breaker]
failures = 2
cooldown_s = 60

[quotas.stingy]
requests_per_day = 1
"""


def _catalogue(min_budget: int = 0, *, quotas: bool = True) -> Catalogue:
    text = CATALOGUE.replace("{min_budget}", str(min_budget))
    if not quotas:
        text = text.partition("[quotas.stingy]")[0]
    return parse_catalogue(text)


class FailingBackend:
    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str]:
        self.calls += 1
        raise BackendError("model crashed")
        yield ""  # pragma: no cover - makes this an async generator

    async def aclose(self) -> None:
        return None


@contextlib.asynccontextmanager
async def model_worker(
    url: str, cat: Catalogue, model: str, backend: GenerationBackend, name: str
) -> AsyncIterator[tuple[GenerationWorker, nats.NATS]]:
    nc = await nats.connect(url, name=name)
    worker = catalogue_worker(cat, model, name=name, backend=backend, stats_interval_s=None)
    await worker.start(nc)
    try:
        yield worker, nc
    finally:
        await worker.drain(grace_s=2)
        await nc.close()


@contextlib.asynccontextmanager
async def model_router(url: str, cat: Catalogue) -> AsyncIterator[ModelRouter]:
    nc = await nats.connect(url, name="router")
    router = ModelRouter(cat, ledger=UsageLedger(cat), accept_timeout_s=1.0)
    await router.start(nc)
    try:
        yield router
    finally:
        await router.drain(grace_s=2)
        await nc.close()


def _req(rid: str, site: str = "b1", cls: str | None = "small", **kw: object) -> GenerateRequest:
    return GenerateRequest(request_id=rid, site=site, prompt="one two", model_class=cls, **kw)  # type: ignore[arg-type]


async def test_primary_answers_and_names_model_and_version(nats_hub: NatsServer) -> None:
    cat = _catalogue()
    primary = ScriptedBackend(["a ", "b ", "c"])
    async with (
        model_worker(nats_hub.url, cat, "primary", primary, "wp"),
        model_worker(nats_hub.url, cat, "backup", ScriptedBackend(), "wb"),
        model_router(nats_hub.url, cat) as router,
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            items = [
                i
                async for i in stream_generate(
                    edge, _req("r1", stream=True, max_tokens=500), timeout_s=10
                )
            ]
        finally:
            await edge.close()
    done = items[-1]
    assert isinstance(done, Done)
    assert [t.text for t in items if isinstance(t, Token)] == ["a ", "b ", "c"]
    assert (done.model, done.version, done.fallback) == ("primary", "p-2", False)
    assert done.text == "a b c"
    # the worker got the class and the model's max_tokens limit
    assert primary.requests[0].model_class == "small"
    assert primary.requests[0].max_tokens == 32
    assert router.counters["primary"].primary == 1
    (row,) = router.ledger.rows()
    assert (row.site, row.model, row.requests, row.tokens_out) == ("b1", "primary", 1, 3)
    assert row.cost == pytest.approx((row.tokens_in + 3) / 1000)


async def test_saturated_primary_moves_the_request_to_the_fallback(nats_hub: NatsServer) -> None:
    cat = _catalogue()
    gate = asyncio.Event()
    primary = ScriptedBackend(["slow"], gate=gate)
    async with (
        model_worker(nats_hub.url, cat, "primary", primary, "wp"),
        model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["spare"]), "wb"),
        model_router(nats_hub.url, cat),
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            first = asyncio.create_task(generate(edge, _req("r1"), timeout_s=10))
            await primary.started.wait()  # the primary's only place is taken
            second = await generate(edge, _req("r2"), timeout_s=10)
            gate.set()
            first_done = await first
        finally:
            await edge.close()
    assert (second.text, second.model, second.version, second.fallback) == (
        "spare",
        "backup",
        "b-1",
        True,
    )
    assert (first_done.model, first_done.fallback) == ("primary", False)


async def test_failing_primary_falls_back_and_its_breaker_opens(nats_hub: NatsServer) -> None:
    cat = _catalogue()
    failing = FailingBackend()
    async with (
        model_worker(nats_hub.url, cat, "primary", failing, "wp"),
        model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["ok"]), "wb"),
        model_router(nats_hub.url, cat) as router,
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            answers = [await generate(edge, _req(f"r{i}"), timeout_s=10) for i in range(5)]
        finally:
            await edge.close()
    assert all(a.model == "backup" and a.fallback for a in answers)
    assert failing.calls == 2  # breaker: 2 failures open it; the next 3 skip the primary
    assert router.breakers["primary"].state == "open"
    assert router.counters["primary"].skipped_open == 3
    assert router.counters["backup"].fallback == 5


async def test_dead_pool_and_deadline_pressure_use_the_fallback(nats_hub: NatsServer) -> None:
    cat = _catalogue()
    async with (
        model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["b"]), "wb"),
        model_router(nats_hub.url, cat) as router,
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            dead = await generate(edge, _req("r1"), timeout_s=10)  # no primary worker at all
            hurried = await generate(edge, _req("r2", cls="hurried"), timeout_s=10)
        finally:
            await edge.close()
    assert (dead.model, dead.fallback) == ("backup", True)
    assert (hurried.model, hurried.fallback) == ("backup", True)
    assert router.counters["slowpoke"].skipped_deadline == 1


async def test_stuck_primary_fails_over_within_the_deadline(nats_hub: NatsServer) -> None:
    """The primary accepts, then its process is gone (connection closed): the router keeps
    the fallback's min_budget_ms in reserve and answers from the fallback in time."""
    cat = _catalogue(min_budget=2000)
    stuck = ScriptedBackend(["never"], gate=asyncio.Event())
    async with (
        model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["rescued"]), "wb"),
        model_router(nats_hub.url, cat),
    ):
        nc = await nats.connect(nats_hub.url)
        worker = catalogue_worker(cat, "primary", name="wp", backend=stuck, stats_interval_s=None)
        await worker.start(nc)
        edge = await nats.connect(nats_hub.url)
        try:
            pending = asyncio.create_task(generate(edge, _req("r1"), timeout_s=5))
            await stuck.started.wait()
            await nc.close()  # the primary dies with the request in flight
            done = await pending
        finally:
            await edge.close()
    assert (done.text, done.model, done.fallback) == ("rescued", "backup", True)


async def test_quota_exhausted_is_a_saturation_to_the_edge(nats_hub: NatsServer) -> None:
    cat = _catalogue()
    async with (
        model_worker(nats_hub.url, cat, "primary", ScriptedBackend(["x"]), "wp"),
        model_router(nats_hub.url, cat),
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            first = await generate(edge, _req("r1", site="stingy"), timeout_s=10)
            with pytest.raises(SiteQuotaExceeded, match="1 of 1 requests") as info:
                await generate(edge, _req("r2", site="stingy"), timeout_s=10)
            other_site = await generate(edge, _req("r3", site="b2"), timeout_s=10)
        finally:
            await edge.close()
    assert first.model == "primary" and other_site.model == "primary"
    assert isinstance(info.value, WorkerSaturated)  # the edge falls back as when saturated
    assert info.value.code == "quota_exceeded"


async def test_unknown_class_and_no_model_left_are_errors(nats_hub: NatsServer) -> None:
    cat = _catalogue()
    async with model_router(nats_hub.url, cat):
        edge = await nats.connect(nats_hub.url)
        try:
            with pytest.raises(GenerationFailed) as unknown:
                await generate(edge, _req("r1", cls="huge"), timeout_s=10)
            with pytest.raises(GenerationFailed) as none_left:
                await generate(edge, _req("r2"), timeout_s=10)  # no worker for either model
        finally:
            await edge.close()
    assert unknown.value.reason == "unknown_model_class"
    assert none_left.value.reason == "no_model_available"


async def test_default_path_still_works_both_ways(nats_hub: NatsServer) -> None:
    """A request naming no model reaches the default model's workers on aivos-gen and gets
    the old-style Done; a class request with no router in the cloud falls back to the
    default queue group (an old cloud). (A catalogue without quotas: with quotas the default
    path goes through the router, see the next test.)"""
    cat = _catalogue(quotas=False)
    async with model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["d"]), "wb"):
        edge = await nats.connect(nats_hub.url)
        try:
            plain = await generate(edge, _req("r1", cls=None), timeout_s=10)
            classed = await generate(edge, _req("r2", site="norouter"), timeout_s=10)
        finally:
            await edge.close()
    assert (plain.text, plain.model, plain.version) == ("d", "", "")
    assert classed.text == "d" and classed.model == ""


async def test_old_worker_without_catalogue_serves_a_new_edge(nats_hub: NatsServer) -> None:
    backend = ScriptedBackend(["legacy"])
    async with running_worker(nats_hub.url, backend, name="old"):
        edge = await nats.connect(nats_hub.url)
        try:
            done = await generate(edge, _req("r1", site="legacy1"), timeout_s=10)
        finally:
            await edge.close()
    assert done.text == "legacy"
    await eventually(lambda: backend.requests, what="the request at the old worker")
    assert backend.requests[0].model_class is None  # sent without the class


async def _first_served(edge: nats.NATS, request: GenerateRequest) -> Done:
    """`generate` on a path a router has just subscribed to. On a loaded box the server has
    answered the first request a moment after the router's subscription was flushed with
    no-responders (1-2 of 12 runs, the retry at once served); a request that got no
    responders reached nobody, so asking again counts nothing twice."""

    async def served() -> Done:
        return await generate(edge, request, timeout_s=10)

    return await eventually(served, timeout=30, what="the router serving", ignore=(NoResponders,))


async def test_with_quotas_the_default_path_cannot_skip_the_router(nats_hub: NatsServer) -> None:
    """Quotas in the catalogue: the default model's workers leave aivos-gen and the router
    serves it, so a request naming no class counts against the site's quota (and gets the
    old-style Done, naming no model)."""
    cat = _catalogue()
    async with model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["d"]), "wb"):
        edge = await nats.connect(nats_hub.url)
        try:
            with pytest.raises(NoResponders):  # no router: nothing serves the default path
                await generate(edge, _req("r0", site="stingy", cls=None), timeout_s=10)
            async with model_router(nats_hub.url, cat) as router:
                plain = await _first_served(edge, _req("r1", site="stingy", cls=None))
                with pytest.raises(SiteQuotaExceeded, match="1 of 1 requests"):
                    await generate(edge, _req("r2", site="stingy", cls=None), timeout_s=10)
                with pytest.raises(SiteQuotaExceeded):  # naming a class does not help
                    await generate(edge, _req("r3", site="stingy"), timeout_s=10)
        finally:
            await edge.close()
    assert (plain.text, plain.model, plain.version, plain.fallback) == ("d", "", "", False)
    (row,) = router.ledger.rows()
    assert (row.site, row.model, row.version, row.requests) == ("stingy", "backup", "b-1", 1)
    assert router.counters["backup"].primary == 1


async def test_meter_default_path_counts_requests_naming_no_class(nats_hub: NatsServer) -> None:
    """No quotas but ``meter_default_path = true`` (what `aivos up` writes): the default
    model's workers leave aivos-gen, the router serves the default path and counts it."""
    cat = msgspec.structs.replace(_catalogue(quotas=False), meter_default_path=True)
    async with model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["d"]), "wb"):
        edge = await nats.connect(nats_hub.url)
        try:
            with pytest.raises(NoResponders):  # the worker alone no longer serves it
                await generate(edge, _req("m0", cls=None), timeout_s=10)
            async with model_router(nats_hub.url, cat) as router:
                done = await _first_served(edge, _req("m1", cls=None))
                await eventually(lambda: router.ledger.rows(), what="the answer counted")
        finally:
            await edge.close()
    assert done.text == "d"
    (row,) = router.ledger.rows()
    assert (row.site, row.model, row.requests) == ("b1", "backup", 1)


class _Receiver:
    """What an attempt is to the reply inbox: its replies and its notices, recorded."""

    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self.notices: list[Delivered] = []

    async def on_reply(self, msg: Msg) -> None:
        self.replies.append(msg.data)

    def on_delivered(self, notice: Delivered) -> None:
        self.notices.append(notice)


async def test_one_reply_subscription_serves_every_attempt(nats_hub: NatsServer) -> None:
    """Each attempt gets its own reply subject under the router's one wildcard subscription,
    its replies go to its own receiver; replies to an attempt that has ended reach no one.
    A batch of workers' notices on the inbox's notices subject reaches each attempt it
    names."""
    nc = await nats.connect(nats_hub.url)
    inbox = ReplyInbox()
    await inbox.start(nc)
    one, two = _Receiver(), _Receiver()
    try:
        first, second = inbox.open(one), inbox.open(two)
        assert first != second and len(inbox) == 2
        assert inbox.notices not in (first, second)
        await nc.publish(second, b"two")
        await nc.publish(first, b"one")
        await eventually(lambda: (one.replies, two.replies) == ([b"one"], [b"two"]), timeout=60)
        batch = [Delivered(second, "v2", 3), Delivered(first, "v1", 1, 7), Delivered("x.9", "", 0)]
        await nc.publish(inbox.notices, encode_notices(batch))
        await eventually(lambda: len(one.notices) == len(two.notices) == 1, timeout=60)
        assert (one.notices[0].version, one.notices[0].prompt_tokens) == ("v1", 7)
        assert (two.notices[0].version, two.notices[0].n_tokens) == ("v2", 3)
        inbox.close(first)
        await nc.publish(first, b"late")
        await nc.publish(inbox.notices, encode_notices([Delivered(first, "v1", 1)]))
        await nc.publish(second, b"marker")
        # the marker comes after the late reply and notice on the same connection
        await eventually(lambda: two.replies == [b"two", b"marker"], timeout=60)
        assert one.replies == [b"one"] and len(one.notices) == 1 and len(inbox) == 1
    finally:
        await inbox.stop()
        await nc.close()


async def test_intent_budget_used_up_is_the_documented_error(nats_hub: NatsServer) -> None:
    """With ``intents = { chat = N }`` in a site's quota, the intent named by the request's
    ``Aivos-Intent`` header gets ``Error(quota_exceeded)`` once N tokens are used today;
    the site's other intents and requests without the header still get answers."""
    text = CATALOGUE.replace("{min_budget}", "0") + "\n[quotas.b1]\nintents = { chat = 1 }\n"
    cat = parse_catalogue(text)
    subject = "aivos.gen.b1.small"

    async def ask(edge: nats.NATS, rid: str, intent: str | None) -> Done | Error:
        headers = {INTENT_HEADER: intent} if intent else None
        reply = await edge.request(subject, encode(_req(rid)), timeout=10, headers=headers)
        decoded = decode_reply(reply.data)
        assert isinstance(decoded, Done | Error)
        return decoded

    async with (
        model_worker(nats_hub.url, cat, "primary", ScriptedBackend(["x"]), "wp"),
        model_router(nats_hub.url, cat) as router,
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            first = await ask(edge, "r1", "chat")
            refused = await ask(edge, "r2", "chat")
            other = await ask(edge, "r3", "billing")
            plain = await ask(edge, "r4", None)
            # the edge's own client sends the header when it knows the intent
            with pytest.raises(SiteQuotaExceeded, match="intent chat used"):
                await generate(edge, _req("r5"), timeout_s=10, intent="chat")
            await generate(edge, _req("r6"), timeout_s=10, intent="billing")
        finally:
            await edge.close()
    assert isinstance(first, Done) and first.model == "primary"
    assert isinstance(refused, Error) and refused.code == "quota_exceeded"
    assert "intent chat used" in refused.message
    assert isinstance(other, Done) and isinstance(plain, Done)
    by_intent = {r.intent: r.requests for r in router.ledger.intent_rows()}
    assert by_intent == {"chat": 1, "billing": 2}


async def test_a_busy_primary_past_its_deadline_keeps_its_breaker_closed(
    nats_hub: NatsServer,
) -> None:
    """Overload is not breakage: a primary that accepts and then runs out of the request's
    time answers `deadline_exceeded`; the breaker (2 failures open it) stays closed, so the
    next request is still offered to the primary instead of being refused."""
    import time

    cat = _catalogue()
    slow = ScriptedBackend(["late"], gate=asyncio.Event())  # alive, never finishes in time
    async with (
        model_worker(nats_hub.url, cat, "primary", slow, "wp"),
        model_router(nats_hub.url, cat) as router,
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            for i in range(3):
                deadline = int(time.time() * 1000) + 600
                with pytest.raises(DeadlineExceeded):  # the edge's own clock ends the wait
                    await generate(edge, _req(f"r{i}", deadline_unix_ms=deadline), timeout_s=10)
                await eventually(
                    lambda n=i + 1: len(slow.requests) == n, what="the primary reached"
                )
                # time for the worker's deadline error to reach the router (were it counted a
                # failure, two of them would open the breaker and the third would not reach)
                await asyncio.sleep(0.5)
        finally:
            await edge.close()
    assert len(slow.requests) == 3  # every request reached the primary
    assert router.breakers["primary"].state == "closed"
    assert router.counters["primary"].failures == 0


class CountingBackend(ScriptedBackend):
    """Scripted chunks, then the prompt's token count as a tokenizer would report it."""

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str | Finished]:  # type: ignore[override]
        async for chunk in super().stream(request):
            yield chunk
        yield Finished("stop", prompt_tokens=42)


async def test_tokens_in_are_the_workers_count_when_it_has_one(nats_hub: NatsServer) -> None:
    cat = _catalogue(quotas=False)
    async with (
        model_worker(nats_hub.url, cat, "primary", CountingBackend(["x"]), "wp"),
        model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["y"]), "wb"),
        model_router(nats_hub.url, cat) as router,
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            counted = await generate(edge, _req("r1"), timeout_s=10)
            estimated = await generate(edge, _req("r2", cls="hurried"), timeout_s=10)
        finally:
            await edge.close()
    assert (counted.model, estimated.model) == ("primary", "backup")
    rows = {row.model: row for row in router.ledger.rows()}
    assert rows["primary"].tokens_in == 42  # the header, not len("one two") // 4
    assert rows["backup"].tokens_in == 1  # no count from its backend: chars / 4


async def _replies_to(nc: nats.NATS, subject: str, request: GenerateRequest, **headers: str):  # type: ignore[no-untyped-def]
    """Publish `request` to a model subject as a router would; collect the reply types."""
    inbox = nc.new_inbox()
    got: list[str] = []
    done = asyncio.Event()

    async def on(msg: Msg) -> None:
        reply = decode_reply(msg.data)
        got.append(type(reply).__name__)
        if isinstance(reply, (Done, Error)):
            done.set()

    sub = await nc.subscribe(inbox, cb=on)
    await nc.publish(subject, encode(request), reply=inbox, headers=headers or None)
    await asyncio.wait_for(done.wait(), timeout=10)
    await sub.unsubscribe()
    return got


async def test_worker_accepts_a_routers_request_only_when_it_is_not_answered_quickly(
    nats_hub: NatsServer,
) -> None:
    """One message less per quick answer behind a router; a slow one still gets `Accepted`
    (the router's sign of life), a streamed one at once, and a request without the header
    (an older router, a direct edge) exactly as before."""
    cat = _catalogue(quotas=False)
    quick = ScriptedBackend(["q"])
    async with model_worker(nats_hub.url, cat, "primary", quick, "wp"):
        nc = await nats.connect(nats_hub.url)
        try:
            subject = "aivos.model.b1.primary"
            within = {"Aivos-Accept-Within": "300"}
            fast = await _replies_to(nc, subject, _req("r1"), **within)
            quick.delay_s = 0.8
            slow = await _replies_to(nc, subject, _req("r2"), **within)
            quick.delay_s = 0.0
            streamed = await _replies_to(nc, subject, _req("r3", stream=True), **within)
            plain = await _replies_to(nc, subject, _req("r4"))
        finally:
            await nc.close()
    assert fast == ["Done"]
    assert slow == ["Accepted", "Done"]
    assert streamed == ["Accepted", "Token", "Done"]
    assert plain == ["Accepted", "Done"]


def test_llamacpp_counts_prompt_tokens_as_llama_cpp_does() -> None:
    """The real model: the count the worker sends is llama.cpp's own usage.prompt_tokens."""
    pytest.importorskip("llama_cpp")
    import threading

    from aivos.cloud.worker.llamacpp import LlamaCppBackend
    from aivos.cloud.worker.prompt import build_messages

    backend = LlamaCppBackend(n_threads=1)
    request = GenerateRequest(
        request_id="t", site="b1", prompt="Where is the nearest branch?", max_tokens=2
    )
    items = list(backend._generate(request, threading.Event()))
    last = items[-1]
    assert isinstance(last, Finished) and last.prompt_tokens
    usage = backend._llm.create_chat_completion(messages=build_messages(request), max_tokens=1)
    assert last.prompt_tokens == usage["usage"]["prompt_tokens"]
