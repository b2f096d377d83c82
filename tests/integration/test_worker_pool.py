"""Real worker processes: an autoscaled pool grows under a burst and shrinks after without
losing a request, exporting Prometheus metrics; two real llama.cpp workers serve two
catalogue entries, and when the primary's process is killed mid-load the requests complete
on the fallback within their deadline, naming the model that answered."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import nats
import pytest

from aivos.cloud.models.autoscale import ScalePolicy
from aivos.cloud.models.pool import WorkerPool, serve_metrics, worker_argv
from aivos.cloud.models.router import ModelRouter
from aivos.cloud.worker.catalogue import load_catalogue
from aivos.edge.uplink.generation import generate
from aivos.shared.errors import WorkerSaturated
from aivos.shared.messages import Done, GenerateRequest
from aivos.shared.natsconf import NatsServer, free_port
from aivos.shared.subjects import model_subject
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.slow


class SlowOpenAI:
    """An OpenAI-compatible endpoint that streams one chunk after `delay_s`."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.served = 0
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(":", 1)[1])
            for line in head.decode().split("\r\n")
            if line.lower().startswith("content-length")
        )
        await reader.readexactly(length)
        await asyncio.sleep(self.delay_s)
        event = {"choices": [{"index": 0, "delta": {"content": "ok"}}]}
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            + f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode()
        )
        await writer.drain()
        writer.close()
        self.served += 1

    async def __aenter__(self) -> SlowOpenAI:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


async def _ask(edge: nats.NATS, rid: str, cls: str, timeout_s: float = 60) -> tuple[Done, int]:
    """One request, resubmitted while the cloud answers Saturated (as the edge's job runner
    does): returns the answer and how many times it was turned away."""
    request = GenerateRequest(request_id=rid, site="b1", prompt="hi", model_class=cls)
    turned_away = 0
    while True:
        try:
            return await generate(edge, request, timeout_s=timeout_s), turned_away
        except WorkerSaturated:
            turned_away += 1
            await asyncio.sleep(0.1)


async def test_pool_grows_under_a_burst_and_shrinks_after(
    nats_hub: NatsServer, tmp_path: Path
) -> None:
    async with SlowOpenAI(delay_s=0.3) as fake:
        path = tmp_path / "catalogue.toml"
        path.write_text(
            f"""
[models.ext]
backend = "openai"
version = "1"
url = "http://127.0.0.1:{fake.port}/v1"
limits = {{ concurrency = 6, parallel = 1 }}
[classes.std]
chain = ["ext"]
"""
        )
        cat = load_catalogue(path)
        policy = ScalePolicy(
            min_workers=1, max_workers=3, up_after_s=0.3, down_after_s=1.5, cooldown_s=0.5
        )
        pool = WorkerPool(
            nats_hub.url,
            path,
            "ext",
            policy,
            stats_interval_s=0.2,
            tick_s=0.2,
            log_dir=tmp_path / "logs",
        )
        port = free_port()
        metrics = await serve_metrics(pool.render_metrics, "127.0.0.1", port)
        nc = await nats.connect(nats_hub.url)
        router = ModelRouter(cat)
        await router.start(nc)
        stop = asyncio.Event()
        supervisor = asyncio.create_task(pool.run(nc, stop, grace_s=20))
        edge = await nats.connect(nats_hub.url)
        try:
            await eventually(
                lambda: pool.last_signals.workers == 1, timeout=60, what="the first worker"
            )
            results = await asyncio.gather(*(_ask(edge, f"r{i}", "std") for i in range(40)))
            grown = max(size for _, size in pool.resizes)
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            await eventually(
                lambda: pool.desired == 1 and len(pool.live) == 1,
                timeout=60,
                what="the pool back at its minimum",
            )
        finally:
            await edge.close()
            stop.set()
            await supervisor
            await router.drain(grace_s=2)
            await nc.close()
            metrics.close()
    assert all(done.text == "ok" and done.model == "ext" for done, _ in results)
    assert len({done.request_id for done, _ in results}) == 40  # every request answered
    assert fake.served == 40
    assert grown >= 2  # the queue made the pool grow
    assert len({done.worker for done, _ in results}) >= 2  # and the new workers served
    assert 'aivos_pool_workers{model="ext"}' in text
    assert 'aivos_pool_desired_workers{model="ext"}' in text
    assert "aivos_pool_queue_depth" in text
    assert pool.children == []  # shutdown drained every process


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("llama_cpp") is None, reason="llama-cpp-python"
)
async def test_killing_the_primary_mid_load_completes_on_the_fallback(
    nats_hub: NatsServer, tmp_path: Path
) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(
        """
[models.smol-a]
backend = "llamacpp"
version = "a1"
threads = 1
limits = { concurrency = 4, max_tokens = 12 }
[models.smol-b]
backend = "llamacpp"
version = "b1"
threads = 1
min_budget_ms = 30000
limits = { concurrency = 8, max_tokens = 12 }
[classes.small]
chain = ["smol-a", "smol-b"]
"""
    )
    cat = load_catalogue(path)
    procs = {
        m: subprocess.Popen(worker_argv(nats_hub.url, path, m, m, 0.5), start_new_session=True)
        for m in ("smol-a", "smol-b")
    }
    nc = await nats.connect(nats_hub.url)
    router = ModelRouter(cat)
    await router.start(nc)
    edge = await nats.connect(nats_hub.url)
    try:
        probe = GenerateRequest(request_id="p", site="b1", prompt="", deadline_unix_ms=1)
        for m in procs:  # both models loaded and subscribed
            await eventually(
                lambda m=m: edge.request(model_subject("b1", m), _enc(probe), timeout=1),
                timeout=120,
                what=f"worker {m}",
                ignore=(Exception,),
            )
        pending = [
            asyncio.create_task(_ask(edge, f"k{i}", "small", timeout_s=45)) for i in range(4)
        ]
        await eventually(
            lambda: router.counters["smol-a"].primary >= 1, timeout=120, what="a primary answer"
        )
        os.killpg(procs["smol-a"].pid, signal.SIGKILL)  # the primary's pool dies mid-load
        results = [done for done, _ in await asyncio.gather(*pending)]
    finally:
        await edge.close()
        await router.drain(grace_s=2)
        await nc.close()
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)
    assert len(results) == 4
    assert all(d.text.strip() for d in results)
    assert {d.model for d in results} == {"smol-a", "smol-b"}
    assert all(d.fallback == (d.model == "smol-b") for d in results)
    assert all(d.version == {"smol-a": "a1", "smol-b": "b1"}[d.model] for d in results)


def _enc(request: GenerateRequest) -> bytes:
    from aivos.shared.messages import encode

    return encode(request)
