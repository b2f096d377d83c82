"""Opening the store's SQLite file: one writer connection, per-thread read connections.

The writer connection is in autocommit mode (`isolation_level=None`) so the writer thread
controls transactions explicitly (BEGIN IMMEDIATE / SAVEPOINT / COMMIT). It runs with
`journal_mode=WAL` and `synchronous=FULL`: a commit has reached the disk when it returns.
Readers never block the writer in WAL mode; they are `query_only`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

__all__ = ["DB_NAME", "db_path", "open_writer", "open_reader", "Readers"]

DB_NAME = "aivos.db"
_BUSY_TIMEOUT_MS = 10_000


def db_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / DB_NAME


def open_writer(path: str | Path) -> sqlite3.Connection:
    """The one write connection; usable from any thread, but only the writer thread uses it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not Path(path).exists():
        # Owner-only: the file holds the audit log and token hashes (SQLite gives the
        # -wal and -shm files the same permissions).
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":  # pragma: no cover - only on filesystems without WAL support
        raise sqlite3.OperationalError(f"could not enable WAL (journal_mode={mode})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def open_reader(path: str | Path) -> sqlite3.Connection:
    """A read-only (query_only) connection for the calling thread."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only=1")
    return conn


class Readers:
    """One read connection per thread, opened on first use, closed together."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._closed = False

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("store is closed")
                conn = open_reader(self._path)
                self._all.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
