"""Spans, the recognizer Protocol, and how the spans of several recognizers are merged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

__all__ = ["Span", "Recognizer", "find_all"]


class Span(msgspec.Struct, frozen=True):
    """`text[start:end]` is a value of type `entity` (e.g. `EMAIL`)."""

    start: int
    end: int
    entity: str


@runtime_checkable
class Recognizer(Protocol):
    """Finds the values of one entity type; `entity` is an upper-case name used in placeholders."""

    entity: str

    def find(self, text: str) -> list[Span]: ...


def find_all(text: str, recognizers: Sequence[Recognizer]) -> list[Span]:
    """Non-overlapping spans of all recognizers, in text order (longest wins, then list order)."""
    candidates: list[tuple[int, int, int, Span]] = []
    for rank, rec in enumerate(recognizers):
        for span in rec.find(text):
            candidates.append((-(span.end - span.start), rank, span.start, span))
    if not candidates:
        return []
    candidates.sort(key=lambda c: c[:3])
    chosen: list[Span] = []
    for *_, span in candidates:
        if all(span.end <= s.start or span.start >= s.end for s in chosen):
            chosen.append(span)
    chosen.sort(key=lambda s: s.start)
    return chosen
