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

# entity types whose bounds a weak recognizer may widen (see `find_all`)
_FUZZY = frozenset({"PERSON", "ADDRESS", "DATE_OF_BIRTH"})


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
    """Non-overlapping spans of all recognizers, in text order. Overlapping spans become one:
    the longest names its type (ties: the recognizer listed first), and it is widened to
    cover the others, so that no character some recognizer found is left in the clear (a
    tagged address that runs into a phone number masks both). A recognizer with `weak = True`
    (the statistical tagger) widens only names, addresses and dates of birth (whose bounds
    are judgement calls anyway) and drops a span that overlaps any other value: a validated
    value keeps its exact bounds and type (`IBAN PL14 ...` is not an address)."""
    candidates: list[tuple[bool, int, int, int, Span]] = []
    scan = Scan(text)
    for rank, rec in enumerate(recognizers):
        scanned = getattr(rec, "find_scanned", None)
        found = scanned(scan) if scanned is not None else rec.find(text)
        weak = getattr(rec, "weak", False)
        for span in found:
            candidates.append((weak, -(span.end - span.start), rank, span.start, span))
    if not candidates:
        return []
    candidates.sort(key=lambda c: c[:4])
    chosen: list[Span] = []
    for weak, *_, span in candidates:
        hit = [i for i, s in enumerate(chosen) if span.start < s.end and s.start < span.end]
        if not hit:
            chosen.append(span)
            continue
        if weak and any(chosen[i].entity not in _FUZZY for i in hit):
            continue
        first = chosen[hit[0]]
        start = min(span.start, *(chosen[i].start for i in hit))
        end = max(span.end, *(chosen[i].end for i in hit))
        if (start, end) != (first.start, first.end):
            for i in reversed(hit):
                del chosen[i]
            chosen.insert(hit[0], Span(start, end, first.entity))
    chosen.sort(key=lambda s: s.start)
    return chosen
