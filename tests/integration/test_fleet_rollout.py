"""Staged rollouts over a real nats-server with simulated sites answering like the edge:
a canary failure or degradation halts the rollout before wave 2; a healthy canary lets it
complete; rollback restores every touched site's previous bundle."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aivos.cloud.fleet.rollout import (
    abort_rollout,
    pause_rollout,
    resume_rollout,
    rollback_rollout,
    start_rollout,
)
from aivos.cloud.fleet.service import FleetService
from aivos.cloud.fleet.sim import SimSite
from aivos.shared.errors import ConfigError
from aivos.shared.natsconf.connect import connect_nats
from aivos.shared.natsconf.server import NatsServer
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def fleet(tmp_path: Path, nats_hub: NatsServer) -> AsyncIterator[FleetService]:
    service = FleetService(tmp_path / "cloud", nats_hub.url, tick_s=0.1, flush_interval_s=0.05)
    await service.start()
    yield service
    await service.stop()


async def _sites(
    nats_hub: NatsServer, prefix: str, n: int, bad: frozenset[str] = frozenset()
) -> tuple[Any, list[SimSite]]:
    nc = await connect_nats(nats_hub.url, name=f"sim-{prefix}")
    sites = [SimSite(nc, f"{prefix}-{i}", interval_s=0.2, bad_bundles=bad) for i in range(n)]
    for s in sites:
        await s.start()
    return nc, sites


async def _stop(nc: Any, sites: list[SimSite]) -> None:
    for s in sites:
        await s.stop()
    await nc.close()


async def _registered(fleet: FleetService, sites: list[SimSite]) -> None:
    ids = {s.site_id for s in sites}
    await eventually(
        lambda: ids <= {r.site_id for r in fleet.registry.sites() if r.state == "online"}
    )


async def test_failing_canary_halts_before_wave_two(
    fleet: FleetService, nats_hub: NatsServer
) -> None:
    nc, sites = await _sites(nats_hub, "halt", 4, bad=frozenset({"v2-bad"}))
    try:
        await _registered(fleet, sites)
        rid = start_rollout(
            fleet.registry,
            bundle_version="v2-bad",
            sites=[s.site_id for s in sites],
            canary_percent=25,
            actor="alice",
            soak_s=0.3,
        )
        rollout = fleet.registry.rollout(rid)
        assert [w["total"] for w in rollout.wave_progress()] == [1, 3]
        halted = await eventually(lambda: fleet.registry.rollout(rid).state == "halted")
        assert halted
        rollout = fleet.registry.rollout(rid)
        canary = next(s for s in rollout.sites if s.wave == 1)
        assert canary.status == "failed" and "canary_failed" in canary.message
        assert all(s.status == "pending" for s in rollout.sites if s.wave == 2)
        # wave 2 never received the bundle: their desired config has no bundle_version
        assert fleet.config is not None
        for s in sites[1:]:
            assert "bundle_version" not in await fleet.config.get_raw(s.site_id)
            assert s.bundle_version == "v1"
        assert sites[0].bundle_version == "v1"  # the canary kept its old bundle
        actions = [a.action for a in fleet.registry.actions(target=rid)]
        assert "rollout.start" in actions and "rollout.halt" in actions
        with pytest.raises(ConfigError):
            pause_rollout(fleet.registry, rid, "alice")  # halted is not running
        assert abort_rollout(fleet.registry, rid, "alice").state == "aborted"
    finally:
        await _stop(nc, sites)


async def test_degraded_canary_halts_and_rollback_restores(
    fleet: FleetService, nats_hub: NatsServer
) -> None:
    nc, sites = await _sites(nats_hub, "deg", 3)
    try:
        await _registered(fleet, sites)
        rid = start_rollout(
            fleet.registry,
            bundle_version="v3",
            sites=[s.site_id for s in sites],
            canary_percent=34,
            actor="bob",
            soak_s=3600,  # the canary must stay healthy for an hour: it will not
            guards={"max_error_rate": 0.1},
        )
        canary_ids = {s.site_id for s in fleet.registry.rollout(rid).sites if s.wave == 1}
        assert len(canary_ids) == 2
        canaries = [s for s in sites if s.site_id in canary_ids]
        await eventually(
            lambda: all(
                s.status == "healthy" for s in fleet.registry.rollout(rid).sites if s.wave == 1
            )
        )
        assert all(s.bundle_version == "v3" for s in canaries)
        canaries[0].degrade(0.4)  # live error rate above the 0.1 guard
        await eventually(lambda: fleet.registry.rollout(rid).state == "halted")
        rollout = fleet.registry.rollout(rid)
        assert "error rate" in rollout.message
        assert all(s.status == "pending" for s in rollout.sites if s.wave == 2)

        assert fleet.config is not None
        rolled = await rollback_rollout(fleet.registry, fleet.config, rid, "bob")
        assert rolled.state == "rolled_back"
        await eventually(lambda: all(s.bundle_version == "v1" for s in canaries))
        for s in canaries:
            assert (await fleet.config.get_raw(s.site_id))["bundle_version"] == "v1"
        assert any(a.action == "rollout.rollback" for a in fleet.registry.actions(target=rid))
    finally:
        await _stop(nc, sites)


async def test_healthy_canary_rolls_on_to_everyone(
    fleet: FleetService, nats_hub: NatsServer
) -> None:
    nc, sites = await _sites(nats_hub, "ok", 4)
    try:
        await _registered(fleet, sites)
        rid = start_rollout(
            fleet.registry,
            bundle_version="v4",
            sites=None,  # every registered site
            canary_percent=25,
            actor="carol",
            soak_s=0.3,
        )
        # pause/resume are honoured while running
        assert pause_rollout(fleet.registry, rid, "carol").state == "paused"
        assert resume_rollout(fleet.registry, rid, "carol").state == "running"
        await eventually(lambda: fleet.registry.rollout(rid).state == "completed", timeout=30)
        assert all(s.bundle_version == "v4" for s in sites)
        rollout = fleet.registry.rollout(rid)
        assert all(s.status == "healthy" for s in rollout.sites)
        assert [w["total"] for w in rollout.wave_progress()] == [1, 3]
        for s in sites:
            row = fleet.registry.site(s.site_id)
            assert row.bundle_version == "v4" and row.bundle_desired == "v4"
            assert [e.status for e in fleet.registry.bundle_events(s.site_id)][0] == "ok"
        assert fleet.config is not None
        raw = await fleet.config.get_raw(sites[0].site_id)
        assert json.loads(json.dumps(raw))["bundle_version"] == "v4"
    finally:
        await _stop(nc, sites)
