"""Which engine a cloud command uses: ``--db URL`` / ``$AIVOS_CLOUD_DB`` names a PostgreSQL
database (``postgresql://user@host:port/dbname``); without one, the SQLite file in the data
directory, as always."""

from __future__ import annotations

import re
from pathlib import Path

from aivos.cloud.db.engine import Engine, SqliteEngine
from aivos.shared.errors import ConfigError
from aivos.shared.sqlite import Synchronous

__all__ = ["DB_ENV", "is_postgres_url", "open_engine", "redact"]

DB_ENV = "AIVOS_CLOUD_DB"
"""The environment variable `--db` falls back to."""

_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(db: str | None) -> bool:
    return bool(db) and str(db).startswith(_SCHEMES)


def redact(db: str) -> str:
    """The URL without its password (for logs and errors)."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", db)


def open_engine(
    db: str | None,
    sqlite_path: Path,
    *,
    synchronous: Synchronous = "FULL",
    pool_max: int = 4,
    name: str = "aivos-cloud",
) -> Engine:
    """PostgreSQL when `db` is a ``postgresql://`` URL, else the SQLite file `sqlite_path`."""
    if not db:
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteEngine(sqlite_path, synchronous=synchronous)
    if not is_postgres_url(db):
        raise ConfigError("db", f"not a postgresql:// URL: {redact(db)!r}")
    # psycopg is in the `cloud` extra: imported only when PostgreSQL is asked for
    from aivos.cloud.db.postgres import PostgresEngine

    return PostgresEngine(db, max_size=pool_max, name=name)
