"""Escalation from a real edge agent through a site leaf to generation workers on the hub:
answers, streaming, PII masking at the exit gate, link cuts and worker crashes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest

from aivos.edge.agent import Agent
from aivos.edge.api.schemas import InferRequest
from aivos.shared.messages import Accepted, decode_reply, decode_request
from aivos.shared.natsconf.server import NatsServer, free_port
from benchmarks.pii_dataset import generate as generate_pii
from tests.fixtures.edge import issue_token, make_edge_settings
from tests.fixtures.nats import ScriptedBackend, running_worker, wait_for_responders
from tests.fixtures.netproxy import TcpProxy
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.slow

SITE = "site1"


def _settings(tmp_path: Path, bundle: Path, leaf: NatsServer, **extra: Any) -> Any:
    return make_edge_settings(
        tmp_path / "edge",
        bundle,
        site_id=SITE,
        **{
            "uplink.nats_url": leaf.url,
            "uplink.escalation_budget_ms": 3000,
            "uplink.job_budget_ms": 5000,
            "uplink.retry_interval_s": 0.2,
            "router.default": "escalate",  # every query escalates in these tests
            **extra,
        },
    )


async def _started_agent(settings: Any) -> Agent:
    agent = Agent(settings)
    await agent.start()
    assert await agent.uplink.wait_up(10)
    return agent


async def _wait_jobs_done(agent: Agent, job_ids: list[str], timeout_s: float = 120) -> None:
    await eventually(
        lambda: {agent.store.get_job(j).state for j in job_ids} == {"done"},
        timeout=timeout_s,
        interval=0.1,
        what=lambda: f"jobs done: {[agent.store.get_job(j).state for j in job_ids]}",
    )


def _fallback_reason(agent: Agent, request_id: str) -> str:
    """Why the request was answered with the fallback, as its audit row says."""
    row = agent.store.get_audit(request_id)
    assert row is not None
    return str(row.detail["reason"])


async def _wait_link_noticed_down(leaf: NatsServer) -> None:
    """Wait until the site's leaf has noticed its hub link cut (it then has no interest from
    the hub left); a request sent before that goes into the dead link and waits for its
    deadline instead of falling back at once."""
    await eventually(
        lambda: leaf.leafnode_count() == 0, timeout=60, what="the leaf's hub link seen down"
    )


@pytest.fixture
def proxied_leaf(
    nats_hub: NatsServer, nats_leaf_factory: Callable[..., NatsServer]
) -> tuple[NatsServer, TcpProxy]:
    host, port = nats_hub.leaf_url.removeprefix("nats-leaf://").split(":")
    proxy = TcpProxy(0, (host, int(port))).start()
    leaf = nats_leaf_factory(SITE, f"nats-leaf://127.0.0.1:{proxy.port}")
    yield leaf, proxy
    proxy.close()


@pytest.fixture
async def hub_capture(
    nats_hub: NatsServer, proxied_leaf: tuple[NatsServer, TcpProxy]
) -> AsyncIterator[list[bytes]]:
    """Everything that reaches the hub on generation subjects (what left the site)."""
    nc = await nats.connect(nats_hub.url)
    seen: list[bytes] = []
    arrived = asyncio.Event()

    async def keep(msg: Any) -> None:
        seen.append(msg.data)

    async def probe_arrived(msg: Any) -> None:
        arrived.set()

    await nc.subscribe("aivos.gen.>", cb=keep)
    await nc.subscribe("aivos.capture.probe", cb=probe_arrived)
    await nc.flush()
    # interest crosses the leaf link asynchronously: wait until the leaf forwards to us
    site_nc = await nats.connect(proxied_leaf[0].url)

    async def probe_arrives() -> bool:
        await site_nc.publish("aivos.capture.probe", b"")
        await site_nc.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), 0.05)
        return arrived.is_set()

    try:
        await eventually(
            probe_arrives, timeout=60, interval=0, what="the hub subscription seen by the leaf"
        )
    finally:
        await site_nc.close()
    yield seen
    await nc.close()


async def test_escalation_is_answered_by_the_cloud_and_pii_is_masked(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    proxied_leaf: tuple[NatsServer, TcpProxy],
    hub_capture: list[bytes],
) -> None:
    leaf, _ = proxied_leaf
    backend = ScriptedBackend()  # echoes the (masked) prompt back
    async with running_worker(nats_hub.url, backend):
        agent = await _started_agent(_settings(tmp_path, small_bundle, leaf))
        try:
            await wait_for_responders(agent.uplink.nc, SITE)  # type: ignore[arg-type]
            text = "my email is jane.roe@example.com and card 4111 1111 1111 1111 was charged twice"
            resp = await agent.infer(InferRequest(text=text))
        finally:
            await agent.stop()
    assert resp.decision == "escalate"
    assert resp.answered_by == "cloud"
    assert backend.requests[-1].priority == "interactive"  # someone waits on this one
    # the worker saw placeholders; the answer returned locally has the values back
    prompt = backend.requests[-1].prompt
    assert "jane.roe@example.com" not in prompt and "<EMAIL_1>" in prompt
    assert "4111" not in prompt and "<CARD_1>" in prompt
    assert "jane.roe@example.com" in (resp.answer or "")
    assert any(b"<EMAIL_1>" in m for m in hub_capture), "the capture saw the escalation"
    assert all(b"jane.roe@example.com" not in m and b"4111 1111" not in m for m in hub_capture)


async def test_labelled_pii_set_never_leaves_raw(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    proxied_leaf: tuple[NatsServer, TcpProxy],
    hub_capture: list[bytes],
) -> None:
    leaf, _ = proxied_leaf
    records = generate_pii(60, seed=11)
    async with running_worker(nats_hub.url, ScriptedBackend(["ok"])):
        agent = await _started_agent(_settings(tmp_path, small_bundle, leaf))
        try:
            await wait_for_responders(agent.uplink.nc, SITE)  # type: ignore[arg-type]
            for record in records:
                await agent.infer(InferRequest(text=str(record["text"])[:4000]))
        finally:
            await agent.stop()
    requests = [
        decode_request(m)
        for m in hub_capture
        if b'"type":"generate"' in m and b'"request_id":"probe"' not in m
    ]
    assert len(requests) >= len(records)
    left = "\n".join(msgspec.json.encode(r).decode() for r in requests)
    leaked = [s["value"] for rec in records for s in rec["spans"] if s["value"] in left]  # type: ignore[index, union-attr]
    assert leaked == []


async def test_link_cut_falls_back_at_once_and_jobs_complete_after_restore(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    proxied_leaf: tuple[NatsServer, TcpProxy],
) -> None:
    leaf, proxy = proxied_leaf
    backend = ScriptedBackend(["fine, ", "thanks"])
    async with running_worker(nats_hub.url, backend):
        agent = await _started_agent(_settings(tmp_path, small_bundle, leaf))
        try:
            await wait_for_responders(agent.uplink.nc, SITE)  # type: ignore[arg-type]
            proxy.cut()
            await _wait_link_noticed_down(leaf)
            jobs = []
            for i in range(5):
                resp = await agent.infer(
                    InferRequest(text=f"question number {i} about the weather")
                )
                assert resp.answered_by == "fallback"
                # at once: nobody answers behind a link that is down, so nothing waits for
                # the escalation budget to run out
                assert _fallback_reason(agent, resp.request_id) == "fallback:no_responders"
                assert resp.job_id
                jobs.append(resp.job_id)
            assert {agent.store.get_job(j).state for j in jobs} <= {"waiting_for_uplink", "running"}
            proxy.restore()
            await _wait_jobs_done(agent, jobs)
            results = [agent.store.get_job(j).result for j in jobs]
        finally:
            await agent.stop()
    assert all(r["answered_by"] == "cloud" and r["answer"] == "fine, thanks" for r in results)
    served = [r.request_id for r in backend.requests if r.request_id != "probe"]
    job_requests = [r for r in served if served.count(r) > 1]
    assert job_requests == [], "a job was generated twice"
    # completions after the outage queue behind live requests at the worker
    assert {r.priority for r in backend.requests if r.request_id != "probe"} == {"background"}


async def test_sse_streams_tokens_over_real_http(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    proxied_leaf: tuple[NatsServer, TcpProxy],
) -> None:
    leaf, _ = proxied_leaf
    data_dir = tmp_path / "edge"
    token = issue_token(data_dir, "client", "sse")
    port = free_port()
    env = {**os.environ, "AIVOS_SITE_ID": SITE, "AIVOS_ROUTER__DEFAULT": "escalate"}
    cmd = [sys.executable, "-m", "aivos", "edge", "serve", "--data-dir", str(data_dir)]
    cmd += ["--bundle", str(small_bundle), "--port", str(port), "--nats", leaf.url]
    agent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    chunks = ["Hello", " from", " the", " cloud"]
    try:
        async with (
            running_worker(nats_hub.url, ScriptedBackend(chunks, delay_s=0.05)),
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):

            async def link_up() -> bool:
                ready = await client.get("/readyz")
                return ready.status_code == 200 and ready.json()["link"] == "up"

            await eventually(link_up, what="the agent ready, link up", ignore=(httpx.HTTPError,))
            probe = await nats.connect(leaf.url)
            await wait_for_responders(probe, SITE)
            await probe.close()
            events: list[tuple[str, Any]] = []
            headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
            async with client.stream(
                "POST", "/v1/infer", json={"text": "say something nice"}, headers=headers
            ) as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                event = ""
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        events.append((event, msgspec.json.decode(line.removeprefix("data: "))))
    finally:
        agent.terminate()
        agent.wait(timeout=15)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "meta"
    assert [data["text"] for kind, data in events if kind == "token"] == chunks
    assert kinds[-1] == "done"
    done = events[-1][1]
    assert done["answer"] == "Hello from the cloud"
    assert done["answered_by"] == "cloud"


async def test_worker_killed_mid_request_falls_back_and_job_completes(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    proxied_leaf: tuple[NatsServer, TcpProxy],
) -> None:
    leaf, _ = proxied_leaf
    worker_cmd = [
        sys.executable,
        "-m",
        "aivos",
        "cloud",
        "worker",
        "--nats",
        nats_hub.url,
        "--threads",
        "1",
    ]
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        worker_cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
    )
    agent = await _started_agent(
        # the job's budget is the product default: 200 tokens on a busy CI box can take more
        # than the module's 5 s, and a budget shorter than the generation never completes
        _settings(
            tmp_path,
            small_bundle,
            leaf,
            **{"uplink.max_tokens": 200, "uplink.job_budget_ms": 60_000},
        )
    )
    # the worker's replies go through the hub: seen there, `Accepted` means it is generating
    hub = await nats.connect(nats_hub.url)
    accepted = asyncio.Event()

    async def on_reply(msg: Any) -> None:
        with contextlib.suppress(msgspec.DecodeError):  # other inboxes (JetStream acks)
            if isinstance(decode_reply(msg.data), Accepted):
                accepted.set()

    await hub.subscribe("_INBOX.>", cb=on_reply)
    await hub.flush()
    try:
        await wait_for_responders(agent.uplink.nc, SITE, timeout_s=120)  # type: ignore[arg-type]
        task = asyncio.create_task(
            agent.infer(InferRequest(text="write a long story about a lighthouse keeper"))
        )
        await asyncio.wait_for(accepted.wait(), 60)  # the worker is generating now
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        resp = await asyncio.wait_for(task, timeout=60)
        assert resp.answered_by == "fallback"
        # a dead worker says nothing: the escalation budget ends the wait
        assert _fallback_reason(agent, resp.request_id) == "fallback:deadline_exceeded"
        assert resp.job_id
        worker = subprocess.Popen(
            worker_cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        # the restarted worker loads the model, then generates the 200 tokens; an attempt
        # that misses the 60 s job budget doubles the next one's (edge/jobrunner.py), so the
        # wait covers a generation of about two minutes (1.7 tokens/s)
        await _wait_jobs_done(agent, [resp.job_id], timeout_s=300)
        assert agent.store.get_job(resp.job_id).result["answered_by"] == "cloud"
    finally:
        await hub.close()
        await agent.stop()
        worker.kill()
        worker.wait()


async def test_one_trace_follows_a_request_through_the_real_agent(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    proxied_leaf: tuple[NatsServer, TcpProxy],
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from aivos.shared.tracing import setup_tracing, shutdown_tracing

    leaf, _ = proxied_leaf
    exporter = InMemorySpanExporter()
    setup_tracing("aivos-test", exporter=exporter)
    try:
        async with running_worker(nats_hub.url, ScriptedBackend(["traced"])):
            agent = await _started_agent(_settings(tmp_path, small_bundle, leaf))
            try:
                await wait_for_responders(agent.uplink.nc, SITE)  # type: ignore[arg-type]
                exporter.clear()
                resp = await agent.infer(InferRequest(text="what is the meaning of life"))
                row = agent.store.get_audit(resp.request_id)
            finally:
                await agent.stop()
    finally:
        shutdown_tracing()
    assert resp.answered_by == "cloud"
    # the outbox drainer may ship the audit row meanwhile: its span is a trace of its own
    spans = [s for s in exporter.get_finished_spans() if s.name != "sync.publish_batch"]
    by_name = {s.name: s for s in spans}

    def parent(name: str) -> str | None:
        span = by_name[name]
        if span.parent is None:
            return None
        return next(s.name for s in spans if s.context.span_id == span.parent.span_id)

    for child in (
        "edge.model",
        "edge.retrieval",
        "edge.router",
        "edge.policy_gate",
        "edge.escalate",
    ):
        assert parent(child) == "edge.http.infer", child
    assert parent("nats.request") == "edge.escalate"
    assert parent("worker.generate") == "nats.request"
    trace_ids = {format(s.context.trace_id, "032x") for s in spans}
    assert row is not None and trace_ids == {row.trace_id}


async def test_a_durable_jobs_late_answer_follows_its_hard_example(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    proxied_leaf: tuple[NatsServer, TcpProxy],
) -> None:
    """An escalated request answered with a fallback while the link is down is a hard
    example without a cloud answer; when its durable job completes, the answer follows the
    candidate as a record of kind ``answer`` (edge/candidates.py), so the review shows it."""
    import sqlite3

    from aivos.edge.store.db import db_path

    leaf, proxy = proxied_leaf
    classes = {"escalation_prompt": "mask", "audit": "local-only", "hard_example": "mask"}
    settings = _settings(tmp_path, small_bundle, leaf, **{"residency.classes": classes})
    backend = ScriptedBackend(["your card ", "is fine"])
    async with running_worker(nats_hub.url, backend):
        agent = await _started_agent(settings)
        try:
            await wait_for_responders(agent.uplink.nc, SITE)  # type: ignore[arg-type]
            proxy.cut()
            await _wait_link_noticed_down(leaf)
            resp = await agent.infer(InferRequest(text="write me a poem about my card"))
            assert resp.answered_by == "fallback" and resp.job_id
            row = agent.store.get_audit(resp.request_id)
            assert row is not None and row.detail.get("candidate")  # a hard example
            proxy.restore()
            await _wait_jobs_done(agent, [resp.job_id])
            assert agent.escalations.candidates.kept == 1
        finally:
            await agent.stop()
    with sqlite3.connect(db_path(tmp_path / "edge")) as conn:
        rows = conn.execute(
            "SELECT subject, payload FROM outbox WHERE data_class = 'hard_example' ORDER BY seq"
        ).fetchall()
    kinds = [subject for subject, _ in rows]
    assert kinds == ["candidate", "answer"], kinds
    candidate, answer = (msgspec.json.decode(p) for _, p in rows)
    assert candidate["request_id"] == answer["request_id"] == resp.request_id
    assert candidate["answer"] is None  # the fallback is not the cloud's answer
    assert answer["answer"] == "your card is fine"


async def test_a_job_longer_than_its_budget_finishes_on_a_grown_budget(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    proxied_leaf: tuple[NatsServer, TcpProxy],
) -> None:
    """Each deadline miss doubles the job's next budget (edge/jobrunner.py): before, every
    attempt missed the same budget and the job retried for ever."""
    leaf, proxy = proxied_leaf
    # 8 chunks 0.3 s apart: 2.4 s of generation against a 1 s job budget
    chunks = [f"w{i} " for i in range(7)] + ["w7"]
    backend = ScriptedBackend(chunks, delay_s=0.3)
    async with running_worker(nats_hub.url, backend):
        agent = await _started_agent(
            _settings(tmp_path, small_bundle, leaf, **{"uplink.job_budget_ms": 1000})
        )
        try:
            await wait_for_responders(agent.uplink.nc, SITE)  # type: ignore[arg-type]
            proxy.cut()
            await _wait_link_noticed_down(leaf)  # the request falls back and becomes a job
            resp = await agent.infer(InferRequest(text="tell me a long story about the sea"))
            assert resp.answered_by == "fallback"
            assert resp.job_id
            proxy.restore()
            await _wait_jobs_done(agent, [resp.job_id])
            job = agent.store.get_job(resp.job_id)
        finally:
            await agent.stop()
    assert job.result["answered_by"] == "cloud"
    assert job.result["answer"] == "".join(chunks)
    assert "deadline_misses" not in job.result  # bookkeeping, not part of the answer
    assert job.error is None
    job_requests = [r for r in backend.requests if r.request_id != "probe"]
    # the first attempt ran out of its 1 s budget (2.4 s needed); a later, grown one finished
    assert len(job_requests) >= 2
