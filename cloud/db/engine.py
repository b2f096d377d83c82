"""What a cloud store needs from a database: `Conn` (execute with ``?`` placeholders, rows
read by column name), and an `Engine` that hands one out inside a write transaction (`tx`)
or for a read (`read`). `SqliteEngine` is the default; `postgres.PostgresEngine` the other.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from aivos.shared.errors import AivosError
from aivos.shared.sqlite import Synchronous, immediate, open_reader, open_writer

__all__ = [
    "Conn",
    "Cursor",
    "Dialect",
    "Engine",
    "SqliteEngine",
    "StoreConflict",
    "StoreUnavailable",
]

T = TypeVar("T")

Dialect = Literal["sqlite", "postgres"]


class StoreUnavailable(AivosError):
    """The database server cannot be reached or dropped the connection (a restart, a
    failover); the operation did not commit and may be retried."""

    code = "store_unavailable"


class StoreConflict(StoreUnavailable):
    """PostgreSQL aborted the transaction to break a deadlock with another one (or on a
    serialization failure); nothing was committed. Running the whole transaction again is
    the remedy PostgreSQL expects (`aivos.cloud.db.transact` does), and the other
    transaction has gone on by then. A `StoreUnavailable`, so a caller that retries a lost
    connection retries this too."""

    code = "store_conflict"


class Cursor(Protocol):
    """The part of a DB-API cursor the stores use; rows support ``row["column"]``."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """A connection inside a transaction (`Engine.tx`) or a read (`Engine.read`)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object: ...


class Engine(Protocol):
    """A database behind a store: which `dialect`, transactions, reads, close."""

    @property
    def dialect(self) -> Dialect: ...

    def tx(self) -> AbstractContextManager[Conn]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        ...

    def read(self, fn: Callable[[Conn], T]) -> T: ...

    def close(self) -> None: ...


class SqliteEngine:
    """One SQLite file (WAL): a writer connection and a reader connection, each behind its
    own lock (WAL lets the reader run while a write commits)."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, *, synchronous: Synchronous = "FULL") -> None:
        self.path = path
        self._wconn = open_writer(path, synchronous=synchronous, foreign_keys=False, mode=None)
        try:
            self._rconn = open_reader(path)
        except BaseException:
            self._wconn.close()
            raise
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()

    @contextmanager
    def tx(self) -> Iterator[Conn]:
        with self._wlock, immediate(self._wconn) as conn:
            yield conn

    def read(self, fn: Callable[[Conn], T]) -> T:
        with self._rlock:
            return fn(self._rconn)

    def writer(self) -> sqlite3.Connection:
        """The write connection itself (a SQLite-only migration step needs its pragmas)."""
        return self._wconn

    def close(self) -> None:
        with self._wlock:
            self._wconn.close()
        with self._rlock:
            self._rconn.close()
