"""Cloud replicas on real engines (a 3-node hub cluster or a hub, a real PostgreSQL):

* two `aivos cloud ingest` processes share the durable consumer; one is SIGKILLed mid-stream;
* PostgreSQL restarts while the ingest writes;
* two fleet replicas on one database: the one holding the rollout lease is SIGKILLed
  mid-rollout, the other takes the lease over and finishes the rollout.

Each ends with every record stored once (none lost, none duplicated) or the rollout done.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from aivos.cloud.fleet.lease import LEASE_BUCKET, ROLLOUT_LEASE, Lease
from aivos.cloud.fleet.registry import PostgresRegistry
from aivos.cloud.fleet.rollout import start_rollout
from aivos.cloud.fleet.sim import SimSite
from aivos.cloud.ingest import CloudStore, SyncIngest
from aivos.shared.natsconf import NatsServer
from aivos.shared.subjects import HUB_DOMAIN, SYNC_STREAM
from aivos.shared.syncwire import SyncEnvelope, encode_envelope, ensure_sync_stream, msg_id
from tests.fixtures.wait import eventually

if TYPE_CHECKING:  # the module is loaded as a pytest plugin (assertion rewriting)
    from tests.fixtures.postgres import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


def _env(site: str, n: int) -> SyncEnvelope:
    return SyncEnvelope(
        id=f"audit-{n:06d}",
        site=site,
        data_class="audit",
        kind="decision",
        seq=n,
        created_at="2026-01-01T00:00:00Z",
        payload={"n": n},
    )


# How long a publish waits for its ack: the R3 stream was just created on a cluster that was
# just started, and a loaded 2-core box can take longer than nats-py's 5 s default to
# replicate a batch of 200 (a liveness bound, not a speed claim)
_ACK_WAIT_S = 60.0


async def _publish(js: JetStreamContext, site: str, numbers: range) -> None:
    """Publish records as a site's drainer does (``Nats-Msg-Id``), acks gathered per 200."""
    numbers_list = list(numbers)
    for i in range(0, len(numbers_list), 200):
        await asyncio.gather(
            *(
                js.publish(
                    f"aivos.sync.{site}.audit",
                    encode_envelope(_env(site, n)),
                    timeout=_ACK_WAIT_S,
                    headers={"Nats-Msg-Id": msg_id(site, f"audit-{n:06d}")},
                )
                for n in numbers_list[i : i + 200]
            )
        )


class _Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=(self.tmp / f"{name}.out").open("wb"),
            stderr=(self.tmp / f"{name}.log").open("wb"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[_Procs]:
    started = _Procs(tmp_path)
    yield started
    started.stop_all()


async def test_two_ingest_replicas_one_killed_store_each_record_once(
    tmp_path: Path,
    nats_cluster_factory: Callable[..., list[NatsServer]],
    postgres_url: str,
    procs: _Procs,
) -> None:
    nodes = nats_cluster_factory(3)
    urls = [n.url for n in nodes]
    nc = await nats.connect(urls)
    js = nc.jetstream()
    info = await ensure_sync_stream(js, replicas=3)
    assert info.config.num_replicas == 3
    ingest = [
        "-m",
        "aivos",
        "cloud",
        "ingest",
        "--nats",
        ",".join(urls),
        "--db",
        postgres_url,
        "--js-replicas",
        "3",
        "--batch",
        "100",
        "--ack-wait",
        "2",
    ]
    one = procs.start("ingest-1", ingest)
    procs.start("ingest-2", ingest)

    async def both_pulling() -> bool:
        consumer = await js.consumer_info(SYNC_STREAM, "aivos-ingest")
        return consumer.num_waiting >= 2

    # a JetStream API request can time out while the 3-node cluster is busy: ask again
    await eventually(
        both_pulling,
        timeout=60,
        what="two replicas pulling",
        ignore=(NotFoundError, nats.errors.TimeoutError),
    )
    store = CloudStore.open(db=postgres_url)
    try:
        await _publish(js, "br1", range(3000))
        await eventually(lambda: store.total() >= 300, timeout=60, what="ingest under way")
        one.send_signal(signal.SIGKILL)
        one.wait()
        await _publish(js, "br1", range(3000, 6000))
        await eventually(lambda: store.total() >= 6000, timeout=120, what="all 6000 stored")
        assert [r.seq for r in store.records(site="br1")] == list(range(6000))
        consumer = await js.consumer_info(SYNC_STREAM, "aivos-ingest")
        assert consumer.num_pending == 0
    finally:
        store.close()
        await nc.close()


async def test_postgres_restart_during_ingest_loses_nothing(
    nats_hub_factory: Callable[[], NatsServer],
    postgres_server: PostgresServer,
) -> None:
    hub = nats_hub_factory()
    nc = await nats.connect(hub.url)
    js = nc.jetstream()
    await ensure_sync_stream(js)
    store = CloudStore.open(db=postgres_server.create_db())
    ingest = SyncIngest(store, batch=100, ack_wait_s=2)
    await ingest.start(nc)
    try:
        await _publish(js, "br2", range(2000))
        await eventually(lambda: store.total() >= 200, timeout=60, what="ingest under way")
        publishing = asyncio.create_task(_publish(js, "br2", range(2000, 4000)))
        await asyncio.to_thread(postgres_server.restart)
        await publishing
        await eventually(lambda: store.total() >= 4000, timeout=120, what="all 4000 stored")
        assert [r.seq for r in store.records(site="br2")] == list(range(4000))
    finally:
        await ingest.stop()
        store.close()
        await nc.close()


_REPLICA = """
import asyncio, signal, sys
from aivos.cloud.fleet.service import FleetService

async def main():
    data_dir, nats_url, db = sys.argv[1:4]
    svc = FleetService(data_dir, nats_url, db=db, tick_s=0.2, flush_interval_s=0.05,
                       lease_ttl_s=2.0)
    await svc.start()
    print("holder", svc.lease.holder, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await svc.stop()

asyncio.run(main())
"""


async def _lease_holder(js: JetStreamContext) -> str | None:
    kv = await js.key_value(LEASE_BUCKET)
    try:
        entry = await kv.get(ROLLOUT_LEASE)
    except Exception:
        return None
    return entry.value.decode() if entry.value else None


async def test_rollout_lease_moves_when_its_holder_is_killed(
    tmp_path: Path,
    nats_hub_factory: Callable[[], NatsServer],
    postgres_url: str,
    procs: _Procs,
) -> None:
    hub = nats_hub_factory()
    replicas = {}
    for name in ("a", "b"):
        proc = procs.start(
            f"fleet-{name}", ["-c", _REPLICA, str(tmp_path / name), hub.url, postgres_url]
        )
        out = tmp_path / f"fleet-{name}.out"
        line = await eventually(
            lambda out=out: out.exists() and out.read_text().strip(),
            timeout=60,
            what=f"replica {name} up",
        )
        replicas[line.split()[1]] = proc
    nc = await nats.connect(hub.url)
    js = nc.jetstream(domain=HUB_DOMAIN)
    sites = [SimSite(nc, f"lease-{i}", interval_s=0.2) for i in range(4)]
    registry = PostgresRegistry.open(postgres_url)
    try:
        for site in sites:
            await site.start()
        ids = {s.site_id for s in sites}
        await eventually(
            lambda: ids <= {r.site_id for r in registry.sites() if r.state == "online"},
            what="sites online",
        )
        holder = await eventually(lambda: _lease_holder(js), what="a lease holder")
        assert holder in replicas
        rid = start_rollout(
            registry,
            bundle_version="v2",
            sites=sorted(ids),
            canary_percent=25,
            actor="alice",
            soak_s=3.0,
        )
        # mid-rollout: the canary is live, wave 2 has not started
        await eventually(
            lambda: any(s.status == "healthy" for s in registry.rollout(rid).sites),
            what="a healthy canary",
        )
        assert registry.rollout(rid).current_wave == 1
        replicas[holder].send_signal(signal.SIGKILL)
        replicas[holder].wait()
        survivor = next(h for h in replicas if h != holder)

        async def taken_over() -> bool:
            return await _lease_holder(js) == survivor

        await eventually(taken_over, timeout=30, what="the lease taken over by the survivor")
        await eventually(
            lambda: registry.rollout(rid).state == "completed", timeout=60, what="completed"
        )
        assert all(s.bundle_version == "v2" for s in sites)

        # the controller marks the rollout completed, then records the action (its own
        # transaction): wait for the row, then check it was written once
        def completes() -> list[object]:
            return [a for a in registry.actions(target=rid) if a.action == "rollout.complete"]

        await eventually(completes, what="the rollout.complete action recorded")
        assert len(completes()) == 1
    finally:
        for site in sites:
            await site.stop()
        registry.close()
        await nc.close()


async def test_lease_is_exclusive_and_handed_over_on_release(
    nats_hub_factory: Callable[[], NatsServer],
) -> None:
    hub = nats_hub_factory()
    nc = await nats.connect(hub.url)
    js = nc.jetstream(domain=HUB_DOMAIN)
    first = await Lease(js, "t", holder="one", ttl_s=2.0).start()
    second = await Lease(js, "t", holder="two", ttl_s=2.0).start()
    try:
        assert first.held and not second.held
        assert await second.current_holder() == "one"
        await first.stop()  # released at once: no waiting for the TTL
        await asyncio.wait_for(second.wait_held(), 10)
        assert await first.current_holder() == "two" and not first.held
        assert second.acquired == 1
    finally:
        await second.stop()
        await nc.close()
