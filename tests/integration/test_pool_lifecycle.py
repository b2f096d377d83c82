"""Pools as the set of the catalogue's entries, and pools that never outlive what they
serve. Real `aivos cloud workers` processes and their real worker processes over a real
nats-server; workers use an `openai` backend pointing nowhere (they start in a second and
need no model file: nothing here sends them a request).

- Without ``--model`` (what `aivos up` runs) the supervisor starts a pool for an entry a
  pushed catalogue adds (sized by the entry's ``pool``), and drains and stops the pool of an
  entry a later push removes.
- A pool whose parent is SIGKILLed stops its workers and exits; a worker whose pool is
  SIGKILLed exits (PR_SET_PDEATHSIG); a pool whose hub stays down past ``--hub-timeout``
  stops its workers and exits with an error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from aivos.cloud.models.catalogue_store import CatalogueStore
from aivos.cloud.worker.stats import decode_stats
from aivos.shared.natsconf import NatsServer
from aivos.shared.subjects import HUB_DOMAIN, POOL_STATS
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.slow


def _entry(name: str, pool: str = "") -> str:
    return f"""
[models.{name}]
backend = "openai"
version = "{name}-1"
url = "http://127.0.0.1:9/v1"
{pool}
"""


def _alive(pid: int) -> bool:
    """Running (a zombie left for a reaper that does not reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _gone(pid: int) -> Callable[[], bool]:
    return lambda: not _alive(pid)


def _workers(pid: int) -> dict[int, str]:
    """The live worker processes `pid` started: pid -> the catalogue model it serves."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return {}
    out = {}
    for kid in map(int, kids):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            argv = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
            if b"worker" in argv and b"--model" in argv and _alive(kid):
                out[kid] = argv[argv.index(b"--model") + 1].decode()
    return out


def _models(pid: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for model in _workers(pid).values():
        counts[model] = counts.get(model, 0) + 1
    return counts


def _pool_argv(hub: NatsServer, catalogue: Path, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "aivos", "cloud", "workers", "--nats", hub.url),
        *("--catalogue", str(catalogue), *extra),
    ]


@pytest.fixture
def spawned() -> Iterator[Callable[[list[str], Path], subprocess.Popen[bytes]]]:
    """Start processes in their own process group; teardown kills each whole group (a
    pool's workers are in it), whatever the test left running."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def test_pools_follow_the_entries_of_pushed_catalogues(
    nats_hub_factory: Callable[[], NatsServer],
    spawned: Callable[[list[str], Path], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    hub = nats_hub_factory()
    path = tmp_path / "catalogue.toml"
    path.write_text(_entry("alpha"))
    nc = await nats.connect(hub.url)
    reporting: dict[str, set[str]] = {}

    async def on_stats(msg: Msg) -> None:
        stats = decode_stats(msg.data)
        if not stats.stopping:
            reporting.setdefault(stats.model, set()).add(stats.worker)

    await nc.subscribe(POOL_STATS, cb=on_stats)
    pools = spawned(_pool_argv(hub, path, "--max", "3"), tmp_path / "pools.log")
    try:
        await eventually(lambda: _models(pools.pid) == {"alpha": 1}, timeout=60, what="alpha")
        store = await CatalogueStore.open(nc.jetstream(domain=HUB_DOMAIN))
        # a new entry with its own pool size: its pool starts, at that size
        await store.push(_entry("alpha") + _entry("beta", "pool = { min = 2, max = 2 }"))
        await eventually(
            lambda: _models(pools.pid) == {"alpha": 1, "beta": 2}, timeout=90, what="beta's pool"
        )
        await eventually(lambda: len(reporting.get("beta", ())) == 2, timeout=60)
        # alpha gone from the catalogue: its pool drains and stops, beta's keeps running
        await store.push(_entry("beta", "pool = { min = 2, max = 2 }"))
        await eventually(
            lambda: _models(pools.pid) == {"beta": 2}, timeout=90, what="alpha's pool stopped"
        )
        assert pools.poll() is None
        pools.send_signal(signal.SIGTERM)
        assert pools.wait(timeout=90) == 0
    finally:
        await nc.close()
    log = (tmp_path / "pools.log").read_text()
    assert "alpha left the catalogue" in log and "Traceback" not in log


async def test_a_pool_stops_its_workers_when_its_parent_dies(
    nats_hub_factory: Callable[[], NatsServer],
    spawned: Callable[[list[str], Path], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    hub = nats_hub_factory()
    path = tmp_path / "catalogue.toml"
    path.write_text(_entry("alpha"))
    # a parent that starts the pool and is then SIGKILLed, as a test runner or `aivos up`
    launcher = (
        "import subprocess, sys, time; p = subprocess.Popen(sys.argv[1:]); "
        "print(p.pid, flush=True); time.sleep(3600)"
    )
    argv = [sys.executable, "-c", launcher, *_pool_argv(hub, path, "--model", "alpha")]
    parent = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert parent.stdout is not None
        pool = int(parent.stdout.readline())
        workers = await eventually(lambda: _workers(pool), timeout=60, what="a worker")
        parent.kill()
        parent.wait()
        await eventually(lambda: not _alive(pool), timeout=60, what="the pool gone")
        for worker in workers:
            await eventually(_gone(worker), timeout=60, what="its worker gone")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # the pool and worker too, if they stayed
        parent.wait()


async def test_a_worker_exits_when_its_pool_is_killed(
    nats_hub_factory: Callable[[], NatsServer],
    spawned: Callable[[list[str], Path], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    hub = nats_hub_factory()
    path = tmp_path / "catalogue.toml"
    path.write_text(_entry("alpha"))
    pool = spawned(_pool_argv(hub, path, "--model", "alpha"), tmp_path / "pool.log")
    workers = await eventually(lambda: _workers(pool.pid), timeout=60, what="a worker")
    pool.kill()  # SIGKILL: no chance to stop anything itself
    pool.wait()
    for worker in workers:
        await eventually(_gone(worker), timeout=60, what="its worker gone")


async def test_a_pool_whose_hub_stays_down_stops_and_exits(
    nats_hub_factory: Callable[[], NatsServer],
    spawned: Callable[[list[str], Path], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    hub = nats_hub_factory()
    path = tmp_path / "catalogue.toml"
    path.write_text(_entry("alpha"))
    argv = _pool_argv(hub, path, "--model", "alpha", "--hub-timeout", "2")
    pool = spawned(argv, tmp_path / "pool.log")
    workers = await eventually(lambda: _workers(pool.pid), timeout=60, what="a worker")
    hub.kill()
    assert pool.wait(timeout=120) == 1
    assert "NATS unreachable for 2 s" in (tmp_path / "pool.log").read_text()
    for worker in workers:
        assert not _alive(worker)  # stopped before the pool exited
