"""The cloud tier's database engines: SQLite files by default, PostgreSQL for a fleet that
outgrows one machine. The cloud stores (ingest records, the fleet registry) write their SQL
once, against the small `Conn` Protocol, and get it from either engine:

    engine = open_engine(db_url, data_dir / "fleet.db")   # None -> the SQLite file
    apply_migrations(engine, MIGRATIONS)                   # named, recorded in _migrations
    with engine.tx() as conn: conn.execute("INSERT ... VALUES (?, ?)", (a, b))
    rows = engine.read(lambda c: c.execute("SELECT ...").fetchall())
    n = transact(engine, write_batch)   # run again if PostgreSQL broke a deadlock with it

`?` placeholders and rows read by column name work on both; where the dialects differ
(DDL types, a statement only one of them knows) a migration names its variant per dialect.
"""

from aivos.cloud.db.engine import (
    Conn,
    Cursor,
    Dialect,
    Engine,
    SqliteEngine,
    StoreConflict,
    StoreUnavailable,
)
from aivos.cloud.db.migrations import Migration, applied_migrations, apply_migrations
from aivos.cloud.db.retry import transact
from aivos.cloud.db.url import DB_ENV, is_postgres_url, open_engine, redact

__all__ = [
    "DB_ENV",
    "Conn",
    "Cursor",
    "Dialect",
    "Engine",
    "Migration",
    "SqliteEngine",
    "StoreConflict",
    "StoreUnavailable",
    "applied_migrations",
    "apply_migrations",
    "is_postgres_url",
    "open_engine",
    "redact",
    "transact",
]
