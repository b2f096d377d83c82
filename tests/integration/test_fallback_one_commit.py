"""A fallback's durable job is written in its audit row's transaction: one commit per request
(not the job's, then the audit row's), the job committed before the answer, and neither
without the other. Every caller of the fallback: `infer` and the stream with the link down,
the failed escalation of both with the link up, and the async job path (whose job exists
before the request runs)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from aivos.edge.agent import Agent
from aivos.edge.api.schemas import InferRequest, JobRequest
from aivos.edge.results import InferResult, StreamDone
from aivos.edge.store import Store
from aivos.edge.store.jobs import JOB_STATES
from aivos.shared.natsconf.server import NatsServer
from tests.fixtures.edge import make_edge_settings
from tests.fixtures.wait import eventually

T = TypeVar("T")

_TEXT = "what is the weather like on mars today"


@pytest.fixture
async def agent(tmp_path: Path, small_bundle: Path) -> AsyncIterator[Agent]:
    """A standalone agent (no uplink: the link is down for good) where every request
    escalates, so every answer is a link-down fallback with its job."""
    settings = make_edge_settings(tmp_path / "edge", small_bundle, **{"router.default": "escalate"})
    started = Agent(settings)
    await started.start()
    await started.retention.stop()  # its pass at start writes too: only requests write here
    await started.store.transact(lambda c: None)  # whatever it had queued is committed
    try:
        yield started
    finally:
        await started.stop()


@contextlib.asynccontextmanager
async def writer_held(store: Store) -> AsyncIterator[None]:
    """The writer busy in another transaction (as under load) until the block ends: what
    is submitted meanwhile waits, uncommitted, and goes into one batch after it."""
    entered, release = threading.Event(), threading.Event()

    def hold(c: sqlite3.Connection) -> None:
        entered.set()
        release.wait(60)

    held = asyncio.ensure_future(store.transact(hold))
    try:
        assert await asyncio.to_thread(entered.wait, 60)
        yield
    finally:
        release.set()
        await held


async def _writes_of(store: Store, request: Awaitable[T]) -> tuple[T, int, int]:
    """`request`'s result and the writer commits and ops it cost. The writer is held busy by
    another transaction (as under load) while the request starts, so whatever the request
    queues meanwhile goes into the next batch whatever the thread timing: a write it issues
    only after an earlier one committed is a commit of its own."""
    async with writer_held(store):
        stats = store.writer_stats
        commits, ops = stats.commits, stats.ops
        task = asyncio.ensure_future(request)
        await eventually(lambda: store.queue_depth > 0, what="the request's first write queued")
    result = await task
    # minus the holding transaction itself
    return result, stats.commits - commits - 1, stats.ops - ops - 1


async def _stream(agent: Agent, text: str) -> InferResult:
    """The `StreamDone` result of a streamed request."""
    events = [e async for e in agent.pipeline.events(InferRequest(text=text))]
    done = events[-1]
    assert isinstance(done, StreamDone)
    return done.result


def _assert_job_and_audit(store: Store, result: InferResult, reason: str) -> None:
    assert result.answered_by == "fallback" and result.job_id
    assert result.job_id in (result.answer or "")  # the answer names the job
    job = store.get_job(result.job_id)
    assert job.kind == "escalation" and job.state == "waiting_for_uplink"
    assert job.request["request_id"] == result.request_id
    row = store.get_audit(result.request_id)
    assert row is not None
    assert row.detail["reason"] == reason and row.detail["job_id"] == result.job_id


def _all_jobs(store: Store) -> list[str]:
    return [j.id for j in store.list_jobs(JOB_STATES, limit=10_000)]


async def test_link_down_fallback_is_one_commit_with_its_job(agent: Agent) -> None:
    result, commits, ops = await _writes_of(agent.store, agent.infer(InferRequest(text=_TEXT)))
    # committed when the answer returns: the job, and the audit row that names it
    _assert_job_and_audit(agent.store, result, "fallback:link_down")
    # one transaction, one op: the job, the audit row and the hard example
    assert commits == 1
    assert ops == 1


async def test_streamed_link_down_fallback_is_one_commit_with_its_job(agent: Agent) -> None:
    result, commits, ops = await _writes_of(agent.store, _stream(agent, _TEXT))
    _assert_job_and_audit(agent.store, result, "fallback:link_down")
    assert (commits, ops) == (1, 1)


async def test_async_job_records_its_existing_job(agent: Agent) -> None:
    """A /v1/jobs request does not fall back: its job was made when it was accepted, and the
    escalation is recorded on that job."""
    accepted = await agent.jobs.submit(JobRequest(text=_TEXT))

    def left_queue() -> Any:
        job = agent.store.get_job(accepted.job_id)
        return job if job.state != "queued" else None

    job = await eventually(left_queue, what="the job answered")
    assert job.state == "waiting_for_uplink" and job.result["escalation"]["text"] == _TEXT
    row = agent.store.get_audit(job.result["request_id"])
    assert row is not None
    assert row.detail["reason"] == "async_job" and row.detail["job_id"] == accepted.job_id
    assert _all_jobs(agent.store) == [accepted.job_id]  # no second job for it


async def _refuse_inserts(store: Store, table: str) -> None:
    """From now on every insert into `table` fails (a constraint as SQLite raises it), on the
    writer's connection only (a TEMP trigger: not in the database file)."""
    await store.transact(
        lambda c: c.execute(
            f"CREATE TEMP TRIGGER refuse_{table} BEFORE INSERT ON main.{table} "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    )


async def test_a_job_that_cannot_be_written_fails_the_request_and_its_audit(
    agent: Agent,
) -> None:
    await agent.infer(InferRequest(text=_TEXT))  # one that was recorded
    audit_rows, jobs = agent.store.audit_count(), _all_jobs(agent.store)
    await _refuse_inserts(agent.store, "jobs")
    with pytest.raises(sqlite3.IntegrityError):
        await agent.infer(InferRequest(text=_TEXT))
    assert agent.store.audit_count() == audit_rows  # no row claims a job that is not there
    assert _all_jobs(agent.store) == jobs
    for row in agent.store.recent_audit(100):
        if row.detail.get("job_id"):
            assert row.detail["job_id"] in jobs


async def test_an_audit_row_that_cannot_be_written_leaves_no_job(agent: Agent) -> None:
    """The request errors, and no job is left to escalate an answer nobody was given."""
    await _refuse_inserts(agent.store, "audit")
    with pytest.raises(sqlite3.IntegrityError):
        await agent.infer(InferRequest(text=_TEXT))
    with pytest.raises(sqlite3.IntegrityError):
        await _stream(agent, _TEXT)
    assert _all_jobs(agent.store) == []


@pytest.mark.slow
async def test_failed_escalation_falls_back_with_one_commit(
    tmp_path: Path,
    small_bundle: Path,
    nats_leaf_factory: Callable[..., NatsServer],
) -> None:
    """The link is up but no worker answers: `infer` and the stream both fall back after the
    failed attempt, each with its job in its audit row's transaction."""
    leaf = nats_leaf_factory("site1")
    settings = make_edge_settings(
        tmp_path / "edge",
        small_bundle,
        site_id="site1",
        **{"uplink.nats_url": leaf.url, "router.default": "escalate"},
    )
    agent = Agent(settings)
    await agent.start()
    try:
        assert await agent.uplink.wait_up(10)
        # only requests write: no retention pass, no job runner claiming the job once woken,
        # no outbox sync marking the audit rows sent
        await agent.retention.stop()
        for task in ("escalations", "sync"):
            await agent.supervisor.stop(task)
        await agent.store.transact(lambda c: None)
        for request in (agent.infer(InferRequest(text=_TEXT)), _stream(agent, _TEXT)):
            result, commits, _ = await _writes_of(agent.store, request)
            _assert_job_and_audit(agent.store, result, "fallback:no_responders")
            assert commits == 1
    finally:
        await agent.stop()
