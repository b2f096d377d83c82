"""Records waiting to leave the site, each with a stable, time-ordered id.

The sync drainer (issue 5) reads `pending()` in seq order, publishes each record with
`Nats-Msg-Id = record.id`, then `mark_sent()`s them. The number of pending records is kept
by triggers in `outbox_meta`, so the quota check costs one row read. When the quota is full,
enqueueing a record that must sync raises `QuotaExceeded` (the enclosing write fails with it,
loudly) and `Outbox.refused_total` counts it; local-only work never enqueues.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

import msgspec

from aivos.edge.store._codec import canonical_json, now_iso
from aivos.shared.errors import QuotaExceeded
from aivos.shared.ids import new_id
from aivos.shared.sqlite import decode_row

__all__ = ["DATA_CLASSES", "Outbox", "OutboxRecord"]

DATA_CLASSES = ("audit", "memory", "telemetry", "job")


class OutboxRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    seq: int
    data_class: str
    subject: str
    payload: bytes  # canonical JSON
    created_at: str
    attempts: int
    sent_at: str | None


_COLUMNS = "id, seq, data_class, subject, payload, created_at, attempts, sent_at"


class Outbox:
    """Outbox operations. Write methods take the writer's connection (run them via the writer);
    read methods take any connection."""

    def __init__(self, quota: int) -> None:
        self.quota = quota
        self._refused = 0
        self._lock = threading.Lock()

    @property
    def refused_total(self) -> int:
        """Records refused because the quota was full, since this process started."""
        return self._refused

    # -- writes (writer connection) -----------------------------------------------------
    def enqueue(
        self,
        conn: sqlite3.Connection,
        data_class: str,
        payload: Any,
        *,
        subject: str = "",
        record_id: str | None = None,
    ) -> str:
        """Add a record; `payload` is JSON-encodable (or already-encoded JSON bytes)."""
        pending = self.depth(conn)
        if pending >= self.quota:
            with self._lock:
                self._refused += 1
            raise QuotaExceeded(
                f"outbox is full ({pending} pending records, quota {self.quota}); "
                f"refusing a '{data_class}' record that must sync"
            )
        rid = record_id or new_id()
        body = payload if isinstance(payload, bytes) else canonical_json(payload).encode()
        conn.execute(
            "INSERT INTO outbox(id, data_class, subject, payload, created_at, attempts) "
            "VALUES (?, ?, ?, ?, ?, 0)",
            (rid, data_class, subject, body, now_iso()),
        )
        return rid

    @staticmethod
    def mark_sent(conn: sqlite3.Connection, ids: Iterable[str]) -> int:
        """Mark records sent; returns how many were pending before. Idempotent."""
        now = now_iso()
        cur = conn.executemany(
            "UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
            [(now, i) for i in ids],
        )
        return cur.rowcount

    @staticmethod
    def record_attempt(conn: sqlite3.Connection, ids: Iterable[str]) -> None:
        conn.executemany(
            "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids]
        )

    @staticmethod
    def purge_sent(conn: sqlite3.Connection, before: str) -> int:
        """Delete records sent before the ISO timestamp `before`."""
        cur = conn.execute(
            "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (before,)
        )
        return cur.rowcount

    # -- reads --------------------------------------------------------------------------
    @staticmethod
    def depth(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT pending FROM outbox_meta WHERE one = 1").fetchone()
        return 0 if row is None else int(row["pending"])

    @staticmethod
    def pending(
        conn: sqlite3.Connection, limit: int = 500, after_seq: int = 0
    ) -> list[OutboxRecord]:
        """Unsent records in seq (creation) order, starting after `after_seq`."""
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE sent_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        # payload is stored as a BLOB; bytes() keeps a value stored as TEXT readable too
        return [decode_row(r, OutboxRecord, payload=bytes(r["payload"])) for r in rows]
