"""A real PostgreSQL deadlock against each ingest batch, provoked with two connections:
the batch is aborted by PostgreSQL, run again, and nothing is lost or duplicated.

The provocation is the same both times. A second connection (`Rival`, another writer such
as a replica) holds a row the batch needs; the batch takes its first rows and waits for
that one; then the rival asks for a row the batch holds. PostgreSQL finds the cycle and
aborts the batch: its backend waited first (and the rival's own deadlock check is set far
later), so the batch is the victim every time. The rival then goes on and commits.

* the cloud ingest store (`CloudStore.upsert_many`, records keyed by ``(site, id)``): the
  aborted batch is run again at once inside the store (`aivos.cloud.db.transact`);
* the fleet registry's heartbeat batch (`HeartbeatIngest`, fed through a real
  nats-server): the sites upsert and the history trim; the rival updates the two sites'
  rows in the other order, as a config-report batch of another replica does. The ingest
  puts the aborted batch back and writes it again.

``pg_stat_database.deadlocks`` proves the deadlock happened."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import psycopg
import pytest

from aivos.cloud.db import Conn, StoreConflict, StoreUnavailable, transact
from aivos.cloud.fleet.ingest import HeartbeatIngest
from aivos.cloud.fleet.registry import open_registry
from aivos.cloud.ingest import CloudStore
from aivos.cloud.ingest.store import UpsertResult
from aivos.shared.fleet import Heartbeat, encode
from aivos.shared.natsconf import start_local_hub
from aivos.shared.subjects import heartbeat_subject
from aivos.shared.syncwire import SyncEnvelope
from tests.fixtures.fleet import heartbeat
from tests.fixtures.wait import eventually, eventually_sync

pytestmark = pytest.mark.slow

# the batch's own deadlock check: late enough that the rival is surely waiting by then
# (the check runs once per wait), early enough for a short test
BATCH_DEADLOCK_TIMEOUT = "3s"


def _with_deadlock_timeout(url: str) -> str:
    return f"{url}?options=-c%20deadlock_timeout%3D{BATCH_DEADLOCK_TIMEOUT}"


class Rival:
    """The other writer: one transaction on its own connection, never the deadlock's
    victim (its deadlock check is set to a minute: the batch's check comes first)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute("SET deadlock_timeout = '60s'")
        self.conn.execute("SET statement_timeout = '120s'")  # a liveness bound only
        self.monitor = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def batch_waits(self, application: str) -> bool:
        """Whether a backend of `application` (the batch's pool) waits for a lock."""
        row = self.monitor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock'",
            (application,),
        ).fetchone()
        return bool(row and row[0])

    def deadlocks(self) -> int:
        self.monitor.execute("SELECT pg_stat_clear_snapshot()")
        row = self.monitor.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()
        self.monitor.close()


@pytest.fixture
def rival(postgres_url: str) -> Iterator[Rival]:
    r = Rival(postgres_url)
    try:
        yield r
    finally:
        r.close()


def env(n: int) -> SyncEnvelope:
    return SyncEnvelope(
        id=f"audit-{n:03d}",
        site="branch-1",
        data_class="audit",
        kind="decision",
        seq=n,
        created_at="2026-01-01T00:00:00Z",
        payload={"n": n, "from": "batch"},
        trace_id=None,
    )


_RECORD = (
    "INSERT INTO records(site, id, data_class, kind, seq, created_at, payload, trace_id, "
    "received_at) VALUES ('branch-1', %s, 'audit', 'decision', %s, "
    "'2026-01-01T00:00:00Z', '{\"from\": \"rival\"}', NULL, 0)"
)


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_records_batch_aborted_by_a_deadlock_is_run_again(
    postgres_url: str, rival: Rival, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CloudStore.open(tmp_path, db=_with_deadlock_timeout(postgres_url))
    try:
        deadlocks = rival.deadlocks()
        batch = [env(n) for n in range(1, 51)]
        # the rival inserts the batch's last key (in key order) and holds it uncommitted
        rival.execute(_RECORD, ("audit-050", 50))
        caplog.set_level(logging.WARNING, logger="aivos.cloud.db.retry")
        thread, out = _in_thread(lambda: store.upsert_many(batch))
        # the batch inserts audit-001 ... and waits for audit-050
        eventually_sync(lambda: rival.batch_waits("aivos-ingest"), timeout=60, what="the wait")
        # the rival now wants audit-001, which the batch holds: a cycle
        assert rival.execute(_RECORD, ("audit-001", 1)) == 1  # the batch was the victim
        rival.conn.commit()
        thread.join(120)
        assert not thread.is_alive()
        assert "error" not in out, out.get("error")
        result = out["result"]
        assert isinstance(result, UpsertResult)
        assert (result.inserted, result.duplicates) == (48, 2)  # the rival's two kept
        assert "running the transaction again (attempt 2)" in caplog.text
        assert "deadlock detected" in caplog.text
        records = store.records()
        assert [r.id for r in records] == [f"audit-{n:03d}" for n in range(1, 51)]
        origin = {r.id: r.payload["from"] for r in records}
        assert origin.pop("audit-001") == origin.pop("audit-050") == "rival"
        assert set(origin.values()) == {"batch"}
        assert store.duplicates_ignored() == 2
        eventually_sync(
            lambda: rival.deadlocks() == deadlocks + 1, timeout=30, what="one deadlock counted"
        )
    finally:
        store.close()


def test_transaction_aborted_on_every_attempt_raises_store_conflict(
    postgres_url: str, rival: Rival, tmp_path: Path
) -> None:
    """The rival re-creates the cycle on each attempt: after its attempts `transact` raises
    `StoreConflict` (a `StoreUnavailable`: the ingest consumer naks the batch for a later
    redelivery), and nothing of the batch was committed."""
    store = CloudStore.open(tmp_path, db=_with_deadlock_timeout(postgres_url))
    insert = _RECORD.replace("%s", "?").replace("rival", "batch")

    def batch(conn: Conn) -> None:
        for n in range(1, 51):
            conn.execute(insert, (f"audit-{n:03d}", n))

    try:
        rival.execute(_RECORD, ("audit-050", 50))
        thread, out = _in_thread(lambda: transact(store.engine, batch, attempts=2))
        for attempt in (1, 2):
            eventually_sync(
                lambda: rival.batch_waits("aivos-ingest"), timeout=60, what=f"wait {attempt}"
            )
            rival.conn.execute("SAVEPOINT cycle")
            assert rival.execute(_RECORD, ("audit-001", 1)) == 1  # after the batch's abort
            rival.conn.execute("ROLLBACK TO SAVEPOINT cycle")  # audit-001 free again
        thread.join(120)
        assert not thread.is_alive()
        assert isinstance(out.get("error"), StoreConflict)
        assert isinstance(out["error"], StoreUnavailable)
        rival.conn.rollback()
        assert store.total() == 0
    finally:
        store.close()


def _heartbeat(site: str, n: int) -> Heartbeat:
    return heartbeat(site, outbox_depth=n)


@pytest.mark.asyncio
async def test_heartbeat_batch_aborted_by_a_deadlock_is_written_again(
    postgres_url: str, rival: Rival, tmp_path: Path
) -> None:
    registry = open_registry(_with_deadlock_timeout(postgres_url), tmp_path / "fleet")
    hub = start_local_hub(tmp_path / "hub")
    nc = await nats.connect(hub.url)
    # the 10 heartbeats below make one batch (the 10th wakes the flusher; published in a
    # burst right after the start, well inside the first flush interval); after a failed
    # write the ingest tries again at its next flush
    ingest = HeartbeatIngest(registry, flush_interval_s=1.0, max_batch=10)
    try:
        for site in ("site-a", "site-b"):
            registry.register_site(site)
        deadlocks = await asyncio.to_thread(rival.deadlocks)
        # the rival holds site-b's row (a config report applied by another replica)
        assert rival.execute("UPDATE sites SET config_error = 'r' WHERE site_id = 'site-b'") == 1
        await ingest.start(nc)
        for n in range(5):
            for site in ("site-a", "site-b"):
                await nc.publish(heartbeat_subject(site), encode(_heartbeat(site, n)))
        await nc.flush()
        # the batch upserts site-a's row, then waits for site-b's
        await eventually(
            lambda: rival.batch_waits("aivos-fleet"), timeout=60, what="the batch's wait"
        )
        # the rival now updates site-a, which the batch holds: a cycle; the batch is aborted
        touched = await asyncio.to_thread(
            rival.execute, "UPDATE sites SET config_error = 'r' WHERE site_id = 'site-a'"
        )
        assert touched == 1
        rival.conn.commit()
        # the ingest put the batch back and writes it again (after its 1 s pause)
        await eventually(
            lambda: ingest.counters.written == 10, timeout=60, what="the batch written"
        )
        assert ingest.counters.batches == 1 and ingest.pending() == 0

        def history() -> list[tuple[str, int]]:
            with psycopg.connect(postgres_url) as conn:
                rows = conn.execute(
                    "SELECT site_id, outbox_depth FROM heartbeats ORDER BY site_id, outbox_depth"
                ).fetchall()
            return [(str(r[0]), int(r[1])) for r in rows]

        # every heartbeat once: none lost, none duplicated by the retry
        assert history() == [(s, n) for s in ("site-a", "site-b") for n in range(5)]
        for site in ("site-a", "site-b"):  # and the sites' latest state is the last one
            latest = registry.heartbeat(site)
            assert latest is not None and latest.outbox_depth == 4
        await eventually(
            lambda: rival.deadlocks() == deadlocks + 1, timeout=30, what="one deadlock counted"
        )
    finally:
        await ingest.stop()
        await nc.close()
        hub.stop()
        registry.close()
