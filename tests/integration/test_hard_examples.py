"""The hard-example loop end to end, on real components: a real edge agent keeps the
requests its bundle cannot serve as candidates (masked by its exit gate) and syncs them
through a real hub to the cloud ingest; an operator labels the cluster on the console's
review page (HTTP, session login, CSRF form); `aivos models build --from-fleet` retrains
with the labelled examples; the quality gate refuses a bundle that fails the golden queries
and lets the new one through; the staged rollout installs it on the site, which then
serves the new intent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from aivos.cloud.console.app import ConsoleSettings, create_app
from aivos.cloud.fleet.publish import publish_bundle
from aivos.cloud.fleet.quality_gate import BundleQualityGate, QualityGateFailed
from aivos.cloud.fleet.rollout import start_rollout
from aivos.cloud.fleet.service import FleetService
from aivos.cloud.fleet.tokens import add_operator
from aivos.cloud.ingest.candidates import CandidateStore
from aivos.cloud.ingest.consumer import SyncIngest
from aivos.cloud.ingest.store import CloudStore
from aivos.edge.api.schemas import InferRequest
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.natsconf.server import NatsServer
from tests.fixtures.wait import eventually
from tests.integration.test_edge_fleet_rig import LOCAL_RESIDENCY, running_site, signing_key

# two real bundle builds (the session's test bundle and the retrained one): ~2 min on a quiet
# 2-core box, far more when the box is shared, hence the long per-test limit
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.asyncio(loop_scope="session"),
]

# a card-dispute request the 8-intent test bundle has no intent for (it says `oos`)
DISPUTES = [
    "I was charged twice for my card",
    "my card was billed two times for the same purchase",
    "there is a duplicate charge on my card",
    "I see the same payment twice on my card statement",
    "the shop charged my card twice",
    "why was my card debited twice for one order",
    "I got double charged on my credit card",
    "dispute a double charge on my card, email me at jane.doe@example.com",
]
OTHERS = ["who won the world cup in 1998", "how tall is mount everest"]
NEW_PARAPHRASE = "the same purchase was charged to my card two times"  # never trained on
# hard examples may leave the site, masked; nothing else does in this test
RESIDENCY = {**LOCAL_RESIDENCY, "classes": {**LOCAL_RESIDENCY["classes"], "hard_example": "mask"}}


@pytest.fixture
async def fleet(tmp_path: Path, nats_hub: NatsServer) -> AsyncIterator[FleetService]:
    service = FleetService(tmp_path / "cloud", nats_hub.url, tick_s=0.1, flush_interval_s=0.05)
    await service.start()
    yield service
    await service.stop()


def _aivos(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess (as `run_aivos`, with room for a build on a busy box)."""
    return subprocess.run(
        [sys.executable, "-c", "from aivos.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=1500,
    )


async def _login(client: AsyncTestClient[Any]) -> str:
    page = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    r = await client.post(
        "/login",
        data={"username": "alice", "password": "correct horse", "csrf": csrf.group(1)},
    )
    assert r.status_code in (200, 303), r.text
    review = await client.get("/review")
    assert review.status_code == 200, review.text
    token = re.search(r'name="csrf" value="([^"]+)"', review.text)
    assert token is not None
    return token.group(1)


def _cluster_forms(html: str) -> list[list[str]]:
    """The member checkbox names of each cluster form on the review page."""
    forms = re.findall(r'<form[^>]*id="label-form-\d+".*?</form>', html, re.S)
    return [re.findall(r'name="(m\|[^"]+)"', f) for f in forms]


async def test_candidate_review_build_gated_rollout_served(
    tmp_path: Path,
    small_bundle: Path,
    small_clinc: Path,
    nats_hub: NatsServer,
    fleet: FleetService,
) -> None:
    tag = uuid.uuid4().hex[:6]
    site = f"hx-{tag}"
    cloud_dir = tmp_path / "cloud"
    cloud = CloudStore.open(cloud_dir)
    ingest = SyncIngest(cloud, durable=f"hx-{tag}")
    assert fleet.nc is not None
    await ingest.start(fleet.nc)
    key, pub = signing_key(tmp_path)
    old_version = load_bundle_manifest(small_bundle).bundle_version
    try:
        async with running_site(
            tmp_path / "site", small_bundle, site, nats_hub.url, trusted=pub, residency=RESIDENCY
        ) as (agent, _):
            # 1. candidates: what the bundle cannot serve is kept, masked, and synced
            results = {t: await agent.infer(InferRequest(text=t)) for t in DISPUTES + OTHERS}
            confident = await agent.infer(InferRequest(text="what is my checking balance"))
            # which requests are candidates is the agent's decision, recorded in the audit
            kept = {
                r.request_id
                for r in results.values()
                if agent.store.get_audit(r.request_id).detail.get("candidate")  # type: ignore[union-attr]
            }
            disputes = {results[t].request_id for t in DISPUTES} & kept
            assert len(disputes) >= 6  # a bundle without the intent is unsure about most
            rated = sorted(disputes)[0]
            await agent.pipeline.feedback.record(rated, helpful=False)
            review = CandidateStore(cloud)

            def synced() -> dict[str, Any] | None:
                found = {c.request_id: c for c in review.candidates() if c.site == site}
                ok = set(found) == kept and found[rated].helpful is False
                return found if ok else None

            found = await eventually(synced, timeout=60, what="candidates in the cloud")
            assert confident.request_id not in found  # served confidently: not a candidate
            texts = {c.text for c in found.values()}
            assert not any("jane.doe@example.com" in t for t in texts)  # masked at the exit
            emailed = results[DISPUTES[-1]].request_id
            assert emailed not in kept or "<EMAIL_1>" in found[emailed].text
            assert {c.reason for c in found.values()} <= {
                "out_of_scope",
                "low_confidence",
                "escalated",
            }

            # 2. review: the console clusters them; alice labels the dispute cluster
            add_operator(fleet.registry, "alice", "correct horse")
            settings = ConsoleSettings(
                data_dir=cloud_dir, connect=False, review_bundle=small_bundle
            )
            async with AsyncTestClient(create_app(settings, fleet=fleet)) as client:
                csrf = await _login(client)
                page = (await client.get("/review")).text
                for members in _cluster_forms(page):
                    ids = {m.rsplit("|", 1)[1] for m in members}
                    if not ids & set(found):
                        continue  # another test's site
                    form = {"csrf": csrf, **{m: "on" for m in members}}
                    if ids <= disputes:
                        form.update(kind="new_intent", new_name="card_dispute")
                    else:
                        form.update(kind="oos")
                    r = await client.post("/review/label", data=form)
                    assert r.status_code in (200, 303) and "labelled" in r.text, r.text
                page = (await client.get("/review")).text
                assert "card_dispute" in page and "new_intent" in page
            reviewed = {r.request_id: r.label for r in review.reviewed() if r.site == site}
            assert reviewed == {rid: "card_dispute" if rid in disputes else "oos" for rid in kept}
            assert any(a.action == "review.label" for a in fleet.registry.actions(50))

            # 3. build from the fleet's reviewed examples
            out = tmp_path / "bundles" / "v2"
            built = _aivos(
                "models", "build", "--from-fleet", str(cloud_dir), "--data", str(small_clinc),
                "--out", str(out), "--epochs", "1",
            )  # fmt: skip
            assert built.returncode == 0, built.stderr
            assert "new intents: card_dispute" in built.stderr
            new_version = load_bundle_manifest(out).bundle_version
            assert "card_dispute" in load_bundle_manifest(out).labels

            # 4. the gate: golden queries name the new intent; held-out = the base test split
            golden = tmp_path / "golden.jsonl"
            golden.write_text(
                json.dumps({"text": NEW_PARAPHRASE, "label": "card_dispute"})
                + "\n"
                + json.dumps({"text": "what's the weather like in paris", "label": "weather"})
                + "\n"
            )
            # held-out of 240 in-scope / 40 oos rows: one oos row is 2.5 points, and a
            # rebuild flips a few rows; the gate's default rule (rows lost against rows
            # gained, sign test) tells that noise from a real drop
            heldout = f"{small_clinc}#test"
            old_gate = BundleQualityGate(small_bundle, small_bundle, heldout, golden)
            with pytest.raises(QualityGateFailed, match="golden queries fail"):
                start_rollout(
                    fleet.registry, bundle_version=old_version, sites=[site],
                    canary_percent=100, actor="e2e", soak_s=0.2, quality_gate=old_gate,
                )  # fmt: skip
            assert any(a.action == "rollout.refused" for a in fleet.registry.actions(50))
            assert not [r for r in fleet.registry.rollouts() if r.sites[0].site_id == site]

            gate = BundleQualityGate(out, small_bundle, heldout, golden)
            report = gate.check(new_version)
            print(
                f"gate: new {report.candidate.in_scope_accuracy:.2%}/"
                f"{report.candidate.oos_recall:.2%} vs old {report.baseline.in_scope_accuracy:.2%}/"
                f"{report.baseline.oos_recall:.2%}; golden {report.golden_total - len(report.golden_misses)}"
                f"/{report.golden_total}"
            )
            assert report.passed, report.reasons

            # 5. gated staged rollout -> the site serves the new intent
            await eventually(
                lambda: any(
                    r.site_id == site and r.state == "online" for r in fleet.registry.sites()
                ),
                what="the site online in the registry",
            )
            js = fleet.nc.jetstream(domain="hub")
            await publish_bundle(js, out, key)
            rid = start_rollout(
                fleet.registry, bundle_version=new_version, sites=[site], canary_percent=100,
                actor="e2e", soak_s=0.2, quality_gate=gate,
            )  # fmt: skip
            await eventually(lambda: agent.model.version == new_version, timeout=120)
            await eventually(lambda: fleet.registry.rollout(rid).state == "completed", timeout=120)
            served = await agent.infer(InferRequest(text=NEW_PARAPHRASE))
            assert served.intent == "card_dispute", served
            assert served.model_version == new_version
    finally:
        await ingest.stop()
        cloud.close()
