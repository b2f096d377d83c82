"""Records waiting to leave the site, each with a stable, time-ordered id.

The sync drainer (issue 5) reads `pending()` in seq order, publishes each record with
`Nats-Msg-Id = record.id`, then `mark_sent()`s them. The number of pending records is kept
by triggers in `outbox_meta`, so the quota check costs one row read.

What happens when the quota is reached is the outbox's `when_full` policy (docs/store.md):

* ``"defer"`` (the agent's default): decisions never wait on sync. An audit row's record
  (id ``audit-<row id>``) is still queued, as a *deferred* record: it has an empty payload and
  `pending()` reads the payload from the audit table when the drainer gets to it, so the
  audit trail is complete locally, in order, and syncs later; counted in `deferred_total`.
  Any other record (memory, telemetry) is dropped: not written, counted in
  `dropped_total` by data class (the local memory itself is kept).
* ``"refuse"``: enqueueing raises `QuotaExceeded` (the enclosing write fails with it,
  loudly) and `refused_total` counts it.

A standalone outbox (a box with no uplink) queues nothing: `enqueue` writes no row.
Local-only work never enqueues.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from aivos.edge.store import audit as _audit
from aivos.edge.store._codec import canonical_json, now_iso
from aivos.shared.errors import QuotaExceeded
from aivos.shared.ids import new_id
from aivos.shared.sqlite import decode_row

__all__ = ["DATA_CLASSES", "Outbox", "OutboxRecord", "WhenFull"]

DATA_CLASSES = ("audit", "memory", "telemetry", "job")
WhenFull = Literal["defer", "refuse"]
_AUDIT_PREFIX = "audit-"


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

    def __init__(
        self, quota: int, *, when_full: WhenFull = "refuse", standalone: bool = False
    ) -> None:
        self.quota = quota
        self.when_full: WhenFull = when_full
        self.standalone = standalone
        self._refused = 0
        self._deferred = 0
        self._dropped: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def refused_total(self) -> int:
        """Records refused because the quota was full, since this process started."""
        return self._refused

    @property
    def deferred_total(self) -> int:
        """Audit records queued without a payload copy because the quota was full."""
        return self._deferred

    @property
    def dropped_total(self) -> dict[str, int]:
        """Non-audit records not queued because the quota was full, by data class."""
        return dict(self._dropped)

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
        """Add a record; `payload` is JSON-encodable (or already-encoded JSON bytes).
        Returns the record's id; what a full outbox does is the `when_full` policy."""
        rid = record_id or new_id()
        if self.standalone:
            return rid  # no uplink: nothing is queued for a sync that never happens
        pending = self.depth(conn)
        if pending >= self.quota:
            if self.when_full == "refuse":
                with self._lock:
                    self._refused += 1
                raise QuotaExceeded(
                    f"outbox is full ({pending} pending records, quota {self.quota}); "
                    f"refusing a '{data_class}' record that must sync"
                )
            if data_class == "audit" and rid.startswith(_AUDIT_PREFIX):
                payload = b""  # deferred: pending() reads the row from the audit table
                with self._lock:
                    self._deferred += 1
            else:
                with self._lock:
                    self._dropped[data_class] += 1
                return rid
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
        """Unsent records in seq (creation) order, starting after `after_seq`; a deferred
        audit record comes with its payload read from the audit table."""
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE sent_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        # payload is stored as a BLOB; bytes() keeps a value stored as TEXT readable too
        return [
            decode_row(r, OutboxRecord, payload=_payload(conn, r["id"], bytes(r["payload"])))
            for r in rows
        ]


def _payload(conn: sqlite3.Connection, record_id: str, stored: bytes) -> bytes:
    """The stored payload, or for a deferred audit record the audit row itself (the same
    bytes `enqueue` would have stored: audit rows never change)."""
    if stored or not record_id.startswith(_AUDIT_PREFIX):
        return stored
    row = _audit.get(conn, record_id[len(_AUDIT_PREFIX) :])
    return b"" if row is None else canonical_json(row).encode()
