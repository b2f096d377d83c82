"""The one SQLite toolkit: connections and pragmas, transactions, rows decoded by name.

Every store in aivos (the edge store, the knowledge meta, the cloud ingest store, the fleet
registry) opens its file here, so connection setup is written once:

- `open_writer(path, synchronous=..., ...)`: the write connection, in autocommit mode
  (`isolation_level=None`) so its owner controls transactions explicitly, in WAL mode
  (checked), with `busy_timeout`, `foreign_keys` and the given `synchronous` level
  (`FULL`: a commit has reached the disk when it returns). A new file is created
  owner-only unless `mode=None`.
- `open_reader(path)`: a `query_only` connection; `Readers`: one per thread, closed together.
- `immediate(conn)`: `BEGIN IMMEDIATE` ... `COMMIT`, `ROLLBACK` on any exception (the
  COMMIT's own included); a full file system (`SQLITE_FULL`, `ENOSPC`) leaves it as
  `DiskFull`, with nothing of the transaction written (`as_disk_full`).
- Rows are `sqlite3.Row`; `decode_row(row, Type)` / `decode_rows(rows, Type)` turn them into
  msgspec Structs by column name (`msgspec.convert`), the way sqlite-utils returns dicts.
- `Closing`: a mixin that makes a store with a `close()` a context manager
  (`with Store.open(...) as store:`).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import msgspec

from aivos.shared.errors import DiskFull

__all__ = [
    "BUSY_TIMEOUT_MS",
    "Closing",
    "Readers",
    "Synchronous",
    "as_disk_full",
    "decode_row",
    "decode_rows",
    "immediate",
    "open_reader",
    "open_writer",
    "row_dict",
]

BUSY_TIMEOUT_MS = 10_000
"""Default wait for a lock held by another connection before `database is locked`."""

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

T = TypeVar("T")


def _connect(path: str | Path, busy_timeout_ms: int, foreign_keys: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    if foreign_keys:
        conn.execute("PRAGMA foreign_keys=ON")
    return conn


def open_writer(
    path: str | Path,
    *,
    synchronous: Synchronous = "FULL",
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    foreign_keys: bool = True,
    mode: int | None = 0o600,
) -> sqlite3.Connection:
    """The write connection (usable from any thread; its owner serialises writes).

    `mode`: permissions of a file created here (SQLite gives the -wal and -shm files the
    same); None leaves it to the umask. Raises `sqlite3.OperationalError` when the file
    system cannot do WAL.
    """
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"unknown synchronous level {synchronous!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if mode is not None and not Path(path).exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, mode))
    conn = _connect(path, busy_timeout_ms, foreign_keys)
    try:
        journal = conn.execute("PRAGMA journal_mode=WAL").fetchone()["journal_mode"]
        if str(journal).lower() != "wal":  # pragma: no cover - file systems without WAL
            raise sqlite3.OperationalError(f"could not enable WAL (journal_mode={journal})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def open_reader(
    path: str | Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, foreign_keys: bool = False
) -> sqlite3.Connection:
    """A read-only (`query_only`) connection; readers never block the writer in WAL mode."""
    conn = _connect(path, busy_timeout_ms, foreign_keys)
    conn.execute("PRAGMA query_only=1")
    return conn


class Readers:
    """One read connection per thread, opened on first use, closed together."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        foreign_keys: bool = False,
    ) -> None:
        self._path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._foreign_keys = foreign_keys
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._closed = False

    def get(self) -> sqlite3.Connection:
        """The calling thread's reader; `sqlite3.ProgrammingError` once closed."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("store is closed")
                conn = open_reader(
                    self._path,
                    busy_timeout_ms=self._busy_timeout_ms,
                    foreign_keys=self._foreign_keys,
                )
                self._all.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


_SQLITE_FULL = 13


def as_disk_full(exc: BaseException, path: str | Path) -> DiskFull | None:
    """`DiskFull(path)` (caused by `exc`) when `exc` says the file system is full
    (`SQLITE_FULL`, or an `OSError` with `ENOSPC`/`EDQUOT`), else None."""
    if isinstance(exc, DiskFull):
        return exc
    if isinstance(exc, sqlite3.Error):
        full = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_FULL
    elif isinstance(exc, OSError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    else:
        full = False
    if not full:
        return None
    err = DiskFull(str(path))
    err.__cause__ = exc
    return err


def _database_dir(conn: sqlite3.Connection) -> str:
    try:
        row = conn.execute("PRAGMA database_list").fetchone()
        return str(Path(row["file"]).parent) if row and row["file"] else ""
    except sqlite3.Error:
        return ""


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on an autocommit connection: `BEGIN IMMEDIATE`, then `COMMIT`,
    or `ROLLBACK` when the body or the COMMIT raises (the caller serialises use of `conn`).

    A COMMIT that fails (a full disk) is rolled back too, so the connection is never left
    inside a transaction; a full file system is raised as `DiskFull`."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        full = as_disk_full(exc, _database_dir(conn))
        if full is not None and full is not exc:
            raise full from exc
        raise


# -- rows ------------------------------------------------------------------------------------


def row_dict(row: sqlite3.Row) -> dict[str, Any]:
    """`{column: value}` of one row."""
    return dict(zip(row.keys(), row, strict=True))


def _decode_json(values: dict[str, Any], columns: Iterable[str]) -> None:
    for name in columns:
        raw = values.get(name)
        if raw is not None:
            values[name] = msgspec.json.decode(raw)


def decode_row(row: sqlite3.Row, type: type[T], *, json: Iterable[str] = (), **values: Any) -> T:
    """The row as a `type` (a msgspec Struct), matched by column name with `msgspec.convert`.

    `json`: columns holding JSON text, decoded first (NULL stays None). `values`: fields not
    stored as such (derived, or known to the caller), set or replaced by name.
    """
    fields = row_dict(row)
    _decode_json(fields, json)
    fields.update(values)
    return msgspec.convert(fields, type)


def decode_rows(
    rows: Iterable[sqlite3.Row], type: type[T], *, json: Iterable[str] = (), **values: Any
) -> list[T]:
    """`decode_row` for each row, in order."""
    json_cols = tuple(json)
    return [decode_row(r, type, json=json_cols, **values) for r in rows]


# -- stores as context managers -----------------------------------------------------------------


class Closing:
    """Mixin for stores with a `close()`: `with Store.open(...) as store:` closes on exit."""

    def close(self) -> None:  # pragma: no cover - every store defines its own
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
