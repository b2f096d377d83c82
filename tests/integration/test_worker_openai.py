"""The openai backend against a tiny local fake of an OpenAI-compatible server (the one
true external seam): SSE parsing, request body, HTTP errors, through a real worker."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from aivos.cloud.worker.openai import OpenAIBackend
from aivos.edge.uplink.generation import generate, stream_generate
from aivos.shared.errors import GenerationFailed
from aivos.shared.messages import Done, GenerateRequest, Passage, Token
from aivos.shared.natsconf import NatsServer
from tests.fixtures.nats import running_worker


class FakeOpenAI:
    """Answers POST /v1/chat/completions with `chunks` as SSE, or with `status`."""

    def __init__(self, chunks: list[str], status: int = 200) -> None:
        self.chunks = chunks
        self.status = status
        self.bodies: list[dict[str, object]] = []
        self.paths: list[str] = []
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.paths.append(lines[0].split()[1])
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length")
        )
        self.bodies.append(json.loads(await reader.readexactly(length)))
        if self.status != 200:
            writer.write(
                f"HTTP/1.1 {self.status} Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope".encode()
            )
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            )
            writer.write(b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n')
            for chunk in self.chunks:
                event = {"choices": [{"index": 0, "delta": {"content": chunk}}]}
                writer.write(f"data: {json.dumps(event)}\n\n".encode())
                await writer.drain()
            writer.write(b"data: [DONE]\n\n")
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> FakeOpenAI:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


async def test_openai_backend_streams_endpoint_chunks_through_worker(
    nats_hub: NatsServer,
) -> None:
    async with FakeOpenAI(["Hel", "lo", " <EMAIL_1>", "!"]) as fake:
        backend = OpenAIBackend(fake.base_url, model="big-model", api_key="k")
        async with running_worker(nats_hub.url, backend):
            edge = await nats.connect(nats_hub.url)
            try:
                request = GenerateRequest(
                    request_id="o1",
                    site="oai",
                    prompt="greet <EMAIL_1>",
                    passages=(Passage("Be polite."),),
                    max_tokens=16,
                    stream=True,
                )
                items = [i async for i in stream_generate(edge, request, timeout_s=10)]
            finally:
                await edge.close()
        await backend.aclose()
    assert [i.text for i in items if isinstance(i, Token)] == ["Hel", "lo", " <EMAIL_1>", "!"]
    done = items[-1]
    assert isinstance(done, Done) and done.text == "Hello <EMAIL_1>!" and done.backend == "openai"
    assert fake.paths == ["/v1/chat/completions"]
    body = fake.bodies[0]
    assert body["model"] == "big-model" and body["stream"] is True and body["max_tokens"] == 16
    messages = body["messages"]
    assert isinstance(messages, list)
    assert messages[-1] == {"role": "user", "content": "greet <EMAIL_1>"}
    assert "Be polite." in messages[0]["content"]


async def test_openai_endpoint_error_becomes_generation_failed(nats_hub: NatsServer) -> None:
    async with FakeOpenAI([], status=500) as fake:
        backend = OpenAIBackend(fake.base_url)
        async with running_worker(nats_hub.url, backend):
            edge = await nats.connect(nats_hub.url)
            try:
                with pytest.raises(GenerationFailed) as info:
                    await generate(edge, GenerateRequest("o2", "oai", "hi"), timeout_s=10)
            finally:
                await edge.close()
        await backend.aclose()
    assert info.value.reason == "backend_error"
