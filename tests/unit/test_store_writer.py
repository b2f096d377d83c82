import asyncio
import sqlite3
import threading

import pytest

from aivos.edge.store import AuditRecord, Store
from aivos.shared.errors import StoreClosed
from tests.fixtures.wait import eventually


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path)
    yield s
    s.close()


def _record(i: int) -> AuditRecord:
    return AuditRecord(
        id=f"req-{i}",
        intent="card_declined",
        confidence=0.91,
        decision="local",
        model_version="v1",
        latency_ms=1.5,
        pii_counts={"EMAIL": 1},
    )


async def test_concurrent_appends_are_group_committed_and_all_durable(tmp_path):
    store = Store.open(tmp_path)
    rows = await asyncio.gather(*(store.append_audit(_record(i)) for i in range(500)))
    assert sorted(r.seq for r in rows) == list(range(1, 501))
    assert store.writer_stats.ops >= 500
    assert store.writer_stats.commits < 500  # batched: fewer commits than writes
    store.close()

    reopened = Store.open(tmp_path)
    try:
        assert reopened.audit_count() == 500
        result = reopened.verify_audit()
        assert result.ok and result.n_rows == 500
        assert {reopened.get_audit(f"req-{i}").id for i in range(500)} == {
            f"req-{i}" for i in range(500)
        }
    finally:
        reopened.close()


async def test_a_failing_op_is_rolled_back_alone(store):
    started, gate = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        gate.wait(30)

    blocker = asyncio.ensure_future(store.transact(hold))
    await asyncio.to_thread(started.wait, 30)  # the writer is busy; the next ops share a batch

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO memory_facts VALUES ('s', 'k', '1', 'now')")
        raise ValueError("this op fails")

    ops = [
        asyncio.ensure_future(store.put_fact("s", "a", 1)),
        asyncio.ensure_future(store.transact(bad)),
        asyncio.ensure_future(store.put_fact("s", "b", 2)),
    ]
    await eventually(lambda: store.queue_depth >= 3, interval=0.001, what="3 queued ops")
    gate.set()
    await blocker
    results = await asyncio.gather(*ops, return_exceptions=True)
    assert isinstance(results[1], ValueError)
    assert [f.key for f in store.list_facts("s")] == ["a", "b"]


async def test_a_failing_lone_op_leaves_nothing_and_the_next_one_commits(store):
    """A batch of one runs without a SAVEPOINT: its failure rolls the transaction back."""

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO memory_facts VALUES ('s', 'k', '1', 'now')")
        raise ValueError("this op fails")

    commits = store.writer_stats.commits
    with pytest.raises(ValueError, match="this op fails"):
        await store.transact(bad)
    assert store.list_facts("s") == []
    assert store.writer_stats.failed_ops == 1
    assert store.writer_stats.commits == commits  # rolled back, not committed
    await store.put_fact("s", "a", 1)
    assert [f.key for f in store.list_facts("s")] == ["a"]
    assert store.writer_stats.commits == commits + 1


async def test_a_cancelled_caller_still_gets_its_write_committed(store):
    started, gate = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        gate.wait(30)

    blocker = asyncio.ensure_future(store.transact(hold))
    await asyncio.to_thread(started.wait, 30)
    write = asyncio.ensure_future(store.put_fact("s", "kept", 1))
    await eventually(lambda: store.queue_depth >= 1, interval=0.001, what="the queued write")
    write.cancel()
    gate.set()
    await blocker
    await store.put_fact("s", "after", 2)  # committed after the cancelled caller's write
    assert write.cancelled()
    assert [f.key for f in store.list_facts("s")] == ["after", "kept"]


async def test_close_flushes_queued_writes_and_refuses_new_ones(tmp_path):
    store = Store.open(tmp_path)
    futures = [asyncio.ensure_future(store.append_audit(_record(i))) for i in range(50)]
    await asyncio.sleep(0)
    await asyncio.to_thread(store.writer.close)
    done = await asyncio.gather(*futures)
    assert len(done) == 50
    with pytest.raises(StoreClosed):
        await store.append_audit(_record(99))
    store.close()
    reopened = Store.open(tmp_path)
    assert reopened.audit_count() == 50
    reopened.close()


def test_submit_sync_returns_the_committed_result(store):
    assert store.transact_sync(lambda c: c.execute("SELECT 41 + 1").fetchone()[0]) == 42


async def test_health_checks(tmp_path):
    store = Store.open(tmp_path)
    assert await store.check_writable() is True
    assert store.integrity_check() == "ok"
    await asyncio.to_thread(store.close)
    assert await store.check_writable() is False
