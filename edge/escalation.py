"""Escalation to cloud generation through the site's one exit gate.

The prompt, the retrieved passages and the allowed memory are masked together (one
placeholder mapping per request), sent over NATS, and the placeholders in the answer are
restored on the way back. The mapping never leaves this process.
What the masker finds in a passage is kept in its span cache (passages repeat across
requests); the prompt and memory are searched every time.

A request may name a cloud model class (`edge.router.model_class_for`: the intent's rule, else
the policy's); it then goes to the cloud's model router, whose `Done` names the model and
version that answered (`generator_of`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol

import msgspec
from nats.aio.client import Client as NATS

from aivos.edge.results import Generator
from aivos.edge.uplink.generation import generate, stream_generate
from aivos.edge.uplink.link import Uplink
from aivos.shared.errors import LinkDown
from aivos.shared.messages import Done, GenerateRequest, Passage, Token, now_ms
from aivos.shared.residency import DataClass, ExitGate, MaskMapping

__all__ = ["Escalator", "Prepared", "PlaceholderStreamRestorer", "generator_of"]

# what the masker may keep its findings for: the knowledge base's passages repeat across
# requests (the same few hundred chunks); the prompt and memory are the user's own text and
# are searched each time, never kept (see `shared.residency.masker.SpanCache`). The key is a
# passage's own `text`, unchanged: the agent's pre-fill (`SpanPrefill`, fed by
# `KnowledgeIndex.passage_texts`) warms the cache with exactly these strings.
_CACHED = frozenset({"passages"})


class _PassageLike(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def score(self) -> float: ...


class Prepared(msgspec.Struct):
    request: GenerateRequest
    mapping: MaskMapping
    pii_counts: dict[str, int]
    intent: str | None = None  # sent as a header: the cloud's per-intent token budgets


class Escalator:
    def __init__(self, uplink: Uplink, gate: ExitGate, *, max_tokens: int) -> None:
        self.uplink = uplink
        self.gate = gate
        self.max_tokens = max_tokens

    @property
    def available(self) -> bool:
        return self.uplink.connected

    def allowed(self) -> bool:
        return self.gate.allows(DataClass.ESCALATION_PROMPT)

    def memory_allowed(self) -> bool:
        return self.gate.allows(DataClass.MEMORY)

    def prepare(
        self,
        request_id: str,
        text: str,
        passages: Sequence[_PassageLike],
        memory: Sequence[str] = (),
        *,
        stream: bool = False,
        priority: Literal["interactive", "background"] = "interactive",
        model_class: str | None = None,
        intent: str | None = None,
    ) -> Prepared:
        """Mask everything that will leave; raises ResidencyDenied when escalation may not leave.
        `model_class`: the cloud model class to ask for (None: the default queue group)."""
        mapping = MaskMapping()
        decision = self.gate.apply(
            DataClass.ESCALATION_PROMPT,
            {"prompt": text, "passages": [p.text for p in passages]},
            mapping=mapping,
            cache_keys=_CACHED,
        )
        counts = dict(decision.counts)
        masked_memory: list[str] = []
        if memory and self.memory_allowed():
            mem = self.gate.apply(DataClass.MEMORY, {"memory": list(memory)}, mapping=mapping)
            masked_memory = list(mem.payload["memory"])
            for key, n in mem.counts.items():
                counts[key] = counts.get(key, 0) + n
        payload = decision.payload
        request = GenerateRequest(
            request_id=request_id,
            site=self.uplink.site,
            prompt=payload["prompt"],
            passages=tuple(
                Passage(text=t, source=p.source, score=float(p.score))
                for t, p in zip(payload["passages"], passages, strict=True)
            ),
            memory=tuple(masked_memory),
            max_tokens=self.max_tokens,
            stream=stream,
            priority=priority,
            model_class=model_class,
        )
        return Prepared(request=request, mapping=mapping, pii_counts=counts, intent=intent)

    def _nc(self) -> NATS:
        nc = self.uplink.nc
        if nc is None or not self.uplink.connected:
            raise LinkDown(self.uplink.site)
        return nc

    async def complete(self, prepared: Prepared, budget_s: float) -> tuple[str, Done]:
        nc = self._nc()
        request = msgspec.structs.replace(
            prepared.request, deadline_unix_ms=now_ms() + int(budget_s * 1000)
        )
        done = await generate(nc, request, timeout_s=budget_s, intent=prepared.intent)
        return self.gate.restore(done.text, prepared.mapping), done

    async def stream(
        self, prepared: Prepared, budget_s: float
    ) -> AsyncIterator[str | tuple[str, Done]]:
        """Yield restored text chunks as they arrive, then `(full_text, Done)`."""
        nc = self._nc()
        request = msgspec.structs.replace(
            prepared.request, stream=True, deadline_unix_ms=now_ms() + int(budget_s * 1000)
        )
        restorer = PlaceholderStreamRestorer(self.gate, prepared.mapping)
        async for item in stream_generate(nc, request, timeout_s=budget_s, intent=prepared.intent):
            if isinstance(item, Token):
                chunk = restorer.feed(item.text)
                if chunk:
                    yield chunk
            elif isinstance(item, Done):
                tail = restorer.flush()
                if tail:
                    yield tail
                yield (self.gate.restore(item.text, prepared.mapping), item)
                return


def generator_of(done: Done) -> Generator | None:
    """The model that produced `done`, when the cloud named one (a class request answered
    through the model router); None for the default queue group or an older cloud."""
    if not done.model:
        return None
    return Generator(model=done.model, version=done.version, fallback=done.fallback)


class PlaceholderStreamRestorer:
    """Restores `<EMAIL_1>`-style placeholders in a token stream, where a placeholder may
    be split across chunks: text after an unclosed `<` is held back until it closes."""

    _MAX_HOLD = 32

    def __init__(self, gate: ExitGate, mapping: MaskMapping) -> None:
        self._gate = gate
        self._mapping = mapping
        self._held = ""

    def feed(self, chunk: str) -> str:
        text = self._held + chunk
        cut = text.rfind("<")
        if cut != -1 and ">" not in text[cut:] and len(text) - cut <= self._MAX_HOLD:
            self._held = text[cut:]
            text = text[:cut]
        else:
            self._held = ""
        return self._gate.restore(text, self._mapping) if text else ""

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._gate.restore(text, self._mapping) if text else ""
