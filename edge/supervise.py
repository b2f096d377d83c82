"""Long-running background tasks, kept alive: a task that raises is restarted after a capped
exponential back-off with jitter; its state is what `/readyz` and the metrics show.

    supervisor = Supervisor(registry=metrics.registry)
    supervisor.start("escalations", runner.run)     # a coroutine function, called per start
    supervisor.states()                             # {"escalations": "running"}
    await supervisor.stop("escalations")            # or: await supervisor.stop_all()

States: `running`; `restarting` (it raised; waiting out its back-off, then called again);
`stopped` (it returned, or was stopped). A task that returns is done and not restarted, so
a loop ends by returning (e.g. after its own `stop()`); cancellation is never a failure.
The back-off grows per consecutive failure (`base_s`, doubling, capped at `cap_s`, each
delay drawn from [d/2, d]) and starts over once a run has stayed up `healthy_after_s`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
from collections.abc import Awaitable, Callable

import msgspec

from aivos.shared.metrics import Registry

__all__ = ["Supervisor", "TaskInfo", "backoff"]

log = logging.getLogger(__name__)

Factory = Callable[[], Awaitable[object]]


class TaskInfo(msgspec.Struct, kw_only=True):
    """One supervised task as readiness reports it."""

    name: str
    state: str = "running"  # running | restarting | stopped
    restarts: int = 0
    last_error: str | None = None  # the exception type of the last failure


def backoff(failures: int, base_s: float, cap_s: float) -> float:
    """Delay before restart number `failures` (1-based): doubling from `base_s`, capped at
    `cap_s`, with jitter (uniform in [d/2, d]) so restarts of many tasks do not align."""
    ceiling = min(cap_s, base_s * (2 ** min(max(failures - 1, 0), 30)))
    return random.uniform(ceiling / 2, ceiling)


class Supervisor:
    def __init__(
        self,
        *,
        registry: Registry | None = None,
        base_s: float = 0.2,
        cap_s: float = 30.0,
        healthy_after_s: float = 60.0,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.healthy_after_s = healthy_after_s
        self._info: dict[str, TaskInfo] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        registry = registry or Registry()
        self._restarts = registry.counter(
            "aivos_task_restarts_total", "Background task failures, each followed by a restart."
        )
        self._up = registry.gauge(
            "aivos_task_up", "1 while a background task runs, 0 while it waits to restart."
        )

    def start(self, name: str, factory: Factory) -> None:
        """Run `factory()` under supervision as task `name` (no-op if it already runs)."""
        task = self._tasks.get(name)
        if task is not None and not task.done():
            return
        self._info[name] = TaskInfo(name=name)
        self._tasks[name] = asyncio.create_task(self._keep(name, factory), name=f"aivos-{name}")

    def states(self) -> dict[str, str]:
        return {name: info.state for name, info in sorted(self._info.items())}

    def info(self, name: str) -> TaskInfo:
        return self._info[name]

    def down(self) -> list[TaskInfo]:
        """Tasks waiting to restart after a failure."""
        return [i for _, i in sorted(self._info.items()) if i.state == "restarting"]

    async def stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if name in self._info:
            self._set(self._info[name], "stopped")

    async def stop_all(self) -> None:
        for name in list(self._tasks):
            await self.stop(name)

    def _set(self, info: TaskInfo, state: str) -> None:
        info.state = state
        self._up.set(1.0 if state == "running" else 0.0, task=info.name)

    async def _keep(self, name: str, factory: Factory) -> None:
        info = self._info[name]
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            self._set(info, "running")
            started = loop.time()
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if loop.time() - started >= self.healthy_after_s:
                    failures = 0
                failures += 1
                info.restarts += 1
                info.last_error = type(exc).__name__
                self._restarts.inc(task=name)
                self._set(info, "restarting")
                delay = backoff(failures, self.base_s, self.cap_s)
                # the frames, not the message: an exception's text may carry request data
                log.error(
                    "background task %s failed (%s); restarting in %.2fs\n%s",
                    name,
                    info.last_error,
                    delay,
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
                await asyncio.sleep(delay)
                continue
            self._set(info, "stopped")
            return
