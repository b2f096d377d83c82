"""Regex fragments for words of Latin-script languages, shared by the context recognizers."""

from __future__ import annotations

__all__ = ["UPPER", "CAP_WORD", "strip_trailing"]

UPPER = r"A-ZÀ-ÖØ-ÞĀ-Ž"  # upper-case letters of Latin scripts (a superset; checked with isupper)
CAP_WORD = rf"[{UPPER}][^\W\d_]*(?:['’-][^\W\d_]+)*"  # a capitalised word


def strip_trailing(text: str, start: int, end: int) -> int:
    """`end` moved left over trailing spaces, commas, full stops, newlines, `?`, `!`, `>`."""
    while end > start and text[end - 1] in " ,.\n?!>":
        end -= 1
    return end
