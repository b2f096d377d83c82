"""Deterministic local answers: templates over retrieved passages, refusals and fallbacks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["local_answer", "fallback_answer", "humanize_intent", "builtin_template"]

# Small talk a box answers itself when the bundle has the intent and the router policy gives
# no template of its own (CLINC150 label names). Nothing here states a fact about a site.
_BUILTIN_TEMPLATES = {
    "greeting": "Hello! How can I help you today?",
    "goodbye": "Goodbye, and thank you for getting in touch.",
    "thank_you": "You're welcome. Is there anything else I can help with?",
    "are_you_a_bot": "I'm this site's automated assistant; a member of staff can help too.",
}


class _Passage(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def source(self) -> str: ...


def humanize_intent(intent: str) -> str:
    return intent.replace("_", " ")


def builtin_template(intent: str) -> str | None:
    """The built-in small-talk answer for `intent`, if there is one."""
    return _BUILTIN_TEMPLATES.get(intent)


def local_answer(intent: str, passages: Sequence[_Passage], template: str | None) -> str:
    top = passages[0] if passages else None
    if template:
        return template.format(
            intent=humanize_intent(intent),
            passage=top.text if top else "",
            source=top.source if top else "",
        )
    if top is None:
        return (
            f"I understood this as a '{humanize_intent(intent)}' request, "
            "but this site has no document about it yet. A member of staff can help."
        )
    return f"{top.text}\n\n(source: {top.source})"


def fallback_answer(passages: Sequence[_Passage], job_id: str | None) -> str:
    """What the box says when generation is not available right now."""
    lines = ["I can't give a complete answer right now."]
    if passages:
        lines.append("Here is what I found in this site's documents:")
        for passage in passages[:3]:
            lines.append(f"- {passage.text} (source: {passage.source})")
    lines.append(
        f"Your request is saved as job {job_id}; the full answer will follow when it is ready."
    )
    return "\n".join(lines)
