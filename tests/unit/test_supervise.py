"""Issue 12, "background work is supervised": a task that raises comes back after a capped,
jittered back-off; its state and restarts are visible; returning or stopping ends it."""

from __future__ import annotations

import asyncio

import pytest

from aivos.edge.supervise import Supervisor, backoff
from aivos.shared.metrics import Registry
from tests.fixtures.wait import eventually


class Flaky:
    """Raises on its first `failures` runs, then runs until cancelled; counts its starts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts = 0
        self.gate = asyncio.Event()  # set: the failing runs may fail

    async def run(self) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            await self.gate.wait()
            raise RuntimeError("injected")
        await asyncio.Event().wait()  # a healthy loop: runs until cancelled


async def test_a_task_that_raises_is_restarted_and_visible_meanwhile() -> None:
    registry = Registry()
    sup = Supervisor(registry=registry, base_s=0.01, cap_s=0.05)
    task = Flaky(failures=3)
    sup.start("jobs", task.run)
    await eventually(lambda: task.starts == 1, timeout=5, what="first start")
    assert sup.states() == {"jobs": "running"}
    task.gate.set()
    await eventually(lambda: task.starts == 4, timeout=10, what="three restarts")
    await eventually(lambda: sup.states() == {"jobs": "running"}, timeout=5, what="running")
    info = sup.info("jobs")
    assert info.restarts == 3 and info.last_error == "RuntimeError"
    text = registry.render()
    assert 'aivos_task_restarts_total{task="jobs"} 3' in text
    assert 'aivos_task_up{task="jobs"} 1' in text
    await sup.stop_all()
    assert sup.states() == {"jobs": "stopped"}


async def test_a_restarting_task_is_reported_down() -> None:
    registry = Registry()
    sup = Supervisor(registry=registry, base_s=30.0, cap_s=30.0)  # a long back-off
    task = Flaky(failures=1)
    task.gate.set()
    sup.start("sync", task.run)
    await eventually(lambda: sup.states() == {"sync": "restarting"}, timeout=5, what="down")
    assert [t.name for t in sup.down()] == ["sync"]
    assert 'aivos_task_up{task="sync"} 0' in registry.render()
    await sup.stop("sync")  # stopping during the back-off ends it at once
    assert sup.states() == {"sync": "stopped"} and sup.down() == []


async def test_a_task_that_returns_is_not_restarted() -> None:
    sup = Supervisor(base_s=0.01)
    runs: list[int] = []

    async def once() -> None:
        runs.append(1)

    sup.start("resume", once)
    await eventually(lambda: sup.states() == {"resume": "stopped"}, timeout=5, what="done")
    assert runs == [1]
    sup.start("resume", once)  # a finished task can be started again
    await eventually(lambda: runs == [1, 1], timeout=5, what="second run")


async def test_starting_a_running_task_again_changes_nothing() -> None:
    sup = Supervisor()
    task = Flaky(failures=0)
    sup.start("x", task.run)
    sup.start("x", task.run)
    await eventually(lambda: task.starts == 1, timeout=5, what="start")
    assert task.starts == 1 and sup.states() == {"x": "running"}
    await sup.stop_all()


@pytest.mark.parametrize("failures", [1, 2, 5, 10, 50])
def test_backoff_doubles_is_capped_and_jittered(failures: int) -> None:
    ceiling = min(2.0, 0.1 * 2 ** (failures - 1))
    delays = {backoff(failures, 0.1, 2.0) for _ in range(50)}
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(delays) > 1  # jitter: restarts of many tasks do not line up
