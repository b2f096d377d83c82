"""Spans, the recognizer Protocol, and how the spans of several recognizers are merged.

A recognizer may also offer `find_scanned(scan)`: the same spans as `find(scan.text)`, found
only where the shared `Scan` of the text says they can be (see `scan.py`). `find_all` builds
that scan once per text and uses `find_scanned` when a recognizer has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from aivos.shared.residency.scan import Scan

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
    scan = Scan(text)
    for rank, rec in enumerate(recognizers):
        scanned = getattr(rec, "find_scanned", None)
        found = scanned(scan) if scanned is not None else rec.find(text)
        for span in found:
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
