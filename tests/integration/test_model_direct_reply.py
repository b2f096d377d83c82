"""Answers that skip the router on their way back (issue 17: routing overhead).

Behind the model router a worker publishes the `Done` of a request that does not stream
straight to the edge's inbox and tells the router in a batched notice
(`cloud.worker.notices`); the router's breaker, usage and quotas run off those notices,
and its per-attempt timer still moves a request down the chain when a worker goes
silent. Real nats-server; workers in this process with scripted backends, and one real
`aivos cloud worker` process killed with SIGKILL mid-request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from aivos.cloud.models.router import ModelRouter
from aivos.cloud.models.usage import UsageLedger
from aivos.cloud.worker.backend import BackendError
from aivos.cloud.worker.catalogue import Catalogue, parse_catalogue
from aivos.cloud.worker.notices import decode_notices
from aivos.cloud.worker.service import GENERATOR_HEADER, REPLY_DIRECT_HEADER
from aivos.edge.uplink.generation import generate, stream_generate
from aivos.shared.messages import Done, GenerateRequest, decode_reply, encode
from aivos.shared.natsconf import NatsServer
from tests.fixtures.nats import ScriptedBackend
from tests.fixtures.wait import eventually
from tests.integration.test_model_routing import model_router, model_worker

CATALOGUE = """
[models.primary]
backend = "llamacpp"
version = "p-2"

[models.backup]
backend = "llamacpp"
version = "b-1"
min_budget_ms = 1500

[classes.small]
chain = ["primary", "backup"]

[breaker]
failures = 2
cooldown_s = 60
"""


def _req(rid: str, site: str = "b1", **kw: object) -> GenerateRequest:
    return GenerateRequest(request_id=rid, site=site, prompt="one two", model_class="small", **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def relay_router(url: str, cat: Catalogue) -> AsyncIterator[ModelRouter]:
    """A router whose workers answer it, not the edge (``direct_reply=False``)."""
    nc = await nats.connect(url, name="relay-router")
    router = ModelRouter(cat, ledger=UsageLedger(cat), accept_timeout_s=1.0, direct_reply=False)
    await router.start(nc)
    try:
        yield router
    finally:
        await router.drain(grace_s=2)
        await nc.close()


def _published(router: ModelRouter) -> int:
    assert router._nc is not None
    return int(router._nc.stats["out_msgs"])


async def test_a_quick_answer_goes_from_the_worker_to_the_edge(nats_hub: NatsServer) -> None:
    """The router publishes one message per request (the forward), not two: the `Done`
    comes from the worker, still naming model, version and fallback; the router counts
    it from the worker's notice. A streamed request is relayed (the router sees its
    tokens), and so is every answer of a router with ``direct_reply=False``."""
    cat = parse_catalogue(CATALOGUE)
    async with (
        model_worker(nats_hub.url, cat, "primary", ScriptedBackend(["a", "b"]), "wp"),
        model_router(nats_hub.url, cat) as router,
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            before = _published(router)
            answers = [await generate(edge, _req(f"r{i}"), timeout_s=10) for i in range(4)]
            direct = _published(router) - before
            streamed = [
                i async for i in stream_generate(edge, _req("s1", stream=True), timeout_s=10)
            ]
            relayed_stream = _published(router) - before - direct
            await eventually(lambda: router.counters["primary"].primary == 5, timeout=60)
        finally:
            await edge.close()
    async with (
        model_worker(nats_hub.url, cat, "primary", ScriptedBackend(["a", "b"]), "wp"),
        relay_router(nats_hub.url, cat) as relay,
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            before = _published(relay)
            relayed = await generate(edge, _req("x1"), timeout_s=10)
            relayed_count = _published(relay) - before
        finally:
            await edge.close()
    assert direct == 4  # forwards only
    assert relayed_stream == 1 + 1 + 2 + 1  # forward, Accepted, two tokens, Done
    assert relayed_count == 2  # forward and the relayed Done
    for done in [*answers, streamed[-1], relayed]:
        assert isinstance(done, Done)
        assert (done.text, done.model, done.version, done.fallback) == (
            "ab",
            "primary",
            "p-2",
            False,
        )
    (row,) = router.ledger.rows()
    assert (row.model, row.version, row.requests, row.tokens_out) == ("primary", "p-2", 5, 10)
    assert router.counters["primary"].latency.p(50) > 0


async def test_a_fallback_answering_the_edge_is_labelled_a_fallback(nats_hub: NatsServer) -> None:
    """No primary worker: the router moves to the backup, whose `Done` (sent to the edge
    by the worker) says backup, its version, fallback true; usage counts it as such."""
    cat = parse_catalogue(CATALOGUE)
    async with (
        model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["z"]), "wb"),
        model_router(nats_hub.url, cat) as router,
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            done = await generate(edge, _req("r1"), timeout_s=10)
            await eventually(lambda: router.counters["backup"].fallback == 1, timeout=60)
        finally:
            await edge.close()
    assert (done.text, done.model, done.version, done.fallback) == ("z", "backup", "b-1", True)
    (row,) = router.ledger.rows()
    assert (row.model, row.fallback) == ("backup", 1)


async def test_worker_sends_the_done_to_the_edge_and_a_notice_to_the_router(
    nats_hub: NatsServer,
) -> None:
    """As a router asks it: the `Done` (with the generator the router named) to the edge's
    inbox, nothing to the attempt's reply subject, the notice on the router's notices
    subject naming that reply subject. With ``now`` the notice comes ahead of the `Done`."""
    cat = parse_catalogue(CATALOGUE)
    async with model_worker(nats_hub.url, cat, "primary", ScriptedBackend(["q"]), "wp"):
        nc = await nats.connect(nats_hub.url)
        seen: list[tuple[str, bytes]] = []

        async def record(msg: Msg) -> None:
            seen.append((msg.subject, msg.data))

        try:
            edge_inbox, attempt, notices = "_INBOX.edge.1", "_INBOX.router.7", "_INBOX.router.n"
            for subject in (edge_inbox, attempt, notices):
                await nc.subscribe(subject, cb=record)
            for rid, when in (("r1", ""), ("r2", " now")):
                headers = {
                    REPLY_DIRECT_HEADER: f"{edge_inbox} {notices}{when}",
                    GENERATOR_HEADER: "1 primary p-2",
                    "Aivos-Accept-Within": "300",
                }
                expected = len(seen) + 2
                await nc.publish(
                    "aivos.model.b1.primary", encode(_req(rid)), reply=attempt, headers=headers
                )
                await _until(lambda: len(seen), expected)
        finally:
            await nc.close()
    subjects = [s for s, _ in seen]
    assert attempt not in subjects
    # batched: the first notice follows its Done; asked for now: the second comes before
    assert subjects == [edge_inbox, notices, notices, edge_inbox]
    first, second = decode_reply(seen[0][1]), decode_reply(seen[3][1])
    for done, rid in ((first, "r1"), (second, "r2")):
        assert isinstance(done, Done)
        assert (done.request_id, done.text) == (rid, "q")
        assert (done.model, done.version, done.fallback) == ("primary", "p-2", True)
    for data in (seen[1][1], seen[2][1]):
        (notice,) = decode_notices(data)
        assert (notice.reply, notice.version, notice.n_tokens) == (attempt, "p-2", 1)


async def _until(count: Callable[[], int], n: int) -> None:
    await eventually(lambda: count() == n, timeout=60)


async def test_a_notice_lost_with_its_worker_ends_on_the_routers_timer(
    nats_hub: NatsServer,
) -> None:
    """The worker answers the edge and dies before its batched notice goes out: the edge
    keeps the primary's answer; the router hears nothing, its attempt times out (a
    failure of the primary), and the request moves down the chain to the backup, whose
    late answer the edge no longer reads. Nothing stays in flight."""
    cat = parse_catalogue(CATALOGUE)
    async with (
        model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["late"]), "wb"),
        model_router(nats_hub.url, cat) as router,
    ):
        nc = await nats.connect(nats_hub.url)
        primary, _ = await _in_process_primary(nc, cat)
        primary._notices.window_s = 60.0  # the notice would wait a minute
        edge = await nats.connect(nats_hub.url)
        try:
            done = await generate(edge, _req("r1"), timeout_s=10)
            await nc.close()  # the primary dies with its notice
            await eventually(lambda: not router._live, timeout=60)
        finally:
            await edge.close()
    assert (done.text, done.model, done.fallback) == ("p", "primary", False)
    assert router.counters["primary"].failures == 1
    assert router.counters["primary"].primary == 0
    assert router.counters["backup"].fallback == 1  # it did answer (the work is counted)


async def _in_process_primary(nc: nats.NATS, cat: Catalogue):  # type: ignore[no-untyped-def]
    from aivos.cloud.worker.cli import catalogue_worker

    worker = catalogue_worker(
        cat, "primary", name="wp", backend=ScriptedBackend(["p"]), stats_interval_s=None
    )
    await worker.start(nc)
    return worker, nc


async def test_an_older_worker_answering_the_router_is_relayed(nats_hub: NatsServer) -> None:
    """A worker that knows nothing of the direct reply answers the router's reply subject:
    the router relays its `Done`, labelled, as before."""
    cat = parse_catalogue(CATALOGUE)
    old = await nats.connect(nats_hub.url)

    async def answer(msg: Msg) -> None:
        rid = json.loads(msg.data)["request_id"]
        await old.publish(msg.reply, encode(Done(request_id=rid, text="old", n_tokens=1)))

    await old.subscribe("aivos.model.*.primary", cb=answer)
    try:
        async with model_router(nats_hub.url, cat) as router:
            edge = await nats.connect(nats_hub.url)
            try:
                done = await generate(edge, _req("r1"), timeout_s=10)
            finally:
                await edge.close()
    finally:
        await old.close()
    assert (done.text, done.model, done.version, done.fallback) == ("old", "primary", "p-2", False)
    assert router.counters["primary"].primary == 1


class HangingOpenAI:
    """An OpenAI-compatible endpoint that takes the request and never answers."""

    def __init__(self) -> None:
        self.got = asyncio.Event()
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.got.set()
        with contextlib.suppress(Exception):
            await reader.read()  # until the worker's connection goes away

    async def __aenter__(self) -> HangingOpenAI:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


@pytest.mark.slow
async def test_a_worker_process_killed_mid_request_fails_over(
    nats_hub: NatsServer, tmp_path: Path
) -> None:
    """A real `aivos cloud worker` process serves the primary; it accepts the request (its
    backend has it) and is SIGKILLed: the router's timer, not a reply, ends the attempt and
    the backup answers the edge within its deadline, labelled a fallback."""
    async with HangingOpenAI() as endpoint:
        text = CATALOGUE.replace(
            'backend = "llamacpp"\nversion = "p-2"',
            f'backend = "openai"\nversion = "p-2"\nurl = "http://127.0.0.1:{endpoint.port}/v1"',
        )
        (tmp_path / "catalogue.toml").write_text(text)
        cat = parse_catalogue(text)
        argv = [
            *(sys.executable, "-m", "aivos", "cloud", "worker", "--nats", nats_hub.url),
            *("--catalogue", str(tmp_path / "catalogue.toml"), "--model", "primary"),
        ]
        with (tmp_path / "worker.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            async with (
                model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["rescued"]), "wb"),
                model_router(nats_hub.url, cat) as router,
            ):
                edge = await nats.connect(nats_hub.url)
                try:
                    # the worker process is up once its queue group answers
                    await eventually(lambda: _serves(nats_hub, "primary"), timeout=60)
                    pending = asyncio.create_task(generate(edge, _req("r1"), timeout_s=6))
                    await asyncio.wait_for(endpoint.got.wait(), timeout=30)
                    os.kill(proc.pid, signal.SIGKILL)
                    done = await pending
                finally:
                    await edge.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
    assert (done.text, done.model, done.version, done.fallback) == (
        "rescued",
        "backup",
        "b-1",
        True,
    )
    assert router.counters["primary"].failures == 1


async def _serves(hub: NatsServer, model: str) -> bool:
    """Whether a worker subscribes the model's subject (NATS answers no-responders if not)."""
    nc = await nats.connect(hub.url)
    try:
        await nc.request(f"aivos.model.probe.{model}", b"not a request", timeout=2)
    except nats.errors.NoRespondersError:
        return False
    except Exception:
        return True
    finally:
        await nc.close()
    return True


class FlakyBackend(ScriptedBackend):
    """Fails while `failing` is set, else answers like a `ScriptedBackend`."""

    failing = True

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str]:
        self.requests.append(request)
        if self.failing:
            raise BackendError("down")
        yield "up"


async def test_a_breakers_trial_answer_closes_it_before_the_next_request(
    nats_hub: NatsServer,
) -> None:
    """The half-open trial's answer goes to the edge after its notice, not before: the
    router has closed the breaker when the edge's next request arrives, so that one goes
    to the primary too instead of being kept off it as if the trial were still running."""
    cat = parse_catalogue(CATALOGUE.replace("cooldown_s = 60", "cooldown_s = 0.2"))
    flaky = FlakyBackend()
    async with (
        model_worker(nats_hub.url, cat, "primary", flaky, "wp"),
        model_worker(nats_hub.url, cat, "backup", ScriptedBackend(["b"]), "wb"),
        model_router(nats_hub.url, cat) as router,
    ):
        edge = await nats.connect(nats_hub.url)
        try:
            down = [await generate(edge, _req(f"d{i}"), timeout_s=10) for i in range(2)]
            assert router.breakers["primary"].state != "closed"
            flaky.failing = False
            await eventually(lambda: router.breakers["primary"].state == "half_open", timeout=60)
            trial = await generate(edge, _req("t"), timeout_s=10)
            after = [await generate(edge, _req(f"a{i}"), timeout_s=10) for i in range(3)]
        finally:
            await edge.close()
    assert [d.model for d in down] == ["backup", "backup"]
    assert (trial.model, trial.fallback) == ("primary", False)
    assert [(a.model, a.fallback) for a in after] == [("primary", False)] * 3
    assert router.counters["primary"].skipped_open == 0
