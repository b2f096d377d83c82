"""Small helpers shared by the store's table modules: timestamps and canonical JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

__all__ = ["now_iso", "iso_ago", "canonical_json", "loads"]

_encoder = msgspec.json.Encoder(order="sorted")


def now_iso() -> str:
    """UTC timestamp, ISO-8601 with microseconds; sorts as text."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def iso_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="microseconds")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8."""
    return _encoder.encode(value).decode()


def loads(text: str | bytes | None) -> Any:
    return None if text is None else msgspec.json.decode(text)
