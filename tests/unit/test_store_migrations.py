import sqlite3

import pytest

from aivos.edge.store import Store, migrations
from aivos.edge.store.db import db_path, open_writer


def test_open_records_every_migration_in_order(tmp_path):
    Store.open(tmp_path).close()
    conn = sqlite3.connect(db_path(tmp_path))
    rows = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY rowid").fetchall()
    assert [r[0] for r in rows] == [name for name, _ in migrations.MIGRATIONS]
    assert all(r[1] for r in rows)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_applying_twice_is_a_no_op(tmp_path):
    Store.open(tmp_path).close()
    Store.open(tmp_path).close()
    conn = open_writer(db_path(tmp_path))
    assert migrations.apply(conn) == []
    count = conn.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0]
    assert count == len(migrations.MIGRATIONS)


def test_a_new_migration_is_applied_once_and_recorded(tmp_path):
    Store.open(tmp_path).close()
    conn = open_writer(db_path(tmp_path))

    def add_notes(db):
        db.table("notes").create({"id": int, "text": str}, pk="id")

    extra = [*migrations.MIGRATIONS, ("0099_notes", add_notes)]
    assert migrations.apply(conn, extra) == ["0099_notes"]
    assert migrations.apply(conn, extra) == []
    assert migrations.applied(conn)[-1] == "0099_notes"
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'notes'").fetchone()


def test_a_failing_migration_leaves_nothing_behind(tmp_path):
    Store.open(tmp_path).close()
    conn = open_writer(db_path(tmp_path))

    def broken(db):
        db.table("half").create({"id": int}, pk="id")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        migrations.apply(conn, [*migrations.MIGRATIONS, ("0099_broken", broken)])
    assert "0099_broken" not in migrations.applied(conn)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None


def test_the_database_file_is_private_to_its_owner(tmp_path):
    Store.open(tmp_path).close()
    assert db_path(tmp_path).stat().st_mode & 0o077 == 0
