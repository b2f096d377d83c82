"""Spans, the recognizer Protocol, and how the spans of several recognizers are merged.

A recognizer may also offer `find_scanned(scan)`: the same spans as `find(scan.text)`, found
only where the shared `Scan` of the text says they can be (see `scan.py`). `find_all` builds
that scan once per text and uses `find_scanned` when a recognizer has it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from aivos.shared.residency.scan import Scan

__all__ = ["Span", "Recognizer", "find_all", "plan"]

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


# per recognizer, what `find_all` calls and how it merges: whether it is weak, its
# `find_scanned` (None if it has none) and its `find`
Plan = list[tuple[bool, Callable[[Scan], list[Span]] | None, Callable[[str], list[Span]]]]


def plan(recognizers: Sequence[Recognizer]) -> Plan:
    """What `find_all` looks up on each recognizer, looked up once (a masker keeps it)."""
    return [
        (getattr(r, "weak", False), getattr(r, "find_scanned", None), r.find) for r in recognizers
    ]


def find_all(
    text: str, recognizers: Sequence[Recognizer], planned: Plan | None = None
) -> list[Span]:
    """Non-overlapping spans of all recognizers, in text order. Overlapping spans become one:
    the longest names its type (ties: the recognizer listed first), and it is widened to
    cover the others, so that no character some recognizer found is left in the clear (a
    tagged address that runs into a phone number masks both). A recognizer with `weak = True`
    (the statistical tagger) widens only names, addresses and dates of birth (whose bounds
    are judgement calls anyway) and drops a span that overlaps any other value: a validated
    value keeps its exact bounds and type (`IBAN PL14 ...` is not an address). A weak address
    that overlaps a phone number is the exception: the two become one span (named by the
    longer), since dropping the address would leave its street in the clear. `planned` is
    `plan(recognizers)`, when the caller keeps it."""
    candidates: list[tuple[bool, int, int, int, Span]] = []
    scan = Scan(text)
    for rank, (weak, scanned, find) in enumerate(plan(recognizers) if planned is None else planned):
        found = scanned(scan) if scanned is not None else find(text)
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
        entity = chosen[hit[0]].entity
        if weak and any(chosen[i].entity not in _FUZZY for i in hit):
            # a tagged address that runs into a phone number (`17151 2450 Crown St`: a postcode
            # and house number read as a phone) masks both, named by the longer
            if span.entity != "ADDRESS" or any(
                chosen[i].entity not in _FUZZY and chosen[i].entity != "PHONE" for i in hit
            ):
                continue
            if span.end - span.start > max(chosen[i].end - chosen[i].start for i in hit):
                entity = span.entity
        first = chosen[hit[0]]
        start = min(span.start, *(chosen[i].start for i in hit))
        end = max(span.end, *(chosen[i].end for i in hit))
        if (start, end, entity) != (first.start, first.end, first.entity):
            for i in reversed(hit):
                del chosen[i]
            chosen.insert(hit[0], Span(start, end, entity))
    chosen.sort(key=lambda s: s.start)
    return chosen
