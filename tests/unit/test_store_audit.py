import asyncio
import sqlite3

import pytest

from aivos.edge.store import AuditRecord, Store
from aivos.edge.store.db import db_path


@pytest.fixture
def chain(tmp_path):
    store = Store.open(tmp_path)
    asyncio.run(_fill(store, 10))
    store.close()
    conn = sqlite3.connect(db_path(tmp_path), isolation_level=None)
    yield tmp_path, conn
    conn.close()


async def _fill(store: Store, n: int) -> None:
    for i in range(n):
        await store.append_audit(
            AuditRecord(id=f"r{i + 1}", intent="balance", confidence=0.8, decision="local")
        )


def _verify(path):
    store = Store.open(path)
    try:
        return store.verify_audit()
    finally:
        store.close()


def test_intact_chain_verifies(chain):
    path, _ = chain
    result = _verify(path)
    assert result.ok and result.n_rows == 10 and result.first_bad_seq is None


def test_rows_link_to_their_predecessor(chain):
    _, conn = chain
    rows = conn.execute("SELECT seq, prev_hash, hash FROM audit ORDER BY seq").fetchall()
    assert rows[0][1] == "0" * 64
    for prev, row in zip(rows, rows[1:], strict=False):
        assert row[1] == prev[2]


def test_an_edited_row_is_named(chain):
    path, conn = chain
    conn.execute("UPDATE audit SET decision = 'escalate' WHERE seq = 5")
    result = _verify(path)
    assert not result.ok and result.first_bad_seq == 5
    assert "edited" in result.reason and "r5" in result.reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(chain):
    from aivos.edge.store.audit import _FIELDS, row_hash

    path, conn = chain
    conn.execute("UPDATE audit SET confidence = 0.1 WHERE seq = 5")
    row = conn.execute(f"SELECT {', '.join(_FIELDS)} FROM audit WHERE seq = 5").fetchone()
    conn.execute(
        "UPDATE audit SET hash = ? WHERE seq = 5", (row_hash(dict(zip(_FIELDS, row, strict=True))),)
    )
    result = _verify(path)
    assert not result.ok and result.first_bad_seq == 6


def test_a_deleted_row_is_named(chain):
    path, conn = chain
    conn.execute("DELETE FROM audit WHERE seq = 4")
    result = _verify(path)
    assert not result.ok and result.first_bad_seq == 5
    assert "deleted" in result.reason


def test_deleted_tail_rows_are_detected(chain):
    path, conn = chain
    conn.execute("DELETE FROM audit WHERE seq >= 9")
    result = _verify(path)
    assert not result.ok and result.first_bad_seq == 9


def test_reordered_rows_are_named(chain):
    path, conn = chain
    conn.execute("UPDATE audit SET seq = -1 WHERE seq = 3")
    conn.execute("UPDATE audit SET seq = 3 WHERE seq = 4")
    conn.execute("UPDATE audit SET seq = 4 WHERE seq = -1")
    result = _verify(path)
    assert not result.ok and result.first_bad_seq == 3


async def test_audit_rows_hold_counts_not_values(tmp_path):
    store = Store.open(tmp_path)
    try:
        row = await store.append_audit(
            AuditRecord(
                id="req-1",
                intent="transfer",
                confidence=0.7,
                decision="escalate",
                model_version="m-3",
                latency_ms=2.25,
                pii_counts={"EMAIL": 2, "IBAN": 1},
                trace_id="ab" * 16,
                detail={"job_id": "J1"},
            )
        )
        stored = store.get_audit("req-1")
        assert stored == row
        assert stored.pii_counts == {"EMAIL": 2, "IBAN": 1}
        assert stored.trace_id == "ab" * 16
    finally:
        store.close()


async def test_duplicate_request_id_is_refused_and_chain_stays_intact(tmp_path):
    store = Store.open(tmp_path)
    try:
        await store.append_audit(AuditRecord(id="dup"))
        with pytest.raises(sqlite3.IntegrityError):
            await store.append_audit(AuditRecord(id="dup"))
        await store.append_audit(AuditRecord(id="next"))
        result = store.verify_audit()
        assert result.ok and result.n_rows == 2
    finally:
        store.close()


async def test_a_write_before_the_row_commits_with_it_or_not_at_all(tmp_path):
    """`before` (a fallback's job) runs in the audit row's op: one commit for both, and a row
    that cannot be written takes the job with it."""
    from aivos.edge.store import jobs

    store = Store.open(tmp_path)
    try:
        commits = store.writer_stats.commits
        await store.append_audit(
            AuditRecord(id="r1", detail={"job_id": "J1"}),
            before=lambda c: jobs.create(c, "escalation", {"text": "q"}, job_id="J1"),
        )
        assert store.writer_stats.commits == commits + 1
        assert store.get_job("J1").kind == "escalation" and store.get_audit("r1") is not None
        with pytest.raises(sqlite3.IntegrityError):  # r1 again: the row is refused
            await store.append_audit(
                AuditRecord(id="r1", detail={"job_id": "J2"}),
                before=lambda c: jobs.create(c, "escalation", {"text": "q"}, job_id="J2"),
            )
        assert [j.id for j in store.list_jobs(jobs.JOB_STATES)] == ["J1"]
        assert store.verify_audit().n_rows == 1
    finally:
        store.close()


async def test_a_write_after_the_row_commits_with_it_and_never_without_it(tmp_path):
    """`after` (a hard example) runs in the row's op once the row is in: one commit for
    both, and not run at all when the row is refused."""
    from aivos.edge.store import jobs

    store = Store.open(tmp_path)
    try:
        rows_seen = []

        def after(c):
            rows_seen.append(c.execute("SELECT count(*) FROM audit").fetchone()[0])
            jobs.create(c, "escalation", {"text": "q"}, job_id="J1")

        commits = store.writer_stats.commits
        await store.append_audit(AuditRecord(id="r1"), after=after)
        assert store.writer_stats.commits == commits + 1
        assert rows_seen == [1] and store.get_job("J1").kind == "escalation"
        with pytest.raises(sqlite3.IntegrityError):  # r1 again: the row is refused
            await store.append_audit(AuditRecord(id="r1"), after=after)
        assert rows_seen == [1]
        assert store.verify_audit().n_rows == 1
    finally:
        store.close()
