"""The replay cache of signed webhook deliveries: `(source, delivery_id)` is accepted once
until `expires_at` (unix seconds). Only deliveries whose signature verified are recorded,
so an unauthenticated caller cannot grow this table."""

from __future__ import annotations

import sqlite3

__all__ = ["claim", "release", "purge_expired"]


def claim(
    conn: sqlite3.Connection, source: str, delivery_id: str, *, expires_at: float, now: float
) -> bool:
    """Record the delivery; False when it is already recorded and not yet expired (a replay)."""
    cur = conn.execute(
        "INSERT INTO webhook_deliveries(source, delivery_id, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT(source, delivery_id) DO UPDATE SET expires_at = excluded.expires_at "
        "WHERE webhook_deliveries.expires_at <= ?",
        (source, delivery_id, expires_at, now),
    )
    return cur.rowcount == 1


def release(conn: sqlite3.Connection, source: str, delivery_id: str) -> None:
    """Forget a delivery whose processing failed, so that the sender's retry is accepted."""
    conn.execute(
        "DELETE FROM webhook_deliveries WHERE source = ? AND delivery_id = ?", (source, delivery_id)
    )


def purge_expired(conn: sqlite3.Connection, now: float) -> int:
    cur = conn.execute("DELETE FROM webhook_deliveries WHERE expires_at <= ?", (now,))
    return cur.rowcount
