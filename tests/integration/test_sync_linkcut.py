"""Link cuts between the site leaf and the hub: records written while the link is down
arrive after it comes back, none lost, none duplicated, in the site's order; also with a
cut longer than the stream's duplicate window, and with the ingest killed mid catch-up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aivos.cloud.ingest.consumer import DEFAULT_DURABLE
from aivos.shared.subjects import SYNC_STREAM
from tests.fixtures.nats import wait_consumer_settled
from tests.fixtures.wait import eventually
from tests.integration import test_sync_drain as _drain
from tests.integration.test_sync_drain import SITE, SyncRig, policy

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

rig_factory = _drain.rig_factory  # the fixture


async def _write_memory(rig: SyncRig, k: int) -> None:
    for i in range(k):
        await rig.store.put_fact("sess-1", f"k{i}", {"v": i}, sync=True)
    rig.drainer.wake()


async def test_cut_then_restore_delivers_everything_once_in_order(rig_factory: Any) -> None:
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy(memory="mask"), batch=100)
    await rig.start_ingest()
    before = await rig.audit(20)
    await eventually(lambda: len(rig.cloud_ids()) == 20, what="pre-cut records")

    rig.proxy.cut()
    during = await rig.audit(250)
    await _write_memory(rig, 30)
    await eventually(lambda: rig.drainer.stats.errors > 0, what="a failed round while cut")
    assert len(rig.cloud_ids()) == 20  # nothing got through the cut link
    assert rig.store.outbox_depth() == 280

    rig.proxy.restore()
    await eventually(lambda: rig.store.outbox_depth() == 0, what="outbox drained")
    await eventually(lambda: len(rig.cloud_ids()) == 270, what="catch-up after restore")
    await eventually(lambda: len(rig.cloud_ids("memory")) == 30, what="memory catch-up")
    assert rig.cloud_ids() == before + during  # 0 lost, 0 duplicated, in order
    seqs = [r.seq for r in rig.cloud.records(site=SITE)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert rig.store.outbox_depth() == 0
    assert rig.cloud.counts() == {SITE: {"audit": 270, "memory": 30}}


async def test_cut_longer_than_duplicate_window(rig_factory: Any) -> None:
    """With a 1 s dedup window, the ack of a batch is lost in the cut (the hub stored it),
    and the resend arrives after the window: the cloud upsert keeps it exactly once."""
    rig: SyncRig = await rig_factory(duplicate_window_s=1.0)
    await rig.start_edge(policy(), batch=100)
    await rig.start_ingest()
    first = await rig.audit(100)
    await eventually(lambda: len(rig.cloud_ids()) == 100, what="first batch")

    rig.proxy.cut()
    # a resend of already-stored records, as after an ack lost in the cut
    await rig.store.transact(lambda c: c.execute("UPDATE outbox SET sent_at = NULL"))
    await rig.store.transact(
        lambda c: c.execute(
            "UPDATE outbox_meta SET pending = (SELECT count(*) FROM outbox WHERE sent_at IS NULL)"
        )
    )
    during = await rig.audit(100)
    await asyncio.sleep(2.5)  # outlive the duplicate window while the link is down
    rig.proxy.restore()
    await eventually(lambda: rig.store.outbox_depth() == 0, what="outbox drained")
    await eventually(lambda: rig.ingest is not None and rig.ingest.stats.duplicates >= 100)
    # the edge's outbox drains on the hub's acks; the ingest consumer writes them a moment later
    await eventually(lambda: len(rig.cloud_ids()) == 200, what="resend ingested")
    assert rig.cloud_ids() == first + during
    assert rig.cloud.duplicates_ignored() >= 100  # the stream did hold the resends


async def test_ingest_killed_mid_catch_up_then_restarted(rig_factory: Any, tmp_path: Path) -> None:
    """The ingest runs as `aivos cloud ingest` in a subprocess and is SIGKILLed while it
    catches up; the restarted process resumes the durable consumer: exactly once."""
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy(), batch=200)
    rig.proxy.cut()
    ids = await rig.audit(3000)
    rig.proxy.restore()
    await eventually(
        lambda: rig.store.outbox_depth() == 0, timeout=60, what="all records in the hub stream"
    )

    cmd = [
        str(Path(sys.executable).parent / "aivos"),
        "cloud",
        "ingest",
        "--nats",
        rig.hub.url,
        "--data-dir",
        str(rig.tmp / "cloud"),
        "--batch",
        "50",
        "--ack-wait",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await eventually(
            lambda: rig.cloud.total() > 0, timeout=60, what="the ingest to start storing"
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        got = rig.cloud.total()
        assert 0 < got < 3000, got  # killed in the middle of the catch-up
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        await eventually(
            lambda: rig.cloud.total() == 3000, timeout=120, what="catch-up after restart"
        )
        # every message delivered and acknowledged: no redelivery is left to land
        await wait_consumer_settled(rig.hub.url, SYNC_STREAM, DEFAULT_DURABLE)
        assert rig.cloud_ids() == ids
        assert rig.cloud.total() == 3000
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_stopping_the_hub_keeps_records_until_it_returns(rig_factory: Any) -> None:
    """Stop the hub process itself (not just the link): the drainer keeps the records and
    drains them once the hub is back on the same ports and store."""
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy(), batch=100)
    await rig.start_ingest()
    first = await rig.audit(10)
    await eventually(lambda: len(rig.cloud_ids()) == 10, what="first records")
    await rig.stop_ingest()
    rig.hub.stop()
    during = await rig.audit(200)
    await eventually(lambda: rig.drainer.stats.errors > 0, what="failed round while hub down")
    rig.hub.start()
    await rig.start_ingest()
    await eventually(
        lambda: len(rig.cloud_ids()) == 210, timeout=60, what="catch-up after hub restart"
    )
    assert rig.cloud_ids() == first + during
