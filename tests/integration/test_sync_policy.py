"""What leaves the site through sync obeys the residency policy, and a full outbox refuses
records that must sync loudly while local-only work goes on."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import nats
import pytest

from aivos.edge.store import AuditRecord
from aivos.edge.uplink.sync import OutboxDrainer
from aivos.shared.errors import QuotaExceeded
from aivos.shared.syncwire import decode_envelope
from tests.fixtures.wait import eventually
from tests.integration import test_sync_drain as _drain
from tests.integration.test_sync_drain import SITE, SyncRig, policy

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

rig_factory = _drain.rig_factory  # the fixture

_ROOT = Path(__file__).resolve().parents[2]


def _pii_set(n: int) -> list[dict[str, Any]]:
    spec = importlib.util.spec_from_file_location(
        "pii_dataset", _ROOT / "benchmarks/pii_dataset.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.generate(n, seed=11))


async def test_hub_sees_no_raw_pii_and_no_local_only_record(rig_factory: Any) -> None:
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy(audit="mask", memory="local-only"), batch=200)
    seen: list[nats.aio.msg.Msg] = []
    spy = await nats.connect(rig.hub.url)  # a subscriber on the hub sees all that leaves

    async def _spy(msg: nats.aio.msg.Msg) -> None:
        seen.append(msg)

    await spy.subscribe("aivos.sync.>", cb=_spy)
    await spy.flush()
    try:
        records = _pii_set(400)
        values = [s["value"] for r in records for s in r["spans"]]
        assert len(values) >= 400
        for i, r in enumerate(records):
            await rig.store.append_audit(
                AuditRecord(
                    id=f"pii-{i}",
                    intent="billing",
                    decision="escalate",
                    detail={"text": r["text"], "note": f"customer said: {r['text']}"},
                )
            )
        # local-only memory that reached the outbox anyway (a site whose policy changed
        # after the write, or a caller forcing sync): the drainer must keep it on site
        for i, r in enumerate(records[:50]):
            await rig.store.put_fact("s1", f"fact{i}", {"said": r["text"]}, sync=True)
        await rig.store.enqueue("memory", {"type": "turn", "text": records[0]["text"]})
        rig.drainer.wake()
        await eventually(lambda: rig.store.outbox_depth() == 0, timeout=60, what="outbox drained")
        await spy.flush()
        await eventually(
            lambda: len(seen) >= 400, timeout=60, what="the spy to see every audit record"
        )

        assert rig.drainer.stats.sent == 400
        assert rig.drainer.stats.denied == 51
        assert {m.subject for m in seen} == {f"aivos.sync.{SITE}.audit"}
        bodies = [m.data.decode() for m in seen]
        leaked = [v for v in values if any(v in b for b in bodies)]
        assert leaked == []
        envelopes = [decode_envelope(m.data) for m in seen]
        assert all(e.data_class == "audit" for e in envelopes)
        with_pii = {f"pii-{i}" for i, r in enumerate(records) if r["spans"]}
        masked = {e.payload["id"] for e in envelopes if "<" in e.payload["detail"]["text"]}
        assert with_pii <= masked
        # the policy's counts: audit passed (masked), memory denied (a batch re-read after
        # a slow ack under load is counted again, hence >=)
        counts = rig.gate.counts()
        assert counts["audit"].passed >= 400 and counts["memory"].denied >= 51
        assert "memory" not in {k for k, v in counts.items() if v.passed}
        assert sum(counts["audit"].masked.values()) >= len(values)
    finally:
        await spy.close()


async def test_full_outbox_refuses_loudly_local_only_continues_then_resumes(
    rig_factory: Any,
) -> None:
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy(), quota=40, batch=10)
    await rig.start_ingest()
    rig.proxy.cut()
    accepted = await rig.audit(40)
    with pytest.raises(QuotaExceeded):
        await rig.audit(1)
    assert rig.store.outbox_refused_total == 1  # the metric behind aivos_outbox_refused_total
    assert rig.store.outbox_depth() == 40
    assert rig.store.audit_count() == 40  # the refused write wrote nothing at all
    # local-only work goes on: audit kept on site, local-only memory
    row = await rig.store.append_audit(AuditRecord(id="local-1", decision="local"), sync=False)
    fact = await rig.store.put_fact("s1", "pref", "dark mode", sync=False)
    assert row.id == "local-1" and fact.key == "pref"

    rig.proxy.restore()  # space frees as the outbox drains: sync resumes by itself
    await eventually(lambda: rig.store.outbox_depth() == 0, timeout=60, what="outbox drained")
    more = await rig.audit(5)
    await eventually(lambda: len(rig.cloud_ids()) == 45, timeout=30, what="new records synced")
    assert rig.cloud_ids() == accepted + more
    assert "local-1" not in {r.payload.get("id") for r in rig.cloud.records(site=SITE)}


async def test_forbidden_region_keeps_records_queued_not_dropped(rig_factory: Any) -> None:
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy(), batch=50)
    await rig.drainer.stop()  # replace it with one aimed at a region the policy forbids
    rig.drainer = OutboxDrainer(rig.store, rig.gate, SITE, batch=50, region="us-east")
    await rig.start_ingest()
    ids = await rig.audit(20)
    assert rig.store.outbox_depth() == 20
    nc = await nats.connect(rig.leaf.url)
    task = asyncio.create_task(rig.drainer.run(nc))
    try:
        await eventually(lambda: rig.drainer.stats.errors > 0, what="a blocked round")
        assert rig.drainer.stats.last_error == "residency: region not allowed"
        assert rig.drainer.stats.denied == 0 and rig.drainer.stats.sent == 0
        assert rig.store.outbox_depth() == 20  # kept, in order, for a fixed configuration
    finally:
        await rig.drainer.stop()
        await task
        await nc.close()
    fixed = OutboxDrainer(rig.store, rig.gate, SITE, batch=50)  # the policy's own region
    nc = await nats.connect(rig.leaf.url)
    task = asyncio.create_task(fixed.run(nc))
    try:
        await eventually(lambda: len(rig.cloud_ids()) == 20, what="records after the fix")
        assert rig.cloud_ids() == ids
    finally:
        await fixed.stop()
        await task
        await nc.close()
