"""Regex fragments for words of Latin-script languages, shared by the context recognizers."""

from __future__ import annotations

import re

__all__ = ["UPPER", "CAP_WORD", "strip_trailing", "trie"]

UPPER = r"A-ZÀ-ÖØ-ÞĀ-Ž"  # upper-case letters of Latin scripts (a superset; checked with isupper)
CAP_WORD = rf"[{UPPER}][^\W\d_]*(?:['’-][^\W\d_]+)*"  # a capitalised word


def strip_trailing(text: str, start: int, end: int) -> int:
    """`end` moved left over trailing spaces, commas, full stops, newlines, `?`, `!`, `>`."""
    while end > start and text[end - 1] in " ,.\n?!>":
        end -= 1
    return end


_Trie = dict[str, "_Trie"]


def trie(words: str) -> str:
    """An alternation of words (`Street|St|Hills?`, a trailing `?` allowed) as a regex trie
    (`(?:S(?:t(?:reet)?)|Hills?)`-like): the same strings, tried by first character instead of
    one by one. Only for alternations whose match is unique where they are used (a whole word,
    followed by `\\b` or a space), since a trie may try the alternatives in another order."""
    root: _Trie = {}
    for w in words.split("|"):
        for form in [w[:-2], w[:-1]] if w.endswith("?") else [w]:
            node = root
            for ch in re.findall(r"\\.|.", form):
                node = node.setdefault(ch, {})
            node[""] = {}
    return _emit(root)


def _emit(node: _Trie) -> str:
    alts = [ch + _emit(child) for ch, child in node.items() if ch]
    if not alts:
        return ""
    body = "(?:" + "|".join(alts) + ")"
    return body + "?" if "" in node else body
