"""``IN (...)`` lists of many ids, in chunks: a rollout may name 10,000 sites, more than one
statement should bind (SQLite allows 32,766 parameters, PostgreSQL 65,535)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["CHUNK", "in_chunks", "placeholders"]

CHUNK = 500
"""Ids per ``IN (...)`` list."""


def placeholders(values: Sequence[object]) -> str:
    """``?, ?, ...``: one placeholder per value."""
    return ", ".join("?" for _ in values)


def in_chunks(ids: Sequence[str], size: int = CHUNK) -> Iterator[list[str]]:
    """The distinct `ids`, sorted, in lists of at most `size`."""
    ordered = sorted(set(ids))
    for i in range(0, len(ordered), size):
        yield ordered[i : i + size]
