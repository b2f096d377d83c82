"""The SQLite toolkit (`aivos.shared.sqlite`): pragmas, readers, transactions, decoding rows
by column name, and every store usable as a context manager."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from aivos.shared.sqlite import (
    Readers,
    decode_row,
    decode_rows,
    immediate,
    open_reader,
    open_writer,
    row_dict,
)


def _pragma(conn: sqlite3.Connection, name: str) -> Any:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_the_writer_is_wal_full_with_foreign_keys_and_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "w.db"
    conn = open_writer(path)
    try:
        assert _pragma(conn, "journal_mode") == "wal"
        assert _pragma(conn, "synchronous") == 2  # FULL
        assert _pragma(conn, "foreign_keys") == 1
        assert _pragma(conn, "busy_timeout") == 10_000
        assert conn.isolation_level is None  # the owner controls transactions
    finally:
        conn.close()
    assert path.stat().st_mode & 0o077 == 0


def test_writer_options_are_applied(tmp_path: Path) -> None:
    conn = open_writer(
        tmp_path / "n.db", synchronous="NORMAL", busy_timeout_ms=30_000, foreign_keys=False
    )
    try:
        assert _pragma(conn, "synchronous") == 1  # NORMAL
        assert _pragma(conn, "foreign_keys") == 0
        assert _pragma(conn, "busy_timeout") == 30_000
    finally:
        conn.close()
    with pytest.raises(ValueError):
        open_writer(tmp_path / "x.db", synchronous="SOMETIMES")  # type: ignore[arg-type]


def test_a_reader_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    writer = open_writer(path)
    writer.execute("CREATE TABLE t (x INTEGER)")
    reader = open_reader(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("INSERT INTO t VALUES (1)")
        assert reader.execute("SELECT count(*) AS n FROM t").fetchone()["n"] == 0
    finally:
        reader.close()
        writer.close()


def test_readers_are_per_thread_and_closed_together(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    open_writer(path).close()
    readers = Readers(path)
    mine = readers.get()
    assert readers.get() is mine
    theirs: list[sqlite3.Connection] = []
    t = threading.Thread(target=lambda: theirs.append(readers.get()))
    t.start()
    t.join()
    assert theirs[0] is not mine
    readers.close()
    with pytest.raises(sqlite3.ProgrammingError):
        mine.execute("SELECT 1")
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        _get_in_new_thread(readers)


def _get_in_new_thread(readers: Readers) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            readers.get()
        except BaseException as exc:  # handed back to the test thread
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    raise errors[0]


def test_immediate_commits_or_rolls_back(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "t.db")
    conn.execute("CREATE TABLE t (x INTEGER)")
    with immediate(conn) as c:
        c.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError), immediate(conn) as c:
        c.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("boom")
    assert not conn.in_transaction
    assert [r["x"] for r in conn.execute("SELECT x FROM t")] == [1]
    conn.close()


class _Item(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    tags: list[str]
    note: str | None
    score: float


def test_rows_are_decoded_by_column_name(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "d.db")
    conn.execute("CREATE TABLE items (score REAL, tags TEXT, name TEXT, id INTEGER, note TEXT)")
    conn.execute("INSERT INTO items VALUES (0.5, '[\"a\",\"b\"]', 'one', 1, NULL)")
    conn.execute("INSERT INTO items VALUES (2, '[]', 'two', 2, 'n')")
    rows = conn.execute("SELECT * FROM items ORDER BY id").fetchall()
    assert row_dict(rows[0]) == {
        "score": 0.5,
        "tags": '["a","b"]',
        "name": "one",
        "id": 1,
        "note": None,
    }
    first = decode_row(rows[0], _Item, json=("tags",))
    assert first == _Item(id=1, name="one", tags=["a", "b"], note=None, score=0.5)
    assert decode_rows(rows, _Item, json=("tags",), note="set") == [
        _Item(id=1, name="one", tags=["a", "b"], note="set", score=0.5),
        _Item(id=2, name="two", tags=[], note="set", score=2.0),
    ]
    with pytest.raises(msgspec.ValidationError):
        decode_row(rows[0], _Item)  # tags is JSON text, not a list, unless decoded
    conn.close()


def test_every_store_is_a_context_manager(tmp_path: Path) -> None:
    from aivos.cloud.fleet.registry import SqliteRegistry
    from aivos.cloud.ingest import CloudStore
    from aivos.edge.knowledge.meta import MetaStore
    from aivos.edge.store import Store

    with Store.open(tmp_path / "edge") as store:
        assert store.audit_count() == 0
    with pytest.raises(sqlite3.ProgrammingError):
        store.get_job("nope")

    with MetaStore(tmp_path / "meta.sqlite") as meta:
        assert meta.generation() == 0
    with pytest.raises(sqlite3.ProgrammingError):
        meta.generation()

    with CloudStore.open(tmp_path / "cloud") as cloud:
        assert cloud.total() == 0
    with pytest.raises(sqlite3.ProgrammingError):
        cloud.total()

    with SqliteRegistry.open(tmp_path / "fleet") as registry:
        assert registry.register_site("site-a")
        assert [s.site_id for s in registry.sites()] == ["site-a"]
    with pytest.raises(sqlite3.ProgrammingError):
        registry.sites()
