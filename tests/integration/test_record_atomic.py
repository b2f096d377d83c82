"""A request's hard example is written in its audit row's writer op (in a savepoint of its
own): no hard example for a request whose row failed (the feedback path finds it through
the row), a hard example that cannot be kept costs only itself, and the request still costs
one commit. A fallback's job wakes the job runner once committed, even when the client went
away while the commit was pending."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aivos.edge.agent import Agent
from aivos.edge.api.schemas import InferRequest
from aivos.edge.store import Store
from aivos.edge.store import reviewed as _reviewed
from aivos.shared.errors import QuotaExceeded
from aivos.shared.natsconf.server import free_port
from tests.fixtures.edge import make_edge_settings
from tests.fixtures.wait import eventually
from tests.integration import test_fallback_one_commit as one_commit

# a standalone agent where every request is a link-down fallback (with its job) and a hard
# example ("escalated"), kept on site (no residency rule for hard examples)
agent = one_commit.agent
_TEXT = one_commit._TEXT

AgentFactory = Callable[..., Awaitable[Agent]]


def _residency(*, audit: str, hard_example: str | None) -> dict[str, Any]:
    classes = {"escalation_prompt": "mask", "audit": audit, "memory": "local-only"}
    if hard_example is not None:
        classes["hard_example"] = hard_example
    return {"region": "default", "classes": classes}


@pytest.fixture
async def uplinked(tmp_path: Path, small_bundle: Path) -> AsyncIterator[AgentFactory]:
    """Agents with an uplink that never comes up (records wait in the outbox, every request
    is a link-down fallback and a hard example) and a full outbox refusing records."""
    started: list[Agent] = []

    async def start(*, audit: str = "mask", hard_example: str | None = None) -> Agent:
        settings = make_edge_settings(
            tmp_path / f"edge{len(started)}",
            small_bundle,
            **{
                "uplink.nats_url": f"nats://127.0.0.1:{free_port()}",
                "router.default": "escalate",
                "outbox.when_full": "refuse",
                "outbox.quota": 5,
                "residency": _residency(audit=audit, hard_example=hard_example),
            },
        )
        new = Agent(settings)
        await new.start()
        started.append(new)
        await new.retention.stop()
        await new.store.transact(lambda c: None)
        return new

    try:
        yield start
    finally:
        for each in started:
            await each.stop()


def _site_candidates(store: Store) -> list[str]:
    return [c.request_id for c in _reviewed.candidates(store.readers.get())]


def _queued_candidates(store: Store) -> list[str]:
    return [r.id for r in store.outbox_pending(1000) if r.data_class == "hard_example"]


async def _fill_outbox(store: Store) -> None:
    while not store.outbox_full():
        await store.enqueue("telemetry", {"filler": True})


# -- (1) the hard example commits with its audit row, or not at all --------------------------


async def test_an_audit_row_refused_by_a_full_outbox_leaves_no_hard_example(
    uplinked: AgentFactory,
) -> None:
    """Before: the site kept the candidate of a request that has no audit row and whose
    caller got an error."""
    site = await uplinked()  # hard examples stay on site; audit rows must sync
    await _fill_outbox(site.store)
    with pytest.raises(QuotaExceeded):
        await site.infer(InferRequest(text=_TEXT))
    assert site.store.audit_count() == 0
    assert _site_candidates(site.store) == []
    assert one_commit._all_jobs(site.store) == []  # the job went with the row (as before)
    assert site.recorder.candidates.kept_on_site == 0


async def test_an_audit_row_that_cannot_be_written_leaves_no_queued_hard_example(
    uplinked: AgentFactory,
) -> None:
    """Before: the candidate record was queued to leave the site for a request with no row."""
    site = await uplinked(hard_example="mask")
    await one_commit._refuse_inserts(site.store, "audit")
    with pytest.raises(sqlite3.IntegrityError):
        await site.infer(InferRequest(text=_TEXT))
    assert _queued_candidates(site.store) == []
    assert site.recorder.candidates.kept == 0


async def test_a_hard_example_refused_by_a_full_outbox_does_not_fail_the_request(
    uplinked: AgentFactory,
) -> None:
    site = await uplinked(audit="local-only", hard_example="mask")  # rows need no outbox
    await _fill_outbox(site.store)
    result = await site.infer(InferRequest(text=_TEXT))
    assert result.answered_by == "fallback" and result.job_id
    row = site.store.get_audit(result.request_id)
    assert row is not None and row.detail["candidate"] == "escalated"
    assert site.store.get_job(result.job_id).state == "waiting_for_uplink"
    assert _queued_candidates(site.store) == []
    keeper = site.recorder.candidates
    assert (keeper.kept, keeper.dropped) == (0, 1)


@pytest.mark.parametrize("session", [False, True], ids=["alone", "in_a_batch"])
async def test_a_hard_example_that_cannot_be_kept_on_site_costs_only_itself(
    agent: Agent, session: bool
) -> None:
    """Its savepoint is rolled back, inside the audit row's op: whether that op is the whole
    transaction or one savepoint of a batch (with the session's turns)."""
    sid = "s-atomic" if session else None
    if session:
        await agent.infer(InferRequest(text="hello", session_id=sid))  # claims the session
    kept, turns = agent.recorder.candidates.kept_on_site, len(agent.store.turns(sid or "-"))
    await one_commit._refuse_inserts(agent.store, "site_candidates")
    async with one_commit.writer_held(agent.store):
        request = asyncio.ensure_future(agent.infer(InferRequest(text=_TEXT, session_id=sid)))
        queued = 3 if session else 1  # the row (with its job and hard example), the turns
        await eventually(lambda: agent.store.queue_depth >= queued, what="the writes queued")
    result = await request
    assert agent.store.get_audit(result.request_id) is not None
    assert agent.store.get_job(result.job_id or "").kind == "escalation"
    assert result.request_id not in _site_candidates(agent.store)
    assert agent.recorder.candidates.kept_on_site == kept
    if session:
        assert len(agent.store.turns(sid or "-")) == turns + 2


async def test_a_hard_example_costs_no_op_or_commit_of_its_own(agent: Agent) -> None:
    """Before: the same one commit, but two ops (the hard example beside the row)."""
    result, commits, ops = await one_commit._writes_of(
        agent.store, agent.infer(InferRequest(text=_TEXT))
    )
    assert agent.store.get_audit(result.request_id) is not None
    assert result.request_id in _site_candidates(agent.store)
    assert agent.recorder.candidates.kept_on_site == 1
    assert (commits, ops) == (1, 1)


# -- (2) the job runner is woken once the job committed, even for a cancelled request -------


def _count_wakes(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The jobs in the store at each wake of the job runner."""
    wakes: list[list[str]] = []
    runner = agent.escalations
    wake = runner.wake

    def counted() -> None:
        wakes.append(one_commit._all_jobs(agent.store))
        wake()

    monkeypatch.setattr(runner, "wake", counted)
    return wakes


async def test_a_cancelled_request_wakes_the_runner_once_its_job_committed(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that went away while the commit was pending. Before: the job committed but
    the runner was not woken (it found the job at its next poll)."""
    wakes = _count_wakes(agent, monkeypatch)
    async with one_commit.writer_held(agent.store):
        request = asyncio.ensure_future(agent.infer(InferRequest(text=_TEXT)))
        await eventually(lambda: agent.store.queue_depth > 0, what="the audit row queued")
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert wakes == []  # nothing committed yet
    woken = await eventually(lambda: wakes, what="the job runner woken")
    assert len(woken) == 1 and len(woken[0]) == 1  # woken once, with its job committed
    (job,) = woken[0]
    assert agent.store.get_job(job).state == "waiting_for_uplink"


async def test_the_runner_is_woken_before_the_answer_and_not_for_a_failed_job(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    wakes = _count_wakes(agent, monkeypatch)
    result = await agent.infer(InferRequest(text=_TEXT))
    assert wakes == [[result.job_id]]
    await one_commit._refuse_inserts(agent.store, "jobs")
    with pytest.raises(sqlite3.IntegrityError):
        await agent.infer(InferRequest(text=_TEXT))
    assert wakes == [[result.job_id]]
