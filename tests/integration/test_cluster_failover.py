"""A 3-node hub cluster on loopback: the node that leads ``AIVOS_SYNC`` (R3), holds the site
leaf's link and the worker's connection is SIGKILLed during an outbox catch-up. The leaf
moves to another node, the drain and generation carry on, and every record the hub
acknowledged is in the stream once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from aivos.cloud.ingest import CloudStore, SyncIngest
from aivos.cloud.worker.service import GenerationWorker
from aivos.edge.store import AuditRecord, Store
from aivos.edge.uplink.generation import generate
from aivos.edge.uplink.sync import OutboxDrainer, ensure_sync_stream
from aivos.shared.errors import DeadlineExceeded, LinkDown, NoResponders
from aivos.shared.messages import GenerateRequest
from aivos.shared.natsconf import NatsServer
from aivos.shared.residency import ExitGate, ResidencyPolicy
from aivos.shared.subjects import SYNC_STREAM
from tests.fixtures.nats import (
    ScriptedBackend,
    completes_once_quorum_returns,
    move_stream_leader,
    start_leaf,
    wait_for_responders,
)
from tests.fixtures.wait import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

SITE = "branch1"
RECORDS = 1500


def _policy() -> ResidencyPolicy:
    return ResidencyPolicy.from_mapping(
        {"region": "eu", "classes": {"audit": "allow", "memory": "allow", "telemetry": "allow"}}
    )


def _leaf_node(nodes: list[NatsServer]) -> NatsServer:
    held = [n for n in nodes if n.leafnode_count() > 0]
    assert len(held) == 1, [n.name for n in held]
    return held[0]


async def test_hub_node_kill_during_catch_up_loses_nothing(
    tmp_path: Path, nats_cluster_factory: Callable[..., list[NatsServer]]
) -> None:
    nodes = nats_cluster_factory(3)
    urls = [n.url for n in nodes]
    leaf_urls = [n.leaf_url for n in nodes]
    leaf = start_leaf(tmp_path / "leaf", SITE, leaf_urls[0], hub_leaf_urls=tuple(leaf_urls[1:]))
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(leaf.stop)
        victim = _leaf_node(nodes)
        admin = await nats.connect(urls)
        info = await ensure_sync_stream(admin.jetstream(), replicas=3)
        assert info.config.num_replicas == 3
        await admin.close()
        await move_stream_leader(urls, SYNC_STREAM, victim.conf.server_name)

        # the worker's connection starts on the victim too (its pool lists the others)
        worker_nc = await nats.connect(
            [victim.url, *(u for u in urls if u != victim.url)],
            dont_randomize=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
        )
        stack.push_async_callback(worker_nc.close)
        worker = GenerationWorker(ScriptedBackend(["ok"]), name="w1")
        await worker.start(worker_nc)
        stack.push_async_callback(worker.drain, 2)
        edge_nc = await nats.connect(leaf.url, max_reconnect_attempts=-1)
        stack.push_async_callback(edge_nc.close)
        await wait_for_responders(edge_nc, SITE)

        store = Store.open(tmp_path / "edge")
        stack.callback(store.close)
        drainer = OutboxDrainer(store, ExitGate(_policy()), SITE, batch=50)
        drain = asyncio.create_task(drainer.run(edge_nc))
        stack.push_async_callback(asyncio.wait_for, drain, 10)
        stack.push_async_callback(drainer.stop)
        ids: list[str] = []
        for n in range(RECORDS):
            row = await store.append_audit(
                AuditRecord(id=f"req-{n:05d}", intent="card_declined", decision="local")
            )
            ids.append(f"audit-{row.id}")
        drainer.wake()
        await eventually(
            lambda: drainer.stats.sent >= 200, what="the catch-up under way", interval=0.01
        )
        sent_before = drainer.stats.sent
        victim.kill()
        assert sent_before < RECORDS, "the catch-up finished before the kill"

        # generation goes on through a surviving node (requests sent while the worker and
        # the leaf move over may time out: that is the failover window)
        async def answered() -> str:
            request = GenerateRequest(request_id="r1", site=SITE, prompt="after the kill")
            return (await generate(edge_nc, request, timeout_s=2)).text

        failover = (NoRespondersError, NatsTimeoutError, NoResponders, LinkDown, DeadlineExceeded)
        assert await eventually(answered, timeout=120, what="generation", ignore=failover) == "ok"
        # ... and the drain finishes
        await eventually(lambda: store.outbox_depth() == 0, timeout=60, what="outbox drained")

        survivors = [u for u in urls if u != victim.url]
        cloud = CloudStore.open(tmp_path / "cloud")
        stack.callback(cloud.close)
        cloud_nc = await nats.connect(survivors)
        stack.push_async_callback(cloud_nc.close)
        ingest = SyncIngest(cloud, create_stream=False)
        await ingest.start(cloud_nc)
        stack.push_async_callback(ingest.stop)
        await eventually(lambda: cloud.total() >= RECORDS, timeout=60, what="all ingested")
        stream = await cloud_nc.jetstream().stream_info(SYNC_STREAM)
        assert [r.id for r in cloud.records(site=SITE)] == ids  # none lost, site order
        assert stream.state.messages == RECORDS  # none duplicated in the stream
        assert ingest.stats.duplicates == 0


async def test_sync_stream_is_created_once_the_cluster_regains_quorum(
    nats_cluster_factory: Callable[..., list[NatsServer]], caplog: pytest.LogCaptureFixture
) -> None:
    """Two of three hub nodes are down: JetStream cannot answer, and creating the R3 sync
    stream waits (retrying) instead of failing; when the nodes are back it is created."""
    nodes = nats_cluster_factory(3)
    survivor, *downed = nodes
    for node in downed:
        node.kill()
    nc = await nats.connect(survivor.url)
    try:
        info = await completes_once_quorum_returns(
            downed,
            ensure_sync_stream(nc.jetstream(), replicas=3, ready_timeout_s=300),
            caplog,
            logger="aivos.shared.syncwire",
            retry_text="JetStream not ready",
        )
        assert info.config.num_replicas == 3
    finally:
        await nc.close()
