"""Store-and-forward sync end to end with real nats-server processes and SQLite files:
edge Store -> OutboxDrainer (on a site leaf, through a TCP proxy to the hub) -> hub stream
AIVOS_SYNC -> SyncIngest -> CloudStore.

`SyncRig` is shared by the other test_sync_* integration modules."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATSClient

from aivos.cloud.ingest import CloudStore, SyncIngest
from aivos.edge.store import AuditRecord, Store
from aivos.edge.uplink.sync import OutboxDrainer, ensure_sync_stream
from aivos.shared.metrics import Registry
from aivos.shared.natsconf import NatsServer
from aivos.shared.residency import ExitGate, ResidencyPolicy
from tests.fixtures.nats import TcpProxy
from tests.fixtures.wait import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

SITE = "branch1"


def policy(memory: str = "mask", audit: str = "mask") -> ResidencyPolicy:
    return ResidencyPolicy.from_mapping(
        {"region": "eu", "classes": {"audit": audit, "memory": memory, "telemetry": "allow"}}
    )


class SyncRig:
    """A hub, a proxy, a site leaf behind it, an edge store + drainer, and a cloud ingest."""

    def __init__(self, tmp: Path, hub: NatsServer, leaf: NatsServer, proxy: TcpProxy) -> None:
        self.tmp = tmp
        self.hub = hub
        self.leaf = leaf
        self.proxy = proxy
        self.store: Store
        self.drainer: OutboxDrainer
        self.cloud = CloudStore.open(tmp / "cloud")
        self.registry = Registry()
        self.ingest: SyncIngest | None = None
        self._edge_nc: NATSClient | None = None
        self._cloud_nc: NATSClient | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self.n = 0

    async def start_edge(
        self, gate_policy: ResidencyPolicy, *, quota: int = 100_000, batch: int = 500
    ) -> None:
        self.store = Store.open(self.tmp / "edge", outbox_quota=quota)
        self.gate = ExitGate(gate_policy)
        self.drainer = OutboxDrainer(
            self.store, self.gate, SITE, batch=batch, registry=self.registry
        )
        self._edge_nc = await nats.connect(self.leaf.url, max_reconnect_attempts=-1)
        self._drain_task = asyncio.create_task(self.drainer.run(self._edge_nc))

    async def start_ingest(self, *, ack_wait_s: float = 2.0) -> None:
        self._cloud_nc = await nats.connect(self.hub.url)
        self.ingest = SyncIngest(self.cloud, ack_wait_s=ack_wait_s)
        await self.ingest.start(self._cloud_nc)

    async def stop_ingest(self) -> None:
        if self.ingest is not None:
            await self.ingest.stop()
            self.ingest = None
        if self._cloud_nc is not None:
            await self._cloud_nc.close()
            self._cloud_nc = None

    async def audit(self, k: int, **detail: Any) -> list[str]:
        """Write `k` audited decisions; returns their outbox record ids."""
        ids = []
        for _ in range(k):
            self.n += 1
            row = await self.store.append_audit(
                AuditRecord(
                    id=f"req-{self.n:06d}",
                    intent="card_declined",
                    decision="local",
                    detail={"n": self.n, **detail},
                )
            )
            ids.append(f"audit-{row.id}")
        self.drainer.wake()
        return ids

    def cloud_ids(self, data_class: str = "audit") -> list[str]:
        return [r.id for r in self.cloud.records(data_class=data_class, site=SITE)]

    async def close(self) -> None:
        if self._drain_task is not None:
            await self.drainer.stop()
            await asyncio.wait_for(self._drain_task, 10)
        await self.stop_ingest()
        if self._edge_nc is not None:
            await self._edge_nc.close()
        with contextlib.suppress(AttributeError):
            self.store.close()
        self.cloud.close()


@pytest.fixture
async def rig_factory(
    tmp_path: Path,
    nats_hub_factory: Callable[[], NatsServer],
    nats_leaf_factory: Callable[..., NatsServer],
    tcp_proxy_factory: Callable[[str, int], TcpProxy],
) -> AsyncIterator[Callable[..., Any]]:
    rigs: list[SyncRig] = []

    async def make(*, duplicate_window_s: float = 120.0, atomic: bool = True) -> SyncRig:
        hub = nats_hub_factory()
        proxy = tcp_proxy_factory("127.0.0.1", hub.conf.leaf_port)  # type: ignore[union-attr]
        leaf = nats_leaf_factory(SITE, f"nats-leaf://{proxy.url_hostport}")
        nc = await nats.connect(hub.url)
        await ensure_sync_stream(
            nc.jetstream(), duplicate_window_s=duplicate_window_s, allow_atomic=atomic
        )
        await nc.close()
        rig = SyncRig(tmp_path / f"rig{len(rigs)}", hub, leaf, proxy)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.close()


async def test_drain_ingests_each_record_exactly_once_in_order(rig_factory: Any) -> None:
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy(), batch=64)
    await rig.start_ingest()
    ids = await rig.audit(300)
    await eventually(lambda: rig.store.outbox_depth() == 0, what="outbox drained")
    await eventually(lambda: len(rig.cloud_ids()) == 300, what="300 records in the cloud")
    assert rig.cloud_ids() == ids  # same records, the site's order
    assert rig.drainer.stats.sent == 300
    assert rig.cloud.counts() == {SITE: {"audit": 300}}
    metrics = rig.registry.render()
    assert "aivos_sync_sent_total 300" in metrics


async def test_resend_after_mark_sent_is_lost_is_absorbed(rig_factory: Any) -> None:
    """A crash after the hub acked but before mark_sent committed resends the batch:
    JetStream dedups it (same Nats-Msg-Id) and the cloud store would absorb it anyway."""
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy(), batch=50)
    await rig.start_ingest()
    ids = await rig.audit(50)
    await eventually(lambda: len(rig.cloud_ids()) == 50, what="first copy")
    # simulate the lost mark_sent: make the records pending again and drain again
    await rig.store.transact(lambda c: c.execute("UPDATE outbox SET sent_at = NULL"))
    await rig.store.transact(
        lambda c: c.execute("UPDATE outbox_meta SET pending = (SELECT count(*) FROM outbox)")
    )
    assert await rig.drainer.wait_idle(30)
    assert rig.drainer.stats.sent == 100  # both sends acked by the hub ...
    assert rig.cloud_ids() == ids  # ... but stored once
    assert rig.drainer.atomic  # the duplicate batch fell back to per-record publishing once


async def test_stream_without_atomic_batches_falls_back_to_per_record(rig_factory: Any) -> None:
    rig: SyncRig = await rig_factory(atomic=False)
    await rig.start_edge(policy(), batch=40)
    await rig.start_ingest()
    ids = await rig.audit(100)
    await eventually(lambda: len(rig.cloud_ids()) == 100, what="records via per-record publish")
    assert rig.cloud_ids() == ids
    assert not rig.drainer.atomic


async def test_ingest_terminates_undecodable_messages(rig_factory: Any) -> None:
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy())
    await rig.start_ingest()
    nc = await nats.connect(rig.hub.url)
    try:
        js = nc.jetstream()
        await js.publish(f"aivos.sync.{SITE}.audit", b"not json", headers={"Nats-Msg-Id": "bad"})
        await js.publish(f"aivos.sync.{SITE}.audit", b'{"id": 1}', headers={"Nats-Msg-Id": "b2"})
    finally:
        await nc.close()
    ids = await rig.audit(3)
    await eventually(lambda: len(rig.cloud_ids()) == 3, what="good records after bad ones")
    assert rig.cloud_ids() == ids
    assert rig.ingest is not None and rig.ingest.stats.rejected == 2
