"""The cloud store of synced records: SQLite (WAL) by default, behind `IngestStore`.

Table ``records``: one row per ``(site, id)`` with the data class, kind, the site's outbox
`seq` (order per site), the payload JSON as it left the site (after the exit gate), the
trace id, and when the cloud received it. `upsert_many` inserts new keys and ignores known
ones, in one transaction: redeliveries and resends after JetStream's duplicate window have
no effect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from aivos.shared.paths import default_cloud_dir
from aivos.shared.sqlite import Closing, decode_rows, immediate, open_writer
from aivos.shared.syncwire import SyncEnvelope

__all__ = ["CloudRecord", "CloudStore", "IngestStore", "UpsertResult", "default_data_dir"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    site TEXT NOT NULL,
    id TEXT NOT NULL,
    data_class TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    trace_id TEXT,
    received_at REAL NOT NULL,
    PRIMARY KEY (site, id)
);
CREATE INDEX IF NOT EXISTS idx_records_site_class_seq ON records(site, data_class, seq);
CREATE TABLE IF NOT EXISTS ingest_meta (one INTEGER PRIMARY KEY CHECK (one = 1),
                                        duplicates INTEGER NOT NULL);
INSERT OR IGNORE INTO ingest_meta(one, duplicates) VALUES (1, 0);
"""


def default_data_dir() -> Path:
    """`aivos_home()/cloud`: where `aivos up` and `aivos cloud ...` keep the cloud store."""
    return default_cloud_dir()


class CloudRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A synced record as stored (and printed by `aivos cloud audit --json`)."""

    site: str
    id: str
    data_class: str
    kind: str
    seq: int
    created_at: str
    payload: Any
    trace_id: str | None
    received_at: float


class UpsertResult(msgspec.Struct, frozen=True):
    inserted: int
    duplicates: int


class IngestStore(Protocol):
    """What the ingest consumer needs from a cloud store."""

    def upsert_many(self, envelopes: Sequence[SyncEnvelope]) -> UpsertResult: ...

    def counts(self) -> dict[str, dict[str, int]]: ...

    def close(self) -> None: ...


class CloudStore(Closing):
    """SQLite implementation of `IngestStore` (file ``DATA_DIR/cloud.db``). Thread-safe:
    one connection behind a lock (the ingest writes from one worker thread)."""

    FILENAME = "cloud.db"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_writer(path, synchronous="FULL", foreign_keys=False, mode=None)
        try:
            self._conn.executescript(_SCHEMA)
        except BaseException:
            self._conn.close()
            raise
        self._lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: str | Path | None = None) -> CloudStore:
        directory = Path(data_dir) if data_dir is not None else default_data_dir()
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / cls.FILENAME)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writes --------------------------------------------------------------------------
    def upsert_many(self, envelopes: Sequence[SyncEnvelope]) -> UpsertResult:
        """Insert the records whose ``(site, id)`` is new, in one durable transaction."""
        now = time.time()
        rows = [
            (
                e.site,
                e.id,
                e.data_class,
                e.kind,
                e.seq,
                e.created_at,
                msgspec.json.encode(e.payload).decode(),
                e.trace_id,
                now,
            )
            for e in envelopes
        ]
        with self._lock, immediate(self._conn) as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO records(site, id, data_class, kind, seq, created_at, payload, "
                "trace_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(site, id) DO NOTHING",
                rows,
            )
            inserted = conn.total_changes - before
            dupes = len(rows) - inserted
            if dupes:
                conn.execute(
                    "UPDATE ingest_meta SET duplicates = duplicates + ? WHERE one = 1",
                    (dupes,),
                )
        return UpsertResult(inserted, dupes)

    # -- reads ---------------------------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        """``{site: {data_class: n}}``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT site, data_class, count(*) AS n FROM records GROUP BY site, data_class "
                "ORDER BY site, data_class"
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["site"], {})[r["data_class"]] = int(r["n"])
        return out

    def duplicates_ignored(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT duplicates FROM ingest_meta WHERE one = 1").fetchone()
        return int(row["duplicates"]) if row else 0

    def records(
        self,
        *,
        data_class: str | None = None,
        site: str | None = None,
        limit: int | None = None,
    ) -> list[CloudRecord]:
        """Records ordered by site, then the site's outbox seq (its original order)."""
        where: list[str] = []
        args: list[str | int] = []
        if data_class is not None:
            where.append("data_class = ?")
            args.append(data_class)
        if site is not None:
            where.append("site = ?")
            args.append(site)
        sql = (
            "SELECT site, id, data_class, kind, seq, created_at, payload, trace_id, received_at "
            "FROM records"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY site, seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return decode_rows(rows, CloudRecord, json=("payload",))

    def total(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT count(*) AS n FROM records").fetchone()
        return int(row["n"])
