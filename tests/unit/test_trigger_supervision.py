"""Issue 12: the workflow trigger loops are supervised.

Given the agent's `Supervisor`, the NATS subscription loop and the webhook-refusal rollup
loop run as the supervised tasks "workflow-triggers" and "workflow-rollup": an exception
that escapes either is counted, shows as `restarting`, and the loop comes back after a
back-off and does its work again. (The NATS connection is a small fake: the seam is the
`nc_provider` the agent hands the engine; tests/integration/test_workflow_nats.py runs the
real one.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aivos.edge.store import Store
from aivos.edge.supervise import Supervisor
from aivos.edge.workflows import WorkflowEngine, WorkflowSettings
from aivos.edge.workflows import triggers as triggers_module
from aivos.edge.workflows.signatures import SignatureError
from aivos.edge.workflows.triggers import NATS_TASK, ROLLUP_TASK
from tests.fixtures.wait import eventually

WORKFLOW = """
name = "relay"

[trigger]
nats = ["dispute_filed"]

[[steps]]
id = "answer"
kind = "respond"
template = "ok"
"""
ROLLUP_S = 0.05


class _Connection:
    """A connected NATS client as far as the trigger loop uses one."""

    is_connected = True

    def __init__(self) -> None:
        self.subjects: list[str] = []

    async def subscribe(self, subject: str, cb: Any = None) -> None:
        self.subjects.append(subject)


class _FailingOnce:
    """An `nc_provider` whose first call raises (e.g. the uplink mid-teardown)."""

    def __init__(self, nc: _Connection) -> None:
        self.nc = nc
        self.calls = 0

    def __call__(self) -> _Connection:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("injected")
        return self.nc


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "edge") as s:
        yield s


def _engine(tmp_path: Path, store: Store, supervisor: Supervisor, provider: Any) -> WorkflowEngine:
    (tmp_path / "relay.toml").write_text(WORKFLOW)
    settings = WorkflowSettings(
        files=[str(tmp_path / "relay.toml")], site_id="branch-7", nats_retry_s=0.02
    )
    engine = WorkflowEngine(store, settings, nc_provider=provider, supervisor=supervisor)
    engine._triggers._rollup_s = ROLLUP_S
    return engine


async def test_the_nats_trigger_loop_restarts_after_an_exception(
    tmp_path: Path, store: Store
) -> None:
    supervisor = Supervisor(base_s=0.01, cap_s=0.05)
    nc = _Connection()
    provider = _FailingOnce(nc)
    engine = _engine(tmp_path, store, supervisor, provider)
    await engine.start()
    try:
        await asyncio.wait_for(engine.triggers_subscribed.wait(), 10)
        info = supervisor.info(NATS_TASK)
        assert (info.restarts, info.last_error) == (1, "RuntimeError")
        assert supervisor.states()[NATS_TASK] == "running"
        # it came back and subscribed, once: later ticks do not subscribe the same connection
        await eventually(lambda: provider.calls >= 5, timeout=10, what="more loop ticks")
        assert nc.subjects == ["aivos.evt.branch-7.dispute_filed"]
    finally:
        await engine.stop()
    assert supervisor.states() == {NATS_TASK: "stopped", ROLLUP_TASK: "stopped"}


class _SleepFailingOnce:
    """`asyncio` as triggers.py sees it, except that the first sleep of `delay` raises."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float) -> None:
        if delay == self.delay and not self.failed:
            self.failed = True
            raise RuntimeError("injected")
        await asyncio.sleep(delay)


async def test_the_rollup_loop_restarts_after_an_exception(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(triggers_module, "asyncio", _SleepFailingOnce(ROLLUP_S))
    supervisor = Supervisor(base_s=0.01, cap_s=0.05)
    engine = _engine(tmp_path, store, supervisor, None)
    await engine.start()
    try:
        await eventually(
            lambda: supervisor.info(ROLLUP_TASK).restarts == 1, timeout=10, what="a restart"
        )
        assert supervisor.info(ROLLUP_TASK).last_error == "RuntimeError"
        # back and working: a refused webhook is rolled up into an audit row by the loop
        engine._triggers._refuse("corebank", True, SignatureError("unsigned"))

        def rolled_up() -> bool:
            return store.audit_count() == 1

        await eventually(rolled_up, timeout=10, what="the rollup audit row")
        assert supervisor.states() == {ROLLUP_TASK: "running"}
    finally:
        await engine.stop()
    assert store.audit_count() == 1  # nothing left to flush at stop
