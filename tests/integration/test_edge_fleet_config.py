"""Heartbeats and remote config with a real hub nats-server and a real edge agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aivos.edge.api.schemas import InferRequest
from aivos.edge.fleet import FleetOptions, GuardOptions
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.fleet import (
    DEFAULTS_KEY,
    config_report_subject,
    decode_config_report,
    decode_heartbeat,
)
from aivos.shared.natsconf import NatsServer
from aivos.shared.subjects import heartbeat_subject
from tests.fixtures.wait import eventually
from tests.integration.test_edge_fleet_rig import Cloud, new_site, running_site

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


def _golden(bundle: Path) -> tuple[str, str]:
    g = load_bundle_manifest(bundle).golden[0]
    return g.text, g.intent


async def test_heartbeat_reaches_the_hub_with_site_health(
    tmp_path: Path, small_bundle: Path, nats_hub: NatsServer
) -> None:
    site = new_site()
    async with Cloud.connect(nats_hub.url) as cloud:
        sub = await cloud.nc.subscribe(heartbeat_subject(site))
        async with running_site(tmp_path / "edge", small_bundle, site, nats_hub.url) as (
            agent,
            client,
        ):
            text, _ = _golden(small_bundle)
            for _ in range(3):
                await agent.infer(InferRequest(text=text))
            hb = None
            for _ in range(50):  # the first beats may predate the requests
                hb = decode_heartbeat((await sub.next_msg(timeout=10)).data)
                if hb.decisions.local + hb.decisions.escalate + hb.decisions.refuse >= 3:
                    break
            assert hb is not None
            assert hb.site_id == site
            assert hb.bundle_version == agent.model.version
            assert hb.provider == "CPUExecutionProvider"
            assert hb.link_state == "up"
            assert hb.agent_version
            assert hb.decisions.local + hb.decisions.escalate + hb.decisions.refuse == 3
            assert hb.request_rate > 0 and hb.p99_ms >= hb.p50_ms > 0
            assert hb.cpu_percent >= 0 and 0 < hb.mem_percent <= 100 and hb.disk_percent > 0
            assert hb.outbox_depth == 0 and hb.job_backlog == 0
            assert hb.interval_s == pytest.approx(0.2)
            assert client.status.heartbeats_sent >= 1


async def test_heartbeats_denied_by_residency_are_not_sent(
    tmp_path: Path, small_bundle: Path, nats_hub: NatsServer
) -> None:
    site = new_site()
    async with Cloud.connect(nats_hub.url) as cloud:
        sub = await cloud.nc.subscribe(heartbeat_subject(site))
        policy = {"region": "default", "classes": {"telemetry": "local-only"}}
        async with running_site(
            tmp_path / "edge", small_bundle, site, nats_hub.url, residency=policy
        ) as (_, client):
            await eventually(lambda: client.status.heartbeats_denied >= 3, what="denials")
            assert client.status.heartbeats_sent == 0
            assert sub.pending_msgs == 0
            await cloud.nc.flush()
            assert sub.pending_msgs == 0


async def test_config_push_applies_without_restart_and_invalid_is_rejected(
    tmp_path: Path, small_bundle: Path, nats_hub: NatsServer
) -> None:
    site = new_site()
    text, intent = _golden(small_bundle)
    async with Cloud.connect(nats_hub.url) as cloud:
        reports = await cloud.nc.subscribe(config_report_subject(site))
        hbs = await cloud.nc.subscribe(heartbeat_subject(site))
        async with running_site(tmp_path / "edge", small_bundle, site, nats_hub.url) as (
            agent,
            client,
        ):
            before = await agent.infer(InferRequest(text=text))
            assert before.intent == intent and before.decision == "local"

            # fleet default refuses the intent; the site override raises the heartbeat period
            await cloud.put_config(
                DEFAULTS_KEY,
                {"version": 1, "router": {"intents": {intent: {"decision": "refuse"}}}},
            )
            await cloud.put_config(site, {"version": 2, "heartbeat_interval_s": 0.3})
            await eventually(lambda: client.status.config_version_applied == 2, what="applied")
            report = decode_config_report((await reports.next_msg(timeout=10)).data)
            while report.version < 2:
                report = decode_config_report((await reports.next_msg(timeout=10)).data)
            assert (report.status, report.error) == ("applied", None)
            after = await agent.infer(InferRequest(text=text))
            assert after.decision == "refuse"
            assert client.heartbeats.interval_s == pytest.approx(0.3)

            # an unknown intent is invalid: rejected, reported, last good kept
            await cloud.put_config(
                site,
                {"version": 3, "router": {"intents": {"no_such_intent": {"decision": "local"}}}},
            )
            report = decode_config_report((await reports.next_msg(timeout=10)).data)
            assert report.version == 3 and report.status == "rejected"
            assert report.error and "no_such_intent" in report.error
            assert client.status.config_version_applied == 2
            assert (await agent.infer(InferRequest(text=text))).decision == "refuse"
            while True:
                hb = decode_heartbeat((await hbs.next_msg(timeout=10)).data)
                if hb.config_error:
                    break
            assert "no_such_intent" in hb.config_error and hb.config_version_applied == 2

            # not JSON at all: rejected too
            await cloud.put_raw(site, b"{not json")
            report = decode_config_report((await reports.next_msg(timeout=10)).data)
            assert report.status == "rejected"

            # a valid config again clears the error; dropping the router override reverts
            await cloud.put_config(DEFAULTS_KEY, {"version": 5})
            await cloud.put_config(site, {"version": 6, "thresholds": {intent: 0.999999}})
            await eventually(lambda: client.status.config_version_applied == 6, what="v6")
            assert client.status.config_error is None
            out = await agent.infer(InferRequest(text=text))
            assert out.decision == "escalate"  # stricter threshold: out of scope

        persisted = json.loads((tmp_path / "edge" / "fleet" / "applied_config.json").read_bytes())
        assert persisted["version"] == 6

        # restart offline: the last applied config is applied again without the link
        async with running_site(tmp_path / "edge", small_bundle, site, None) as (agent, client):
            assert client.status.config_version_applied == 6
            assert (await agent.infer(InferRequest(text=text))).decision == "escalate"


async def test_watch_waits_for_the_bucket_and_survives_a_hub_restart(
    tmp_path: Path, small_bundle: Path, nats_hub_factory: object
) -> None:
    hub: NatsServer = nats_hub_factory()  # type: ignore[operator]
    site = new_site()
    text, intent = _golden(small_bundle)
    async with running_site(tmp_path / "edge", small_bundle, site, hub.url) as (agent, client):
        await eventually(lambda: agent.uplink.connected, what="link")
        assert not client.config.watching.is_set()  # no bucket yet: retrying
        async with Cloud.connect(hub.url) as cloud:
            await cloud.put_config(site, {"version": 1, "router": {"default": "refuse"}})
            await eventually(lambda: client.status.config_version_applied == 1, what="v1")
        hub.stop()
        await eventually(lambda: not agent.uplink.connected, what="link down")
        hub.start()
        await eventually(lambda: agent.uplink.connected, timeout=90, what="link back")
        async with Cloud.connect(hub.url) as cloud:
            await cloud.put_config(
                site, {"version": 2, "router": {"intents": {intent: {"decision": "refuse"}}}}
            )
            await eventually(lambda: client.status.config_version_applied == 2, what="v2")
        assert (await agent.infer(InferRequest(text=text))).decision == "refuse"


async def test_heartbeat_goes_out_as_soon_as_the_link_comes_up(
    tmp_path: Path, small_bundle: Path, nats_hub_factory: object
) -> None:
    """A site whose hub comes up late is seen as soon as its link comes up, not one period
    after its last (skipped) beat: with an hour's period, any beat after the skipped one
    is the link's doing (how fast it goes out is not what this measures)."""
    hub: NatsServer = nats_hub_factory()  # type: ignore[operator]
    hub.stop()
    site = new_site()
    options = FleetOptions(
        heartbeat_interval_s=3600.0, retry_s=0.2, guard=GuardOptions(enabled=False)
    )
    async with running_site(tmp_path / "edge", small_bundle, site, hub.url, options=options) as (
        agent,
        client,
    ):
        await eventually(lambda: client.status.heartbeats_skipped >= 1, what="a beat skipped")
        hub.start()
        await eventually(lambda: agent.uplink.connected, timeout=60, what="link up")
        await eventually(
            lambda: client.status.heartbeats_sent >= 1, timeout=120, what="a beat after link up"
        )
