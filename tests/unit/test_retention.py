"""Issue 12, reproduction 8: retention is enforced by one periodic task, and facts per
session are capped."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aivos.edge.feedback import FeedbackBook
from aivos.edge.retention import Purged, Retention
from aivos.edge.settings import EdgeSettings, MemorySettings, RetentionSettings
from aivos.edge.store import Store, reviewed
from aivos.shared.errors import FactLimitReached
from aivos.shared.http_status import http_status
from aivos.shared.metrics import Registry
from tests.fixtures.wait import eventually
from tests.unit.test_feedback import served

ROOT = Path(__file__).resolve().parents[2]
OLD = "2000-01-01T00:00:00.000000+00:00"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path, max_facts_per_session=3) as s:
        yield s


def _age(conn: sqlite3.Connection, table: str, column: str, where: str = "1") -> None:
    conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (OLD,))


def _run(conn: sqlite3.Connection, run_id: str, state: str, finished: str | None) -> None:
    conn.execute(
        "INSERT INTO workflow_runs(id, workflow, digest, trigger, state, inputs, trace_id, "
        "created_at, updated_at, finished_at) VALUES (?, 'wf', 'd', 'api', ?, '{}', 't', ?, ?, ?)",
        (run_id, state, OLD, OLD, finished),
    )
    conn.execute(
        "INSERT INTO workflow_steps(run_id, seq, step_id, kind, state, started_at) "
        "VALUES (?, 1, 's', 'respond', 'succeeded', ?)",
        (run_id, OLD),
    )


async def _seed(store: Store) -> None:
    sent_old, sent_new, _pending = [await store.enqueue("audit", {"n": i}) for i in range(3)]
    await store.mark_sent([sent_old, sent_new])
    await store.transact(lambda c: _age(c, "outbox", "sent_at", f"id = '{sent_old}'"))
    await store.put_fact("old", "k", 1)
    await store.add_turn("old", "user", "hello")
    await store.put_fact("new", "k", 2)
    await store.transact(lambda c: _age(c, "memory_facts", "updated_at", "session_id = 'old'"))
    await store.transact(lambda c: _age(c, "memory_turns", "ts", "session_id = 'old'"))
    done = await store.create_job("escalate", {"q": 1})
    await store.update_job(done.id, state="done", result={"a": 1})
    queued = await store.create_job("escalate", {"q": 2})
    await store.transact(
        lambda c: _age(c, "jobs", "updated_at", f"id IN ('{done.id}', '{queued.id}')")
    )
    await store.transact(lambda c: _run(c, "R-old", "succeeded", OLD))
    await store.transact(lambda c: _run(c, "R-open", "waiting_approval", None))
    await store.claim_delivery("corebank", "d-expired", expires_at=1.0)
    await store.claim_delivery("corebank", "d-live", expires_at=4_000_000_000.0)
    for rid in ("c-old", "c-old-labelled", "c-new"):
        candidate = {"request_id": rid, "text": "t", "intent": "x", "confidence": 0.2}
        payload = {**candidate, "decision": "escalate", "reason": "out_of_scope"}
        await store.transact(lambda c, p=payload: reviewed.keep(c, p))
    await store.transact(lambda c: reviewed.label(c, ["c-old-labelled"], "x", "intent"))
    await store.transact(lambda c: _age(c, "site_candidates", "ts", "request_id LIKE 'c-old%'"))


def _count(store: Store, sql: str) -> int:
    return int(store.readers.get().execute(sql).fetchone()[0])


async def test_one_pass_deletes_only_what_retention_no_longer_keeps(store: Store) -> None:
    await _seed(store)
    registry = Registry()
    retention = Retention(store, RetentionSettings(), MemorySettings(), registry=registry)
    purged = await retention.run_once()
    assert purged == Purged(outbox=1, memory=2, jobs=1, runs=1, deliveries=1, candidates=1)
    # kept: the recently sent and the pending outbox record, fresh memory, the unfinished
    # job and run, the live delivery id
    assert _count(store, "SELECT count(*) FROM outbox") == 2
    assert store.outbox_depth() == 1
    assert store.get_fact("new", "k") is not None and store.get_fact("old", "k") is None
    assert store.turns("old") == []
    assert [j.state for j in store.list_jobs(["queued", "done"])] == ["queued"]
    assert _count(store, "SELECT count(*) FROM workflow_runs WHERE id = 'R-open'") == 1
    assert _count(store, "SELECT count(*) FROM workflow_runs") == 1
    assert _count(store, "SELECT count(*) FROM workflow_steps") == 1
    assert _count(store, "SELECT count(*) FROM webhook_deliveries") == 1
    # an operator's label is never dropped; only the old unlabelled candidate went
    kept = store.readers.get().execute("SELECT request_id FROM site_candidates ORDER BY seq")
    assert [r[0] for r in kept] == ["c-old-labelled", "c-new"]
    assert 'aivos_retention_deleted_total{table="runs"} 1' in registry.render()
    assert await retention.run_once() == Purged()


async def test_the_task_runs_periodically_and_survives_a_failed_pass(store: Store) -> None:
    registry = Registry()
    settings = RetentionSettings(interval_s=0.05)
    retention = Retention(store, settings, MemorySettings(), registry=registry)
    real = store.purge_jobs
    calls = 0

    async def flaky(before: str) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.OperationalError("injected")
        return await real(before)

    store.purge_jobs = flaky  # type: ignore[method-assign]
    retention.start()
    try:
        await eventually(lambda: calls >= 1, timeout=5, what="first retention pass")
        await _seed(store)
        await eventually(
            lambda: _count(store, "SELECT count(*) FROM workflow_runs") == 1,
            timeout=10,
            what="a later pass purges the finished run",
        )
    finally:
        await retention.stop()
    assert "aivos_retention_failures_total 1" in registry.render()


async def test_facts_per_session_are_capped(store: Store) -> None:
    for i in range(3):
        await store.put_fact("s1", f"k{i}", "x" * 100)
    with pytest.raises(FactLimitReached) as info:
        await store.put_fact("s1", "k3", "x")
    assert info.value.code == "fact_limit_reached"
    assert "3 facts" in str(info.value)
    assert http_status(info.value, 503) == 409
    await store.put_fact("s1", "k0", "updated")  # an existing key may still change
    await store.put_fact("s2", "k0", "other session")
    assert len(store.list_facts("s1")) == 3
    assert store.get_fact("s1", "k0") is not None


def test_retention_settings_have_documented_defaults() -> None:
    settings = EdgeSettings()
    doc = (ROOT / "docs" / "store.md").read_text()
    expected = {
        "retention.interval_s": settings.retention.interval_s,
        "retention.outbox_sent_days": settings.retention.outbox_sent_days,
        "retention.jobs_days": settings.retention.jobs_days,
        "retention.runs_days": settings.retention.runs_days,
        "memory.retention_days": settings.memory.retention_days,
        "memory.max_facts_per_session": settings.memory.max_facts_per_session,
        "store.min_free_mb": settings.store.min_free_mb,
    }
    for key, default in expected.items():
        row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]+)` \|", doc, re.M)
        assert row, f"docs/store.md does not list {key}"
        assert float(row.group(1)) == default, key


async def test_old_feedback_votes_and_their_query_embeddings_go(store: Store) -> None:
    """`retention.feedback_days`: a vote keeps the rated query's embedding, derived from what
    a customer typed; after the window the vote goes with it, and the book re-reads."""
    book = FeedbackBook(store, weight=0.1, tau=0.5)
    query = np.ones(8, dtype=np.float32) / np.sqrt(8)
    for rid in ("v-old", "v-new"):
        await served(store, rid)
        book.remember(rid, query, "enc@v1")
        await book.record(rid, True, "D" if rid == "v-old" else "E", 0)
    await store.transact(lambda c: _age(c, "passage_feedback", "ts", "request_id = 'v-old'"))
    assert set(book._snap.banks["enc@v1"]) == {("D", 0), ("E", 0)}
    generation = book.generation

    retention = Retention(store, RetentionSettings(), MemorySettings())
    retention.on_feedback_purged = book.reload
    assert (await retention.run_once()).feedback == 1
    kept = store.readers.get().execute("SELECT request_id FROM passage_feedback")
    assert [r[0] for r in kept] == ["v-new"]
    assert set(book._snap.banks["enc@v1"]) == {("E", 0)}  # the old query's vector is gone
    assert book.generation == generation + 1  # results cached under the old votes drop
    assert (await retention.run_once()).feedback == 0
