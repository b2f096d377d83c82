"""Heartbeats over a real nats-server -> registry -> offline detection; remote config in KV
with applied/rejected reports recorded; the console's /api/sites shows the same states."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from aivos.cloud.console.app import ConsoleSettings, create_app
from aivos.cloud.fleet.service import FleetService
from aivos.cloud.fleet.sim import SimSite
from aivos.cloud.fleet.tokens import create_operator_token
from aivos.shared.fleet import encode
from aivos.shared.natsconf.connect import connect_nats
from aivos.shared.natsconf.server import NatsServer
from aivos.shared.subjects import CONFIG_BUCKET, HUB_DOMAIN
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def fleet(tmp_path: Path, nats_hub: NatsServer) -> AsyncIterator[FleetService]:
    service = FleetService(tmp_path / "cloud", nats_hub.url, tick_s=0.1, flush_interval_s=0.05)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def site_nc(nats_hub: NatsServer) -> AsyncIterator[Any]:
    nc = await connect_nats(nats_hub.url, name="sim-sites")
    yield nc
    await nc.close()


async def test_heartbeats_register_sites_and_silence_turns_them_offline(
    fleet: FleetService, site_nc: Any, tmp_path: Path
) -> None:
    reg = fleet.registry
    assert reg.register_site("reg-pre") is True  # pre-registered, never seen
    token = create_operator_token(fleet.data_dir)
    headers = {"Authorization": f"Bearer {token}"}
    app = create_app(ConsoleSettings(data_dir=fleet.data_dir, connect=False), fleet=fleet)
    async with AsyncTestClient(app) as client:

        async def api_site(site_id: str) -> dict[str, Any] | None:
            resp = await client.get("/api/sites", headers=headers)
            assert resp.status_code == 200
            return next((s for s in resp.json() if s["site_id"] == site_id), None)

        site = SimSite(site_nc, "reg-live", interval_s=0.3)
        await site.start(watch_config=False)

        async def online() -> dict[str, Any] | None:
            row = await api_site("reg-live")
            return row if row and row["state"] == "online" else None

        row = await eventually(online)
        assert row["bundle_version"] == "v1" and row["health"] == "healthy"
        assert row["registered_by"] == "auto"
        never = await api_site("reg-pre")
        assert never is not None
        assert never["state"] == "offline" and never["last_seen_age_s"] is None
        await eventually(lambda: len(reg.history("reg-live")) >= 3)

        await site.stop()  # the site goes silent

        async def offline() -> dict[str, Any] | None:
            row = await api_site("reg-live")
            return row if row and row["state"] == "offline" else None

        row = await eventually(offline)
        assert row["last_seen_age_s"] > 3 * 0.3
        assert row["health"] == "stale"  # never healthy from stale data
        assert reg.site("reg-live").state == "offline"

    # a heartbeat on another site's subject (a site speaking for another) is ignored
    invalid_before = fleet.ingest.counters.invalid
    await site_nc.publish("aivos.hb.reg-other", encode(site.heartbeat()))
    await eventually(lambda: fleet.ingest.counters.invalid > invalid_before)
    assert all(s.site_id != "reg-other" for s in reg.sites())


async def test_config_push_is_stored_in_kv_and_reports_are_recorded(
    fleet: FleetService, site_nc: Any
) -> None:
    assert fleet.config is not None
    site = SimSite(site_nc, "cfg-site", interval_s=0.2)
    await site.start()
    await eventually(lambda: any(s.site_id == "cfg-site" for s in fleet.registry.sites()))

    good = {"thresholds": {"billing": 0.7}, "router": {"intents": {"billing": "escalate"}}}
    v1 = await fleet.config.put("cfg-site", good)
    fleet.registry.set_desired(["cfg-site"], config=v1)
    kv = await site_nc.jetstream(domain=HUB_DOMAIN).key_value(CONFIG_BUCKET)
    stored = json.loads((await kv.get("cfg-site")).value)
    assert stored == {**good, "version": v1}

    await eventually(lambda: fleet.registry.site("cfg-site").config_applied == v1)
    assert site.config is not None and site.config.thresholds == {"billing": 0.7}
    reports = fleet.registry.config_reports("cfg-site")
    assert reports[0].status == "applied" and reports[0].version == v1

    # an invalid config is rejected by the site, reported, and not applied
    v2 = await fleet.config.put("cfg-site", {"thresholds": {"billing": 5.0}})
    assert v2 > v1
    await eventually(lambda: fleet.registry.config_reports("cfg-site")[0].status == "rejected")
    row = fleet.registry.site("cfg-site")
    assert row.config_applied == v1
    assert row.config_error is not None and "thresholds.billing" in row.config_error
    assert site.config.thresholds == {"billing": 0.7}  # the last good config stays
    effective = await fleet.config.effective("cfg-site")
    assert effective.version == v2
    await site.stop()
