"""An escalation while the link is down: the fallback and its durable job, with nothing masked
until the prompt actually leaves (the job runner masks it then), and a residency policy that
keeps prompts on site still refusing the escalation outright."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aivos.edge.agent import Agent
from aivos.edge.api.schemas import InferRequest
from aivos.shared.residency import DataClass
from tests.fixtures.edge import make_edge_settings

_TEXT = "please email me at jane.doe@example.com about my account"


async def _infer_once(settings: Any) -> tuple[Agent, Any]:
    agent = Agent(settings)
    await agent.start()
    try:
        return agent, await agent.infer(InferRequest(text=_TEXT))
    finally:
        await agent.stop()


async def test_link_down_escalation_masks_nothing_and_keeps_the_job_on_site(
    tmp_path: Path, small_bundle: Path
) -> None:
    # no uplink configured: the link is down for good; every request escalates
    settings = make_edge_settings(tmp_path / "edge", small_bundle, **{"router.default": "escalate"})
    agent, resp = await _infer_once(settings)
    assert resp.answered_by == "fallback" and resp.job_id
    store = type(agent.store).open(settings.data_path)
    try:
        row = store.get_audit(resp.request_id)
        assert row is not None and row.detail["reason"] == "fallback:link_down"
        assert row.pii_counts == {}  # nothing left the site, so nothing was masked for it
        job = store.get_job(resp.job_id)
        assert job.request["text"] == _TEXT  # masked by the job runner when it escalates
    finally:
        store.close()
    # the exit gate saw no escalation prompt: it neither passed nor masked one
    assert DataClass.ESCALATION_PROMPT not in agent.gate.counts()


async def test_link_down_escalation_is_still_refused_by_a_local_only_policy(
    tmp_path: Path, small_bundle: Path
) -> None:
    classes = {"escalation_prompt": "local-only"}
    settings = make_edge_settings(
        tmp_path / "edge",
        small_bundle,
        **{"router.default": "escalate", "residency.classes": classes},
    )
    agent, resp = await _infer_once(settings)
    assert resp.answered_by == "fallback" and resp.job_id is None
    assert agent.gate.counts()[DataClass.ESCALATION_PROMPT].denied == 1
