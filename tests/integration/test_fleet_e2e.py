"""Cloud fleet tier + real edge agents (the edge fleet client of edge/fleet): the cloud's
`publish_bundle` signs and uploads, a staged rollout moves one real site, then the other;
a bundle whose canary fails halts the rollout at the canary and the old bundle stays live.
Heartbeats from the real agents drive the registry."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aivos.cloud.fleet.publish import publish_bundle
from aivos.cloud.fleet.rollout import start_rollout
from aivos.cloud.fleet.service import FleetService
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.natsconf.server import NatsServer
from tests.fixtures.wait import eventually
from tests.integration.test_edge_fleet_rig import make_variant, running_site, signing_key

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def fleet(tmp_path: Path, nats_hub: NatsServer) -> AsyncIterator[FleetService]:
    service = FleetService(tmp_path / "cloud", nats_hub.url, tick_s=0.1, flush_interval_s=0.05)
    await service.start()
    yield service
    await service.stop()


async def test_rollout_to_real_sites_and_halt_on_failing_canary(
    tmp_path: Path, small_bundle: Path, nats_hub: NatsServer, fleet: FleetService
) -> None:
    key, pub = signing_key(tmp_path)
    tag = uuid.uuid4().hex[:6]
    good, bad = f"e2e-good-{tag}", f"e2e-bad-{tag}"
    good_dir = make_variant(small_bundle, tmp_path / "good", good, None)
    bad_dir = make_variant(small_bundle, tmp_path / "bad", bad, None, wrong_golden=True)
    assert fleet.nc is not None
    js = fleet.nc.jetstream(domain="hub")
    await publish_bundle(js, good_dir, key)
    await publish_bundle(js, bad_dir, key)
    v1 = load_bundle_manifest(small_bundle).bundle_version
    sites = [f"e2e-a-{tag}", f"e2e-b-{tag}"]

    async with (
        running_site(tmp_path / "a", small_bundle, sites[0], nats_hub.url, trusted=pub) as (a, _),
        running_site(tmp_path / "b", small_bundle, sites[1], nats_hub.url, trusted=pub) as (b, _),
    ):
        reg = fleet.registry
        await eventually(
            lambda: {r.site_id for r in reg.sites() if r.state == "online"} >= set(sites)
        )
        assert reg.site(sites[0]).bundle_version == v1

        # a failing canary: wave 1 (site a) rejects it, the rollout halts, b never gets it
        rid = start_rollout(
            reg, bundle_version=bad, sites=sites, canary_percent=50, actor="e2e", soak_s=0.5
        )
        await eventually(lambda: reg.rollout(rid).state == "halted", timeout=120)
        rollout = reg.rollout(rid)
        assert "canary_failed" in rollout.message
        assert a.model.version == v1 and b.model.version == v1
        assert [s.status for s in rollout.sites] == ["failed", "pending"]

        # a good bundle: canary first, then the rest; the time to serve is reported
        started = time.monotonic()
        rid = start_rollout(
            reg, bundle_version=good, sites=sites, canary_percent=50, actor="e2e", soak_s=0.5
        )
        await eventually(lambda: a.model.version == good, timeout=120)
        first_site_s = time.monotonic() - started
        await eventually(lambda: reg.rollout(rid).state == "completed", timeout=120)
        assert b.model.version == good
        assert reg.site(sites[0]).bundle_version == good
        assert reg.site(sites[1]).bundle_version == good
        print(f"rollout start -> first site serving {good}: {first_site_s:.2f} s")
