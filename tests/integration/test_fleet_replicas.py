"""Two fleet replicas (`FleetService`) on one PostgreSQL registry and one hub: heartbeats
and config reports arrive in the queue group ``aivos-fleet``, so each is written once (no
doubled history or report rows), and both replicas take a share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import nats
import pytest

from aivos.cloud.fleet.registry import PostgresRegistry
from aivos.cloud.fleet.service import FleetService
from aivos.cloud.fleet.sim import SimSite
from aivos.shared.fleet import ConfigReport, config_report_subject
from aivos.shared.natsconf import NatsServer
from tests.fixtures.wait import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

SITES = [f"rep-{i}" for i in range(5)]
BEATS = 60  # per site; below the registry's history cap
REPORTS = 4  # config reports per site


async def test_two_replicas_write_each_heartbeat_and_report_once(
    tmp_path: Path, nats_hub_factory: Callable[[], NatsServer], postgres_url: str
) -> None:
    hub = nats_hub_factory()
    replicas = [
        FleetService(tmp_path / name, hub.url, db=postgres_url, tick_s=0.2, flush_interval_s=0.05)
        for name in ("a", "b")
    ]
    for svc in replicas:
        await svc.start()
    nc = await nats.connect(hub.url)
    registry = PostgresRegistry.open(postgres_url)
    try:
        for site_id in SITES:
            sim = SimSite(nc, site_id, interval_s=1.0)
            for version in range(1, REPORTS + 1):
                report = ConfigReport(site=site_id, version=version, status="applied")
                await nc.publish(config_report_subject(site_id), msgspec.json.encode(report))
            for _ in range(BEATS):
                await sim.beat()
        await nc.flush()
        total = len(SITES) * BEATS

        async def settled() -> bool:
            for svc in replicas:
                assert svc.nc is not None
                await svc.nc.flush()  # every message the hub sent it has arrived
            received = sum(svc.ingest.counters.received for svc in replicas)
            return received >= total and all(svc.ingest.pending() == 0 for svc in replicas)

        await eventually(settled, timeout=60, what="both replicas drained")
        shares = [svc.ingest.counters.written for svc in replicas]
        assert sum(shares) == total
        assert all(share > 0 for share in shares), f"one replica took all: {shares}"
        assert sum(svc.ingest.counters.received for svc in replicas) == total
        for site_id in SITES:
            assert len(registry.history(site_id, limit=10 * BEATS)) == BEATS
            versions = sorted(r.version for r in registry.config_reports(site_id, limit=100))
            assert versions == list(range(1, REPORTS + 1))
        assert {s.site_id for s in registry.sites()} == set(SITES)
    finally:
        registry.close()
        await nc.close()
        for svc in replicas:
            await svc.stop()
