"""Every catalogue entry's pool in one supervisor: ``aivos cloud workers`` without
``--model``, what `aivos up` runs.

It starts a `WorkerPool` per entry of its bootstrap catalogue file and watches the pushed
catalogue (`cloud.models.catalogue_store`). On each newer one it hands the catalogue to
every pool (a changed entry rolls that pool's workers, `cloud.models.pool`), starts a pool
for each entry new to the catalogue, and drains and stops the pool of each entry gone
from it. A pool's size comes from its entry (``pool = { min = N, max = M }``) or, where
the entry says nothing, from the supervisor's ``--min/--max``; a pushed change of the
bounds applies to the running pool (the autoscaler clamps to them at its next tick).

Like a single pool, the set stops every pool (and so every worker) and returns when its
parent goes away or the hub stays unreachable past ``hub_timeout_s``; `exit_reason` says
why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS

from aivos.cloud.models.autoscale import ScalePolicy
from aivos.cloud.models.catalogue_store import CatalogueWatch
from aivos.cloud.models.pool import DRAIN_GRACE_S, ExitCheck, WorkerPool
from aivos.cloud.worker.catalogue import Catalogue, ModelEntry, load_catalogue

__all__ = ["PoolSet", "entry_policy"]

log = logging.getLogger(__name__)


def entry_policy(defaults: ScalePolicy, entry: ModelEntry) -> ScalePolicy:
    """`defaults` with the entry's pool bounds where it sets them."""
    lo, hi = entry.pool.min, entry.pool.max
    if lo is None:
        lo = defaults.min_workers if hi is None else min(defaults.min_workers, hi)
    if hi is None:
        hi = max(defaults.max_workers, lo)
    return msgspec.structs.replace(defaults, min_workers=lo, max_workers=hi).validate()


@dataclass
class _Running:
    pool: WorkerPool
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class PoolSet:
    nats_url: str
    catalogue: Path  # the bootstrap file
    defaults: ScalePolicy
    stats_interval_s: float = 0.5
    tick_s: float = 0.5
    grace_s: float = DRAIN_GRACE_S
    log_dir: Path | None = None
    watch_catalogue: bool = True
    watch_retry_s: float = 2.0
    parent_pid: int | None = None
    hub_timeout_s: float | None = None
    pools: dict[str, _Running] = field(default_factory=dict)
    catalogue_version: int = 0
    exit_reason: str | None = None

    def __post_init__(self) -> None:
        self._retiring: list[_Running] = []
        self._dir: Path | None = None
        self._nc: NATS | None = None
        # the pools' own exit checks stay off: the set decides for all of them
        self._exit_check = ExitCheck(self.parent_pid, self.hub_timeout_s)

    def _start(self, name: str, entry: ModelEntry, catalogue: Path, version: int) -> None:
        assert self._nc is not None
        pool = WorkerPool(
            self.nats_url,
            catalogue,
            name,
            entry_policy(self.defaults, entry),
            stats_interval_s=self.stats_interval_s,
            tick_s=self.tick_s,
            log_dir=self.log_dir,
            catalogue_version=version,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(pool.run(self._nc, stop, grace_s=self.grace_s))
        self.pools[name] = _Running(pool, stop, task)
        log.info("pool set: started the pool of %s (%s)", name, pool.policy)

    def _retire(self, name: str, why: str) -> None:
        running = self.pools.pop(name)
        running.stop.set()  # its run() drains and stops its workers on the way out
        self._retiring.append(running)
        log.info("pool set: %s, stopping the pool of %s", why, name)

    async def apply_catalogue(self, catalogue: Catalogue, version: int, text: str) -> None:
        """A pushed catalogue: roll, resize, start and stop pools (module docstring)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="aivos-pools-"))
        path = self._dir / f"catalogue-v{version}.toml"
        path.write_text(text, encoding="utf-8")
        self.catalogue_version = version
        for name in [n for n in self.pools if n not in catalogue.models]:
            self._retire(name, f"{name} left the catalogue (v{version})")
        for name, entry in catalogue.models.items():
            running = self.pools.get(name)
            if running is None:
                self._start(name, entry, path, version)
                continue
            await running.pool.apply_catalogue(catalogue, version, text)
            policy = entry_policy(self.defaults, entry)
            if policy != running.pool.policy:
                log.info("pool set: %s resized to %s", name, policy)
                running.pool.policy = policy
                running.pool.autoscaler.policy = policy

    async def run(self, nc: NATS, stop: asyncio.Event) -> None:
        self._nc = nc
        for name, entry in load_catalogue(self.catalogue).models.items():
            self._start(name, entry, self.catalogue, 0)
        watch = CatalogueWatch(self.apply_catalogue, retry_s=self.watch_retry_s)
        if self.watch_catalogue:
            watch.start(nc)
        try:
            while not stop.is_set():
                self.exit_reason = self._exit_check.reason(nc)
                if self.exit_reason is not None:
                    log.error("pool set: %s; stopping every pool", self.exit_reason)
                    break
                await self._reap()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.tick_s)
        finally:
            await watch.stop()
            for name in list(self.pools):
                self._retire(name, "shutting down")
            await self._reap(wait=True)
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    async def _reap(self, wait: bool = False) -> None:
        """Forget retired pools that are done; a pool whose task failed is logged."""
        if wait and self._retiring:
            await asyncio.gather(*(r.task for r in self._retiring), return_exceptions=True)
        for running in list(self._retiring):
            if running.task.done():
                self._retiring.remove(running)
        for name, running in list(self.pools.items()):
            if running.task.done():  # crashed: report it, and start it again next push
                exc = None if running.task.cancelled() else running.task.exception()
                log.error("pool set: the pool of %s stopped: %r", name, exc)
                del self.pools[name]
