"""Signed remote config, with a real hub nats-server and a real edge agent.

The site trusts an operator config key (``config_signing.pub`` in its trusted keys), so it
requires signatures: unsigned, forged, tampered, re-keyed and replayed values are rejected,
audited in the site's audit log and reported; a signed residency change must tighten the
site's local policy unless the site's local config allows remote loosening.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aivos.cloud.fleet.config import ConfigStore
from aivos.edge.fleet import FleetOptions, GuardOptions
from aivos.edge.fleet.tightening import loosenings
from aivos.shared.config_signature import CONFIG_KEY_NAME, sign_config
from aivos.shared.fleet import (
    ConfigReport,
    config_report_subject,
    decode_config_report,
    generate_signing_key,
    load_private_key,
)
from aivos.shared.natsconf import NatsServer
from aivos.shared.residency import ResidencyPolicy
from tests.fixtures.wait import eventually
from tests.integration.test_edge_fleet_rig import LOCAL_RESIDENCY, Cloud, new_site, running_site

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

TIGHTER = {**LOCAL_RESIDENCY, "classes": {**LOCAL_RESIDENCY["classes"], "telemetry": "mask"}}
LOOSER = {
    **LOCAL_RESIDENCY,
    "classes": {**LOCAL_RESIDENCY["classes"], "escalation_prompt": "allow"},
}


def _config_key(tmp: Path, data_dir: Path) -> Ed25519PrivateKey:
    """An operator config key pair; the site at `data_dir` trusts its public half."""
    priv, pub = generate_signing_key(tmp / "operator", CONFIG_KEY_NAME)
    trusted = data_dir / "fleet" / "trusted_keys"
    trusted.mkdir(parents=True, exist_ok=True)
    shutil.copy(pub, trusted / f"{CONFIG_KEY_NAME}.pub")
    return load_private_key(priv)


def _options(**kw: Any) -> FleetOptions:
    return FleetOptions(
        heartbeat_interval_s=0.2, retry_s=0.2, guard=GuardOptions(enabled=False), **kw
    )


async def _next_report(sub: Any, version: int) -> ConfigReport:
    while True:
        report = decode_config_report((await sub.next_msg(timeout=10)).data)
        if report.version == version:
            return report


def _rejections(agent: Any) -> list[dict[str, Any]]:
    rows = agent.store.recent_audit(200)
    return [
        {"kind": r.kind, **r.detail}
        for r in rows
        if r.detail.get("action") == "remote_config.rejected"
    ]


async def test_forged_unsigned_and_replayed_config_is_rejected_and_audited(
    tmp_path: Path, small_bundle: Path, nats_hub_factory: Any
) -> None:
    hub: NatsServer = nats_hub_factory()
    site, data_dir = new_site(), tmp_path / "edge"
    key = _config_key(tmp_path, data_dir)
    forger = Ed25519PrivateKey.generate()
    async with Cloud.connect(hub.url) as cloud:
        reports = await cloud.nc.subscribe(config_report_subject(site))
        async with running_site(data_dir, small_bundle, site, hub.url, options=_options()) as (
            agent,
            client,
        ):
            await eventually(lambda: client.config.watching.is_set(), what="watch")
            # the attack of the issue: an unsigned v999 that loosens residency
            await cloud.put_raw(site, b'{"version": 999, "residency": {"classes": {}}}')
            report = await _next_report(reports, 999)
            assert report.status == "rejected" and "not signed" in (report.error or "")

            good = {"version": 1, "residency": TIGHTER}
            attempts: list[tuple[bytes, str]] = [
                (sign_config(site, {**good, "version": 2}, forger), "untrusted key"),
                (
                    sign_config(site, good, key).replace(b'"mask"', b'"allow"'),
                    "does not match",
                ),
                (sign_config("other-site", {**good, "version": 3}, key), "signed for key"),
            ]
            for value, error in attempts:
                await cloud.put_raw(site, value)
                report = decode_config_report((await reports.next_msg(timeout=10)).data)
                assert report.status == "rejected" and error in (report.error or "")
            assert client.status.config_version_applied == 0
            assert agent.residency.rule("telemetry") == "allow"  # nothing applied

            # a valid signed tightening is applied
            await cloud.put_raw(site, sign_config(site, {**good, "version": 4}, key))
            assert (await _next_report(reports, 4)).status == "applied"
            assert agent.residency.rule("telemetry") == "mask"

            # replaying an older signed value (v1 < v4) is refused
            await cloud.put_raw(site, sign_config(site, good, key))
            report = await _next_report(reports, 1)
            assert report.status == "rejected" and "not newer" in (report.error or "")
            assert client.status.config_version_applied == 4

            # a signed loosening is refused: the local policy keeps prompts on site
            await cloud.put_raw(site, sign_config(site, {"version": 5, "residency": LOOSER}, key))
            report = await _next_report(reports, 5)
            assert report.status == "rejected"
            assert "escalation_prompt: allow is looser than the local local-only" in (
                report.error or ""
            )
            assert agent.residency.rule("escalation_prompt") == "local-only"
            assert client.status.config_version_applied == 4

        # every rejection is in the site's (hash-chained) audit log
        async with running_site(data_dir, small_bundle, site, None, options=_options()) as (
            agent,
            _,
        ):
            audited = _rejections(agent)
            by_version = {row["version"]: row for row in audited}
            assert set(by_version) >= {999, 1, 5}
            assert by_version[999]["kind"] == "auth_failure"
            assert by_version[999]["reason"] == "config_signature"
            assert by_version[1]["kind"] == "auth_failure"
            assert by_version[5]["kind"] == "operator_action"
            assert by_version[5]["reason"] == "residency_loosened"
            assert sum(row["kind"] == "auth_failure" for row in audited) >= 5
            assert agent.store.verify_audit().ok


async def test_loosening_applies_only_where_the_site_allows_it(
    tmp_path: Path, small_bundle: Path, nats_hub_factory: Any
) -> None:
    hub: NatsServer = nats_hub_factory()
    site, data_dir = new_site(), tmp_path / "edge"
    key = _config_key(tmp_path, data_dir)
    async with Cloud.connect(hub.url) as cloud:
        store = ConfigStore(cloud.kv, key)  # the cloud's own writer signs
        reports = await cloud.nc.subscribe(config_report_subject(site))
        opts = _options(allow_remote_loosening=True)
        async with running_site(data_dir, small_bundle, site, hub.url, options=opts) as (
            agent,
            client,
        ):
            version = await store.put(site, {"residency": LOOSER})
            assert (await _next_report(reports, version)).status == "applied"
            assert agent.residency.rule("escalation_prompt") == "allow"
            assert (await store.get_raw(site))["residency"] == LOOSER  # the cloud reads it back
            # signatures are still required: an unsigned change is refused
            await cloud.put_raw(site, b'{"version": 99, "thresholds": {"*": 0.5}}')
            assert (await _next_report(reports, 99)).status == "rejected"
            assert client.status.config_version_applied == version


async def test_tighter_is_defined_per_data_class_region_and_masking() -> None:
    local = ResidencyPolicy.from_mapping(
        {
            "region": "eu-west",
            "allowed_regions": ["eu-west", "eu-central"],
            "classes": {"escalation_prompt": "mask", "telemetry": "allow"},
            "custom": [{"name": "EMPLOYEE_ID", "pattern": "EMP-[0-9]{6}"}],
        }
    )

    def remote(**changes: Any) -> ResidencyPolicy:
        base: dict[str, Any] = {
            "region": "eu-west",
            "allowed_regions": ["eu-west"],
            "classes": {"escalation_prompt": "local-only", "telemetry": "mask"},
            "custom": [{"name": "EMPLOYEE_ID", "pattern": "EMP-[0-9]{6}"}],
        }
        return ResidencyPolicy.from_mapping({**base, **changes})

    assert loosenings(remote(), local) == []  # stricter classes, fewer regions
    assert loosenings(local, local) == []  # equal is allowed
    cases = {
        "classes.escalation_prompt": remote(classes={"escalation_prompt": "allow"}),
        "classes.audit": remote(classes={"audit": "mask", "escalation_prompt": "mask"}),
        "allowed_regions": remote(allowed_regions=["eu-west", "us-east"]),
        "region": remote(region="us-east", allowed_regions=["eu-west"]),
        "custom": remote(custom=[]),
        "exempt_keys": remote(exempt_keys=["id", "prompt"]),
    }
    for what, policy in cases.items():
        found = loosenings(policy, local)
        assert any(f.startswith(what) for f in found), (what, found)
