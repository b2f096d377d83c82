"""Build chat messages from a request: system instructions, retrieved passages, memory."""

from __future__ import annotations

from aivos.shared.messages import GenerateRequest

__all__ = ["DEFAULT_SYSTEM", "build_messages"]

DEFAULT_SYSTEM = (
    "You are a helpful, concise assistant for a branch office. "
    "Answer using the context when it is relevant. Placeholders such as <EMAIL_1> stand "
    "for private values: keep them unchanged."
)


def build_messages(request: GenerateRequest) -> list[dict[str, str]]:
    """OpenAI-style chat messages (also used with llama.cpp's GGUF chat template)."""
    system = request.system or DEFAULT_SYSTEM
    parts = [system]
    if request.passages:
        ctx = "\n".join(f"- {p.text}" for p in request.passages)
        parts.append(f"Context:\n{ctx}")
    if request.memory:
        mem = "\n".join(f"- {m}" for m in request.memory)
        parts.append(f"What we know about this conversation:\n{mem}")
    return [
        {"role": "system", "content": "\n\n".join(parts)},
        {"role": "user", "content": request.prompt},
    ]
