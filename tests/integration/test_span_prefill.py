"""The edge agent warms its exit gate's span cache with the knowledge base's passages in the
background: start-up and readiness do not wait for it, an escalation citing retrieved passages
is then served from the cache, and a new residency policy or a new document fills it again."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aivos.edge.agent import Agent
from aivos.edge.knowledge.index import KnowledgeIndex
from tests.fixtures.edge import DOCS, make_edge_settings
from tests.fixtures.wait import eventually


async def _prefill_done(agent: Agent) -> None:
    await eventually(
        lambda: agent.span_prefill.stats().state == "done",
        timeout=120,
        what=lambda: f"the pre-fill to finish ({agent.span_prefill.stats()})",
    )


async def test_prefill_runs_behind_readiness_and_serves_escalations(
    tmp_path: Path, small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_edge_settings(tmp_path / "edge", small_bundle)
    agent = Agent(settings)
    with KnowledgeIndex.open(
        settings.data_path / "knowledge", agent.load_model(small_bundle)
    ) as kb:
        for file in sorted(DOCS.iterdir()):
            kb.add_document(file.name, file.read_text())

    # the pre-fill is held after its first passage until the test lets it go
    release = threading.Event()
    passage_texts = KnowledgeIndex.passage_texts

    def held(self: KnowledgeIndex) -> Iterator[str]:
        texts = passage_texts(self)
        yield next(texts)
        release.wait(120)
        yield from texts

    monkeypatch.setattr(KnowledgeIndex, "passage_texts", held)
    await asyncio.wait_for(agent.start(), 300)  # would hang here if start-up waited for it
    try:
        assert (await agent.readiness()).ready
        assert agent.span_prefill.stats().state == "running"
        release.set()
        await _prefill_done(agent)
        texts = list(passage_texts(agent.serving.index))
        cache = agent.gate.masker.span_cache
        assert len(texts) > 3 and agent.span_prefill.stats().warmed == len(texts)
        assert all(t in cache for t in texts)

        # an escalation citing what retrieval returns searches none of its passages
        passages = (await agent.documents.search("I was charged twice for a purchase", 3)).passages
        before = cache.stats()
        agent.escalator.prepare("r1", "charged twice, call me on +44 20 7946 0958", passages)
        after = cache.stats()
        assert (after.hits - before.hits, after.misses - before.misses) == (len(passages), 0)
        rendered = agent.metrics.registry.render()
        assert f"aivos_residency_span_cache_prefilled {len(texts)}.0" in rendered

        # a new residency policy: a new masker, its empty cache filled again
        agent.apply_remote_config(residency=agent.residency)
        assert agent.gate.masker.span_cache is not cache
        await _prefill_done(agent)
        assert all(t in agent.gate.masker.span_cache for t in texts)

        # a new document: its passages are warmed too
        new = "Opening on Sundays: ask Maria Rossi, maria.rossi@bank.example, for an appointment."
        await agent.documents.add("sunday.md", new)
        await eventually(
            lambda: new in agent.gate.masker.span_cache, timeout=120, what="the new passage"
        )
    finally:
        release.set()
        await agent.stop()
