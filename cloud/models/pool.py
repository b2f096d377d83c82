"""An autoscaled pool of worker processes for one catalogue model.

The supervisor starts ``min_workers`` processes of ``aivos cloud worker --catalogue F
--model NAME``, listens to their `WorkerStats` on ``aivos.poolstats``, and every tick asks
the `Autoscaler` for a size: a new process when it grows, SIGTERM to the newest one when
it shrinks (the worker stops taking requests and finishes those in flight, so shrinking
drops nothing). A process that dies is replaced. The same signals are exported as
Prometheus gauges (`render_metrics`), so KEDA or an HPA can drive the pool size instead.

**A pushed catalogue** (`cloud.models.catalogue_store`, when ``watch_catalogue``): the
supervisor writes it to a file of its own, which the workers it starts from then on read.
When the model's entry changed in what a worker runs (backend, version, limits; not cost
or ``min_budget_ms``, which only the router reads) or whether it serves the default path,
the pool rolls: new workers start on the new catalogue, and the old ones are drained once
all the new ones report (their model is loaded), so the model keeps serving throughout.
When the entry is gone from the catalogue, every worker is drained and none is started
until it comes back. (`cloud.models.pool_set` runs a pool per catalogue entry and starts
and stops whole pools as entries come and go.)

**No orphans.** Each worker is started with ``PR_SET_PDEATHSIG`` (Linux): when its pool
process dies, even by SIGKILL, the kernel sends it SIGTERM and it drains and exits. A pool
given ``parent_pid`` stops its workers and returns from `run` when its own parent goes
away (``os.getppid()`` changes: the parent died and it was re-parented), and one given
``hub_timeout_s`` does so when its NATS connection stays down that long; `exit_reason`
says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aivos.cloud.models.autoscale import Autoscaler, PoolSignals, ScalePolicy
from aivos.cloud.models.catalogue_store import CatalogueWatch
from aivos.cloud.worker.catalogue import Catalogue, ModelEntry, PoolSize, load_catalogue
from aivos.cloud.worker.stats import WorkerStats, decode_stats
from aivos.shared.errors import ConfigError
from aivos.shared.metrics import Registry
from aivos.shared.subjects import POOL_STATS, validate_token

__all__ = ["DRAIN_GRACE_S", "ExitCheck", "WorkerPool", "worker_argv", "serve_metrics"]

log = logging.getLogger(__name__)

# how long a stopping pool lets its workers finish what is in flight before it SIGKILLs
# them; whoever stops a pool process waits at least this long (`aivos up`: aivos.up)
DRAIN_GRACE_S = 30.0


def worker_argv(
    nats_url: str, catalogue: Path, model: str, name: str, stats_interval_s: float
) -> list[str]:
    """The command line of one pool worker process."""
    return [
        sys.executable,
        "-m",
        "aivos",
        "cloud",
        "worker",
        "--nats",
        nats_url,
        "--catalogue",
        str(catalogue),
        "--model",
        model,
        "--name",
        name,
        "--stats-interval",
        str(stats_interval_s),
    ]


def worker_spec(catalogue: Catalogue, model: str) -> tuple[ModelEntry, bool] | None:
    """What a worker of `model` runs from `catalogue` (None: the model is not in it): its
    entry less the router-only fields, and whether it joins the default queue group."""
    entry = catalogue.models.get(model)
    if entry is None:
        return None
    entry = msgspec.structs.replace(entry, cost_per_1k_tokens=0.0, min_budget_ms=0, pool=PoolSize())
    return entry, catalogue.default_model == model and not catalogue.routes_default_path


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` asking the kernel to SIGTERM the child when the process that starts it
    dies (the starting *thread*, strictly: pools spawn from their event loop's thread);
    None where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # it died before the prctl: no signal will come
            os._exit(1)

    return preexec


@dataclass
class ExitCheck:
    """When a supervisor should stop its workers and exit on its own: its parent is gone
    (``os.getppid()`` is no longer `parent_pid`) or NATS has been disconnected for
    `hub_timeout_s` on end. None disables either check."""

    parent_pid: int | None = None
    hub_timeout_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    _down_since: float | None = None

    def reason(self, nc: NATS) -> str | None:
        """Why to stop now, or None."""
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            return f"parent process {self.parent_pid} is gone"
        if self.hub_timeout_s is None or nc.is_connected:
            self._down_since = None
            return None
        now = self.clock()
        if self._down_since is None:
            self._down_since = now
        if now - self._down_since >= self.hub_timeout_s:
            return f"NATS unreachable for {self.hub_timeout_s:g} s"
        return None


@dataclass
class _Child:
    name: str  # the worker's name in its stats and replies: "<pool>-<n>-<model>"
    proc: subprocess.Popen[bytes]
    stopping: bool = False
    generation: int = 0  # the catalogue spec it was started with (see `apply_catalogue`)


@dataclass
class WorkerPool:
    nats_url: str
    catalogue: Path
    model: str
    policy: ScalePolicy
    stats_interval_s: float = 0.5
    tick_s: float = 0.5
    log_dir: Path | None = None
    argv: Callable[[str], list[str]] | None = None  # name -> command (tests, other launchers)
    clock: Callable[[], float] = time.monotonic
    desired: int = 0
    children: list[_Child] = field(default_factory=list)
    stats: dict[str, WorkerStats] = field(default_factory=dict)
    resizes: list[tuple[float, int]] = field(default_factory=list)  # (when, size) history
    watch_catalogue: bool = False  # apply pushed catalogues (`cloud.models.catalogue_store`)
    removed: bool = False  # the model left the catalogue: no workers until it is back
    generation: int = 0  # bumped when the worker spec changes: older children are rolled
    catalogue_version: int = 0
    parent_pid: int | None = None  # exit when our parent changes (it died)
    hub_timeout_s: float | None = None  # exit when NATS stays disconnected this long
    exit_reason: str | None = None  # why `run` returned on its own

    def __post_init__(self) -> None:
        validate_token(self.model, "model")
        self.autoscaler = Autoscaler(self.policy, clock=self.clock)
        self.desired = self.policy.min_workers
        self._seq = itertools.count(1)
        self._seen: dict[str, float] = {}
        self._rejected_seen: dict[str, int] = {}
        self.registry = Registry()
        gauge = self.registry.gauge
        self._g_workers = gauge("aivos_pool_workers", "Worker processes running.")
        self._g_desired = gauge("aivos_pool_desired_workers", "Pool size the autoscaler wants.")
        self._g_queue = gauge("aivos_pool_queue_depth", "Requests waiting for a slot.")
        self._g_inflight = gauge("aivos_pool_in_flight", "Requests accepted, not finished.")
        self._g_p95 = gauge("aivos_pool_p95_ms", "p95 of recent request times (ms).")
        self._c_rejected = self.registry.counter(
            "aivos_pool_saturated_total", "Requests answered Saturated by the pool's workers."
        )
        self.last_signals = PoolSignals(0, 1, 0, 0, 0, 0.0)
        self._spec: tuple[ModelEntry, bool] | None | str = "unknown"  # until a push
        self._pushed_dir: Path | None = None
        self._exit_check = ExitCheck(self.parent_pid, self.hub_timeout_s, self.clock)
        self._preexec = _die_with_parent()

    async def apply_catalogue(self, catalogue: Catalogue, version: int, text: str) -> None:
        """A pushed catalogue (see the module docstring); the next `tick` acts on it."""
        if self._spec == "unknown":  # what the running workers were started with
            self._spec = _spec_of_file(self.catalogue, self.model)
        spec = worker_spec(catalogue, self.model)
        self.catalogue_version = version
        if spec is None:
            if not self.removed:
                log.warning("pool %s: model removed from catalogue v%d", self.model, version)
            self.removed = True
            self._spec = None
            return
        if self._pushed_dir is None:
            self._pushed_dir = Path(tempfile.mkdtemp(prefix=f"aivos-pool-{self.model}-"))
        path = self._pushed_dir / f"catalogue-v{version}.toml"
        path.write_text(text, encoding="utf-8")
        self.catalogue = path  # the workers started from now on
        if self.removed:
            self.removed = False
            self.desired = self.policy.min_workers
        if spec != self._spec:
            self.generation += 1
            log.info("pool %s: catalogue v%d, rolling its workers", self.model, version)
        self._spec = spec

    # -- processes ------------------------------------------------------------------------

    def _spawn(self) -> _Child:
        base = f"{self.model}-pool-{next(self._seq)}"
        argv = (
            self.argv(base)
            if self.argv
            else worker_argv(self.nats_url, self.catalogue, self.model, base, self.stats_interval_s)
        )
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with (self.log_dir / f"{base}.log").open("ab") as out:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=self._preexec
                )
        else:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                preexec_fn=self._preexec,
            )
        child = _Child(name=f"{base}-{self.model}", proc=proc, generation=self.generation)
        self.children.append(child)
        log.info("pool %s: started %s (pid %d)", self.model, child.name, proc.pid)
        return child

    def _stop(self, child: _Child) -> None:
        child.stopping = True
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
        log.info("pool %s: draining %s", self.model, child.name)

    @property
    def live(self) -> list[_Child]:
        return [c for c in self.children if not c.stopping and c.proc.poll() is None]

    def _reap(self) -> None:
        for child in list(self.children):
            if child.proc.poll() is not None:
                self.children.remove(child)
                self.stats.pop(child.name, None)
                if not child.stopping:
                    log.warning(
                        "pool %s: %s exited (%s)", self.model, child.name, child.proc.returncode
                    )

    # -- signals --------------------------------------------------------------------------

    async def _on_stats(self, msg: Msg) -> None:
        try:
            stats = decode_stats(msg.data)
        except Exception:
            return
        if stats.model == self.model:
            self.stats[stats.worker] = stats
            self._seen[stats.worker] = self.clock()

    def signals(self) -> PoolSignals:
        names = {c.name for c in self.live}
        fresh = self.clock() - 5 * max(self.stats_interval_s, self.tick_s)
        current = [
            s
            for w, s in self.stats.items()
            if w in names and not s.stopping and self._seen.get(w, 0) >= fresh
        ]
        rejected = 0
        for s in current:
            rejected += max(0, s.rejected - self._rejected_seen.get(s.worker, 0))
            self._rejected_seen[s.worker] = s.rejected
        return PoolSignals(
            workers=len(current),
            capacity=max((s.capacity for s in current), default=1),
            in_flight=sum(s.in_flight for s in current),
            waiting=sum(s.waiting for s in current),
            rejected=rejected,
            p95_ms=max((s.p95_ms for s in current), default=0.0),
        )

    def render_metrics(self) -> str:
        s = self.last_signals
        labels = {"model": self.model}
        self._g_workers.set(len(self.live), **labels)
        self._g_desired.set(self.desired, **labels)
        self._g_queue.set(s.waiting, **labels)
        self._g_inflight.set(s.in_flight, **labels)
        self._g_p95.set(s.p95_ms, **labels)
        return self.registry.render()

    # -- the loop -------------------------------------------------------------------------

    def tick(self) -> None:
        """One supervision step: reap, decide, then start or drain processes."""
        self._reap()
        if self.removed:
            for child in self.live:
                self._stop(child)
            return
        signals = self.signals()
        self.last_signals = signals
        if signals.rejected:
            self._c_rejected.inc(signals.rejected, model=self.model)
        if self._roll():
            return
        # only decide on a pool whose workers all report (new ones load their model first)
        if signals.workers >= len(self.live):
            desired = self.autoscaler.decide(self.desired, signals)
            if desired != self.desired:
                log.info(
                    "pool %s: %d -> %d workers (%s)", self.model, self.desired, desired, signals
                )
                self.desired = desired
                self.resizes.append((self.clock(), desired))
        while len(self.live) < self.desired:
            self._spawn()
        while len(self.live) > self.desired:
            self._stop(self.live[-1])

    def _roll(self) -> bool:
        """Replace workers started on an older spec: start as many on the new one, drain
        the old ones once every new one reports. True while a roll is under way."""
        old = [c for c in self.live if c.generation != self.generation]
        if not old:
            return False
        new = [c for c in self.live if c.generation == self.generation]
        while len(new) < self.desired:
            new.append(self._spawn())
        if all(c.name in self.stats for c in new):
            for child in old:
                self._stop(child)
            return False
        return True

    async def run(self, nc: NATS, stop: asyncio.Event, grace_s: float = DRAIN_GRACE_S) -> None:
        sub = await nc.subscribe(POOL_STATS, cb=self._on_stats)
        watch = CatalogueWatch(self.apply_catalogue)
        if self.watch_catalogue:
            watch.start(nc)
        try:
            while not stop.is_set():
                self.exit_reason = self._exit_check.reason(nc)
                if self.exit_reason is not None:
                    log.error("pool %s: %s; stopping its workers", self.model, self.exit_reason)
                    break
                self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.tick_s)
        finally:
            await watch.stop()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            await self.shutdown(grace_s)

    async def shutdown(self, grace_s: float = DRAIN_GRACE_S) -> None:
        for child in self.children:
            if child.proc.poll() is None and not child.stopping:
                self._stop(child)
        deadline = time.monotonic() + grace_s
        while any(c.proc.poll() is None for c in self.children) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()
        self.children.clear()
        if self._pushed_dir is not None:
            shutil.rmtree(self._pushed_dir, ignore_errors=True)


def _spec_of_file(path: Path, model: str) -> tuple[ModelEntry, bool] | None:
    try:
        return worker_spec(load_catalogue(path), model)
    except ConfigError:  # not a catalogue the workers could have started from
        return None


async def serve_metrics(render: Callable[[], str], host: str, port: int) -> asyncio.Server:
    """A minimal HTTP server answering every GET with the Prometheus text of `render()`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            if line.startswith(b"GET /metrics"):
                body, status = render().encode(), "200 OK"
            else:
                body, status = b"not found\n", "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
