"""Bundle rollout on a real site: publish -> download -> verify -> canary -> swap, with the
failure paths (tampered bundle, failing canary, health-guard rollback) and a load test."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn

from aivos.edge.agent import Agent
from aivos.edge.api.app import create_app
from aivos.edge.api.schemas import InferRequest
from aivos.edge.fleet import active_bundle_dir
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.fleet import bundle_report_subject, decode_bundle_report, decode_heartbeat
from aivos.shared.natsconf import NatsServer, free_port
from aivos.shared.subjects import heartbeat_subject
from tests.fixtures.edge import issue_token
from tests.fixtures.wait import eventually
from tests.integration.test_edge_fleet_rig import (
    Cloud,
    fast_options,
    make_variant,
    new_site,
    running_site,
    signing_key,
    site_settings,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


def _version(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


async def test_publish_download_verify_canary_swap(
    tmp_path: Path, small_bundle: Path, nats_hub: NatsServer
) -> None:
    key, pub = signing_key(tmp_path)
    v2 = _version("v2")
    variant = make_variant(small_bundle, tmp_path / "v2", v2, key)
    site = new_site()
    text = load_bundle_manifest(small_bundle).golden[0].text
    async with Cloud.connect(nats_hub.url) as cloud:
        await cloud.publish(variant)
        reports = await cloud.nc.subscribe(bundle_report_subject(site))
        data = tmp_path / "edge"
        async with running_site(data, small_bundle, site, nats_hub.url, trusted=pub) as (
            agent,
            client,
        ):
            v1 = agent.model.version
            await cloud.put_config(site, {"version": 1, "bundle_version": v2})
            await eventually(lambda: agent.model.version == v2, what="swap")
            assert (await agent.infer(InferRequest(text=text))).model_version == v2
            statuses = []
            while "ok" not in statuses:
                statuses.append(decode_bundle_report((await reports.next_msg(timeout=10)).data))
                statuses[-1:] = [statuses[-1].status] if statuses[-1].status != "ok" else ["ok"]
            assert statuses[0] == "pending"
            assert client.status.bundle_status == "ok"
            installed = data / "bundles" / v2
            assert active_bundle_dir(data) == installed
            assert load_bundle_manifest(installed).bundle_version == v2
            timings = client.bundles.last_install
            assert timings is not None and timings.bytes > 0 and timings.version == v2
            assert not any((data / "fleet" / "downloads").iterdir())  # staging cleaned

            # back to v1 (the configured bundle, kept as "previous"): no download needed
            await cloud.put_config(site, {"version": 2, "bundle_version": v1})
            await eventually(lambda: agent.model.version == v1, what="swap back")


async def test_tampered_and_unsigned_bundles_are_rejected(
    tmp_path: Path, small_bundle: Path, nats_hub: NatsServer
) -> None:
    key, pub = signing_key(tmp_path)
    other_key, _ = signing_key(tmp_path / "other")
    tampered = make_variant(small_bundle, tmp_path / "t", _version("tampered"), key)
    with (tampered / "tokenizer.json").open("ab") as fh:
        fh.write(b" ")  # one byte changed after signing: sha256 mismatch
    untrusted = make_variant(small_bundle, tmp_path / "u", _version("untrusted"), other_key)
    site = new_site()
    async with Cloud.connect(nats_hub.url) as cloud:
        hbs = await cloud.nc.subscribe(heartbeat_subject(site))
        for bundle in (tampered, untrusted):
            await cloud.publish(bundle)
        async with running_site(
            tmp_path / "edge", small_bundle, site, nats_hub.url, trusted=pub
        ) as (agent, client):
            v1 = agent.model.version
            for n, bundle in enumerate((tampered, untrusted), start=1):
                version = load_bundle_manifest(bundle).bundle_version if n == 2 else None
                version = (
                    version or json.loads((bundle / "manifest.json").read_bytes())["bundle_version"]
                )
                await cloud.put_config(site, {"version": n, "bundle_version": version})
                await eventually(
                    lambda v=version: (
                        client.status.bundle_target == v
                        and client.status.bundle_status == "verify_failed"
                    ),
                    what="verify_failed",
                )
                assert agent.model.version == v1
                assert not (tmp_path / "edge" / "bundles" / version).exists()
            assert "untrusted key" in client.status.bundle_message
            while True:
                hb = decode_heartbeat((await hbs.next_msg(timeout=10)).data)
                if hb.bundle_status == "verify_failed":
                    break
            assert hb.bundle_version == v1 and hb.bundle_message


async def test_failing_canary_keeps_the_old_bundle(
    tmp_path: Path, small_bundle: Path, nats_hub: NatsServer
) -> None:
    key, pub = signing_key(tmp_path)
    bad = _version("badcanary")
    await_variant = make_variant(small_bundle, tmp_path / "b", bad, key, wrong_golden=True)
    site = new_site()
    async with Cloud.connect(nats_hub.url) as cloud:
        await cloud.publish(await_variant)
        reports = await cloud.nc.subscribe(bundle_report_subject(site))
        async with running_site(
            tmp_path / "edge", small_bundle, site, nats_hub.url, trusted=pub
        ) as (agent, client):
            v1 = agent.model.version
            await cloud.put_config(site, {"version": 1, "bundle_version": bad})
            await eventually(lambda: client.status.bundle_status == "canary_failed", what="canary")
            assert agent.model.version == v1
            assert "canary accuracy" in client.status.bundle_message
            report = decode_bundle_report((await reports.next_msg(timeout=10)).data)
            while report.status == "pending":
                report = decode_bundle_report((await reports.next_msg(timeout=10)).data)
            assert report.status == "canary_failed" and report.bundle_version == bad
            assert active_bundle_dir(tmp_path / "edge") is None
            assert not (tmp_path / "edge" / "bundles" / bad).exists()


async def test_guard_rolls_back_a_bundle_that_escalates_everything(
    tmp_path: Path, small_bundle: Path, nats_hub: NatsServer
) -> None:
    key, pub = signing_key(tmp_path)
    worse = _version("worse")
    variant = make_variant(small_bundle, tmp_path / "w", worse, key, threshold=0.99999)
    golden = [g.text for g in load_bundle_manifest(small_bundle).golden]
    site = new_site()
    options = fast_options(window_s=3600, min_requests=10, check_interval_s=0.05)
    async with Cloud.connect(nats_hub.url) as cloud:
        await cloud.publish(variant)
        async with running_site(
            tmp_path / "edge", small_bundle, site, nats_hub.url, trusted=pub, options=options
        ) as (agent, client):
            v1 = agent.model.version
            for text in (golden * 5)[:20]:  # baseline: the live bundle answers these locally
                assert (await agent.infer(InferRequest(text=text))).decision == "local"
            await cloud.put_config(site, {"version": 1, "bundle_version": worse})
            await eventually(lambda: agent.model.version == worse, what="swap")
            served = []
            while client.status.bundle_status != "rolled_back":
                out = await agent.infer(InferRequest(text=golden[len(served) % len(golden)]))
                served.append((out.model_version, out.decision))
                assert len(served) < 1000, "the guard never tripped"
            assert "escalate" in {d for v, d in served if v == worse}
            assert agent.model.version == v1
            assert "escalation rate" in client.status.bundle_message
            assert active_bundle_dir(tmp_path / "edge") == small_bundle
            assert (await agent.infer(InferRequest(text=golden[0]))).decision == "local"
            # not retried: the failed version is remembered
            client.bundles.poke()
            await asyncio.sleep(0.2)
            assert agent.model.version == v1 and client.status.bundle_status == "rolled_back"


async def test_concurrent_requests_during_a_swap_all_succeed(
    tmp_path: Path, small_bundle: Path, nats_hub: NatsServer
) -> None:
    key, pub = signing_key(tmp_path)
    v2 = _version("load")
    variant = make_variant(small_bundle, tmp_path / "v2", v2, key)
    golden = [g.text for g in load_bundle_manifest(small_bundle).golden]
    site = new_site()
    data = tmp_path / "edge"
    token = issue_token(data, "client", "load")
    async with Cloud.connect(nats_hub.url) as cloud:
        await cloud.publish(variant)
        agent = Agent(site_settings(data, small_bundle, site, nats_hub.url, trusted=pub))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(agent.settings, agent=agent),
                host="127.0.0.1",
                port=port,
                log_level="warning",
            )
        )
        serving = asyncio.create_task(server.serve())  # the app's lifespan starts the agent
        await eventually(lambda: server.started, what="http server")
        assert agent.fleet is not None  # started by the agent, with the rig's fast options
        v1 = agent.model.version
        versions: list[str] = []
        statuses: list[int] = []
        errors: list[str] = []
        stop = asyncio.Event()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                headers = {"Authorization": f"Bearer {token}"}

                async def caller(i: int) -> None:
                    n = 0
                    while not stop.is_set() or n < 5:
                        r = await http.post(
                            "/v1/infer",
                            json={"text": golden[(i + n) % len(golden)]},
                            headers=headers,
                        )
                        statuses.append(r.status_code)
                        if r.status_code == 200:
                            versions.append(r.json()["model_version"])
                        else:
                            errors.append(r.text[:300])
                        n += 1

                callers = [asyncio.create_task(caller(i)) for i in range(8)]
                try:
                    await eventually(lambda: len(statuses) >= 40, what="traffic")
                    await cloud.put_config(site, {"version": 1, "bundle_version": v2})
                    await eventually(lambda: agent.model.version == v2, what="swap")
                    await eventually(
                        lambda: versions.count(v2) >= 40,
                        what=lambda: f"v2 traffic: {sorted(set(statuses))} {errors[:1]}",
                    )
                finally:
                    stop.set()
                    await asyncio.gather(*callers, return_exceptions=True)
        finally:
            server.should_exit = True
            await serving
    assert set(statuses) == {200}, errors[:3]
    first_v2 = versions.index(v2)
    assert first_v2 > 0 and set(versions[:first_v2]) == {v1}
    assert set(versions) == {v1, v2}
    assert len(statuses) >= 80
