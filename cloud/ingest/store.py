"""The cloud store of synced records, behind `IngestStore`: SQLite (WAL) by default, or
PostgreSQL (`CloudStore.open(db="postgresql://...")`, `aivos.cloud.db`) for several ingest
replicas sharing one database.

Table ``records``: one row per ``(site, id)`` with the data class, kind, the site's outbox
`seq` (order per site), the payload JSON as it left the site (after the exit gate), the
trace id, and when the cloud received it. `upsert_many` inserts new keys and ignores known
ones, in one transaction: redeliveries and resends after JetStream's duplicate window have
no effect, and two replicas inserting the same record store it once. A batch that
PostgreSQL aborts to break a deadlock is run again whole (`transact`). The schema is the
recorded migration ``ingest_0001_records`` on both engines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from aivos.cloud.db import (
    Conn,
    Engine,
    Migration,
    SqliteEngine,
    apply_migrations,
    open_engine,
    transact,
)
from aivos.cloud.db.migrations import pg_ddl
from aivos.shared.paths import default_cloud_dir
from aivos.shared.sqlite import Closing, decode_rows
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
INSERT INTO ingest_meta(one, duplicates) VALUES (1, 0) ON CONFLICT DO NOTHING;
"""

MIGRATIONS = [Migration("ingest_0001_records", _SCHEMA, pg_ddl(_SCHEMA))]

_COLUMNS = "site, id, data_class, kind, seq, created_at, payload, trace_id, received_at"
_INSERT_SQLITE = (
    f"INSERT INTO records({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(site, id) DO NOTHING"
)
# PostgreSQL: the batch goes in with COPY (psycopg's C row formatting; an array parameter
# per column was formatted in Python, element by element, and capped the ingest near 4k
# records/s) into a per-connection temp table, then one INSERT ... SELECT in key order
_STAGE_PG = (
    "CREATE TEMP TABLE IF NOT EXISTS records_in (site TEXT, id TEXT, data_class TEXT, "
    "kind TEXT, seq BIGINT, created_at TEXT, payload TEXT, trace_id TEXT, "
    "received_at DOUBLE PRECISION) ON COMMIT DELETE ROWS"
)
_COPY_PG = f"COPY records_in({_COLUMNS}) FROM STDIN"
_INSERT_PG = (
    f"INSERT INTO records({_COLUMNS}) SELECT {_COLUMNS} FROM records_in ORDER BY site, id "
    "ON CONFLICT(site, id) DO NOTHING"
)


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
    """`IngestStore` on an `Engine`: the SQLite file ``DATA_DIR/cloud.db`` (commits with
    ``synchronous=FULL``) or a PostgreSQL database. Thread-safe."""

    FILENAME = "cloud.db"

    def __init__(self, target: Path | Engine) -> None:
        if isinstance(target, Path):
            self.path: Path | None = target
            self.engine: Engine = SqliteEngine(target, synchronous="FULL")
        else:
            self.path, self.engine = None, target
        try:
            apply_migrations(self.engine, MIGRATIONS)
        except BaseException:
            self.engine.close()
            raise

    @classmethod
    def open(cls, data_dir: str | Path | None = None, *, db: str | None = None) -> CloudStore:
        """PostgreSQL when `db` is a ``postgresql://`` URL, else ``DATA_DIR/cloud.db``."""
        if db:
            return cls(open_engine(db, Path(), name="aivos-ingest"))
        directory = Path(data_dir) if data_dir is not None else default_data_dir()
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / cls.FILENAME)

    def close(self) -> None:
        self.engine.close()

    # -- writes --------------------------------------------------------------------------
    def upsert_many(self, envelopes: Sequence[SyncEnvelope]) -> UpsertResult:
        """Insert the records whose ``(site, id)`` is new, in one durable transaction
        (in key order: two replicas inserting overlapping batches never deadlock)."""
        now = time.time()
        rows = sorted(
            (
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
            ),
            key=lambda row: (row[0], row[1]),
        )
        if not rows:
            return UpsertResult(0, 0)

        def write(conn: Conn) -> int:
            inserted = self._insert(conn, rows)
            dupes = len(rows) - inserted
            if dupes:
                conn.execute(
                    "UPDATE ingest_meta SET duplicates = duplicates + ? WHERE one = 1",
                    (dupes,),
                )
            return inserted

        # a batch that PostgreSQL aborted to break a deadlock (a writer that locked some
        # of its keys in another order) committed nothing: it is run again here at once,
        # rather than nak'ed and redelivered a second later
        inserted = transact(self.engine, write)
        return UpsertResult(inserted, len(rows) - inserted)

    def _insert(self, conn: Conn, rows: list[tuple[Any, ...]]) -> int:
        if self.engine.dialect == "postgres":
            raw = conn.raw  # type: ignore[attr-defined]  # PgConn: COPY is psycopg's own API
            raw.execute(_STAGE_PG)
            with raw.cursor().copy(_COPY_PG) as copy:
                for row in rows:
                    copy.write_row(row)
            return int(conn.execute(_INSERT_PG).rowcount)
        before = conn.execute("SELECT total_changes() AS n").fetchone()["n"]
        conn.executemany(_INSERT_SQLITE, rows)
        return int(conn.execute("SELECT total_changes() AS n").fetchone()["n"] - before)

    # -- reads ---------------------------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        """``{site: {data_class: n}}``."""
        rows = self.engine.read(
            lambda c: c.execute(
                "SELECT site, data_class, count(*) AS n FROM records GROUP BY site, data_class "
                "ORDER BY site, data_class"
            ).fetchall()
        )
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["site"], {})[r["data_class"]] = int(r["n"])
        return out

    def duplicates_ignored(self) -> int:
        row = self.engine.read(
            lambda c: c.execute("SELECT duplicates FROM ingest_meta WHERE one = 1").fetchone()
        )
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
        rows = self.engine.read(lambda c: c.execute(sql, args).fetchall())
        return decode_rows(rows, CloudRecord, json=("payload",))

    def total(self) -> int:
        row = self.engine.read(lambda c: c.execute("SELECT count(*) AS n FROM records").fetchone())
        return int(row["n"])
