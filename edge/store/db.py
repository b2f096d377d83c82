"""Where the edge store's SQLite file lives; connections come from `aivos.shared.sqlite`.

The writer connection is in autocommit mode (`isolation_level=None`) so the writer thread
controls transactions explicitly (BEGIN IMMEDIATE / SAVEPOINT / COMMIT). It runs with
`journal_mode=WAL` and `synchronous=FULL`: a commit has reached the disk when it returns.
The file is owner-only (it holds the audit log and token hashes). Readers never block the
writer in WAL mode; they are `query_only`. Rows are `sqlite3.Row` (decoded by column name).
"""

from __future__ import annotations

from pathlib import Path

from aivos.shared.sqlite import Readers, open_reader, open_writer

__all__ = ["DB_NAME", "db_path", "open_writer", "open_reader", "Readers"]

DB_NAME = "aivos.db"


def db_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / DB_NAME
