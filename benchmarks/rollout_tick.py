"""Rollout controller tick at 10,000 sites: the old full read vs reading only what moves.

Run:  python benchmarks/rollout_tick.py [--sites 10000] [--ticks 15] [--pg-ticks 4]
                                        [--movers 20]
                                        [--engines sqlite,postgres]
                                        [--out benchmarks/results/rollout_tick.json]

Setup, per engine (a SQLite file; a real PostgreSQL server started with the tests' helper
`tests.fixtures.postgres.PostgresServer`, as ``benchmarks/fleet_console.py`` does): N
sites heartbeat bundle v1 into the registry, one rollout of bundle v2 to all of them in
one wave (soak 1 h, so it never completes), and every site put into ``deploying`` with one
SQL UPDATE (the deploy itself is not measured: it is a config put per site, the same in
both controllers). Then, in rounds: `--movers` sites heartbeat the new bundle, and one
controller ticks, alternating the old one and the new one, so both see the same fleet and
the same amount of change (each tick turns its movers healthy; checked after every tick).

* old: `RolloutController` as committed before this change (commit `BASELINE`, loaded from
  git: `git show BASELINE:cloud/fleet/rollout.py`), which loads every site of the rollout
  and reads each deploying/healthy site's heartbeat, bundle events and row;
* new: `aivos.cloud.fleet.rollout.RolloutController` (`Registry.rollout_moves`).

Measured per tick: duration (p50/p95/max), SQL statements, and rows fetched by the
controller (every row a cursor hands back, counted by wrapping the registry's engine).
The sink of desired bundles is an in-memory dict: no tick here deploys anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aivos.cloud.fleet.registry import Registry, open_registry  # noqa: E402
from aivos.cloud.fleet.rollout import RolloutController, start_rollout  # noqa: E402
from aivos.shared.fleet import Decisions, Heartbeat  # noqa: E402

BASELINE = "8210100a4e1474e69ee14b0d836be630305f3d8a"
"""The commit whose controller read every site of a rollout on each tick."""


# -- counting what the controller reads -----------------------------------------------------


class _Counts:
    def __init__(self) -> None:
        self.statements = 0
        self.rows = 0


class _Cursor:
    def __init__(self, cur: Any, counts: _Counts) -> None:
        self._cur, self._counts = cur, counts

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def fetchone(self) -> Any:
        row = self._cur.fetchone()
        self._counts.rows += row is not None
        return row

    def fetchall(self) -> list[Any]:
        rows = list(self._cur.fetchall())
        self._counts.rows += len(rows)
        return rows

    def __iter__(self) -> Iterator[Any]:
        for row in self._cur:
            self._counts.rows += 1
            yield row


class _Conn:
    def __init__(self, conn: Any, counts: _Counts) -> None:
        self._conn, self._counts = conn, counts

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> _Cursor:
        self._counts.statements += 1
        return _Cursor(self._conn.execute(sql, parameters), self._counts)

    def executemany(self, sql: str, parameters: Any) -> object:
        self._counts.statements += 1
        return self._conn.executemany(sql, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class CountingEngine:
    """The registry's engine, counting statements and the rows each cursor hands back."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.counts = _Counts()

    @property
    def dialect(self) -> Any:
        return self.inner.dialect

    @contextmanager
    def tx(self) -> Iterator[_Conn]:
        with self.inner.tx() as conn:
            yield _Conn(conn, self.counts)

    def read(self, fn: Callable[[Any], Any]) -> Any:
        return self.inner.read(lambda conn: fn(_Conn(conn, self.counts)))

    def close(self) -> None:
        self.inner.close()


class MemorySink:
    """Desired bundles in a dict (the benchmark's ticks never deploy)."""

    def __init__(self) -> None:
        self.puts = 0

    async def put(self, site: str | None, data: dict[str, object], *, merge: bool = False) -> int:
        self.puts += 1
        return self.puts


def baseline_controller_class() -> type:
    """`RolloutController` of commit `BASELINE`, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{BASELINE}:cloud/fleet/rollout.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("rollout_baseline")
    sys.modules[module.__name__] = module
    exec(compile(source, f"{BASELINE[:7]}:cloud/fleet/rollout.py", "exec"), module.__dict__)
    return module.RolloutController  # type: ignore[no-any-return]


# -- the run --------------------------------------------------------------------------------


def _hb(site: str, bundle: str) -> Heartbeat:
    return Heartbeat(
        site_id=site,
        agent_version="0.1",
        bundle_version=bundle,
        provider="CPU",
        link_state="up",
        outbox_depth=0,
        job_backlog=0,
        request_rate=1.0,
        decisions=Decisions(1, 0, 0),
        p50_ms=1.0,
        p99_ms=5.0,
        cpu_percent=1.0,
        mem_percent=1.0,
        disk_percent=1.0,
        interval_s=3600.0,  # online for the whole run
    )


def _beat(registry: Registry, sites: Sequence[str], bundle: str) -> None:
    for i in range(0, len(sites), 1000):
        now = time.time()
        registry.ingest_heartbeats([(_hb(s, bundle), now) for s in sites[i : i + 1000]])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _summary(ms: list[float], statements: list[int], rows: list[int]) -> dict[str, Any]:
    return {
        "ticks": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(_pct(ms, 0.95), 1),
        "max_ms": round(max(ms), 1),
        "statements_per_tick": round(statistics.mean(statements), 1),
        "rows_read_per_tick": round(statistics.mean(rows), 1),
    }


async def run_engine(engine: str, db: str | None, work: Path, args: argparse.Namespace) -> dict:
    registry = open_registry(db, work / engine)
    sites = [f"site-{i:05d}" for i in range(args.sites)]
    t0 = time.perf_counter()
    _beat(registry, sites, "v1")
    rid = start_rollout(
        registry, bundle_version="v2", sites=None, canary_percent=100, actor="bench", soak_s=3600
    )
    with registry.engine.tx() as conn:  # every site deploying (setup, see the docstring)
        conn.execute("UPDATE rollout_sites SET status = 'deploying' WHERE rollout_id = ?", (rid,))
    setup_s = time.perf_counter() - t0

    counting = CountingEngine(registry.engine)
    registry.engine = counting  # type: ignore[assignment]
    sink = MemorySink()
    controllers = {
        "old": baseline_controller_class()(registry, sink),
        "new": RolloutController(registry, sink),
    }
    ms: dict[str, list[float]] = {k: [] for k in controllers}
    statements: dict[str, list[int]] = {k: [] for k in controllers}
    rows: dict[str, list[int]] = {k: [] for k in controllers}
    ticks = args.pg_ticks if engine == "postgres" else args.ticks
    order = [name for _ in range(ticks) for name in controllers]
    for n, name in enumerate(order):
        movers = sites[n * args.movers : (n + 1) * args.movers]
        _beat(registry, movers, "v2")
        counting.counts = _Counts()
        start = time.perf_counter()
        await controllers[name].tick()
        ms[name].append((time.perf_counter() - start) * 1000)
        statements[name].append(counting.counts.statements)
        rows[name].append(counting.counts.rows)
        # both controllers do the same work: this tick's movers are healthy, no other site
        view = registry.rollout_view(rid, status="healthy", size=args.sites)
        healthy = {s.site_id for s in view.sites}
        assert set(movers) <= healthy and len(healthy) == (n + 1) * args.movers, name
    registry.engine = counting.inner
    registry.close()
    result = {name: _summary(ms[name], statements[name], rows[name]) for name in controllers}
    return {
        "engine": engine,
        "setup_s": round(setup_s, 1),
        **result,
        "p50_ratio_old_over_new": round(result["old"]["p50_ms"] / result["new"]["p50_ms"], 1),
        "rows_ratio_old_over_new": round(
            result["old"]["rows_read_per_tick"] / max(1.0, result["new"]["rows_read_per_tick"]), 1
        ),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    engines = args.engines.split(",")
    work = Path(tempfile.mkdtemp(prefix="rollout-tick-"))
    pg = pg_root = None
    try:
        results = []
        for engine in engines:
            db = None
            if engine == "postgres":
                from tests.fixtures.postgres import PostgresServer, pg_bindir

                bindir = pg_bindir()
                if bindir is None:
                    raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found")
                pg_root = Path(tempfile.mkdtemp(prefix="rollout-tick-pg-"))
                pg = PostgresServer(bindir, pg_root).init()
                pg.start()
                db = pg.create_db()
            results.append(await run_engine(engine, db, work, args))
            print(json.dumps(results[-1]), flush=True)
    finally:
        if pg is not None:
            pg.stop("fast")
        shutil.rmtree(work, ignore_errors=True)
        if pg_root is not None:
            shutil.rmtree(pg_root, ignore_errors=True)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
        },
        "baseline_commit": BASELINE,
        "sites": args.sites,
        "movers_per_tick": args.movers,
        "engines": results,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sites", type=int, default=10_000)
    p.add_argument("--ticks", type=int, default=15, help="ticks per controller")
    p.add_argument(
        "--pg-ticks", type=int, default=4, help="on PostgreSQL (an old tick takes minutes)"
    )
    p.add_argument("--movers", type=int, default=20, help="sites turning live before each tick")
    p.add_argument("--engines", default="sqlite,postgres")
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "rollout_tick.json"
    )
    args = p.parse_args()
    load = round(os.getloadavg()[0], 1)
    result = asyncio.run(main_async(args))
    result["machine"]["load_avg_1m_at_start"] = load
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
