"""PostgreSQL behind the cloud stores: psycopg 3 with a `psycopg_pool.ConnectionPool`.

The stores' SQL is written once with ``?`` placeholders; `PgConn` turns it into psycopg's
``%s`` style (statements are translated once and cached) and rows come back as `PgRow`,
which reads like `sqlite3.Row` (``row["column"]``, ``row[0]``, ``row.keys()``), so the same
table functions and `aivos.shared.sqlite.decode_row` serve both engines.

A connection is checked before it is handed out (a server restart leaves broken ones in
the pool); a failure to connect or a connection lost mid-transaction raises
`StoreUnavailable`, a transaction PostgreSQL aborted to break a deadlock `StoreConflict`
(nothing was committed in either case: retry the whole transaction).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from aivos.cloud.db.engine import Conn, Cursor, Dialect, StoreConflict, StoreUnavailable

__all__ = ["PgConn", "PgRow", "PostgresEngine"]

T = TypeVar("T")

# transactions PostgreSQL aborts for their own sake, to be run again (SQLSTATE 40P01, 40001)
_ABORTED = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


class PgRow(tuple[Any, ...]):
    """A result row read by position or by column name, like `sqlite3.Row`."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> PgRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return super().__getitem__(self._index[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._index)


def _pg_row(cursor: psycopg.Cursor[Any]) -> RowMaker[PgRow]:
    index = {col.name: i for i, col in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(values, index)

    return make


@functools.lru_cache(maxsize=512)
def to_pg(sql: str) -> str:
    """``?`` placeholders -> ``%s`` (a literal ``%`` doubled). The stores never put a ``?``
    or a ``%`` inside a string literal of their SQL."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConn:
    """`Conn` over one pooled psycopg connection (inside its transaction)."""

    def __init__(self, conn: psycopg.Connection[PgRow]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self._conn.execute(to_pg(sql), parameters or None)  # type: ignore[arg-type]

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object:
        with self._conn.cursor() as cur:
            cur.executemany(to_pg(sql), parameters)  # type: ignore[arg-type]
        return None

    @property
    def raw(self) -> psycopg.Connection[PgRow]:
        """The psycopg connection (COPY, advisory locks, ``ANY(%s)`` arrays)."""
        return self._conn


class PostgresEngine:
    """A pool of connections to one PostgreSQL database (`conninfo`: a libpq URL)."""

    dialect: Dialect = "postgres"

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        timeout_s: float = 10.0,
        name: str = "aivos-cloud",
    ) -> None:
        self.conninfo = conninfo
        self._pool: ConnectionPool[psycopg.Connection[PgRow]] = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            kwargs={"row_factory": _pg_row, "application_name": name},
            check=ConnectionPool.check_connection,
            reconnect_timeout=24 * 3600.0,
            open=False,
            name=name,
        )
        try:
            self._pool.open(wait=True, timeout=timeout_s)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    @contextmanager
    def tx(self) -> Iterator[Conn]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield PgConn(conn)
        except _ABORTED as exc:
            raise StoreConflict(f"PostgreSQL aborted the transaction: {exc}") from exc
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    def read(self, fn: Callable[[Conn], T]) -> T:
        with self.tx() as conn:
            return fn(conn)

    def close(self) -> None:
        self._pool.close()
