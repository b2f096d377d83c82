"""A pool applying a pushed catalogue (real child processes, no NATS: the supervisor's
decisions): a cost-only change keeps its workers; a new version rolls them, the old ones
drained only once the new ones report; a removed entry drains the pool and starts nothing
until the entry is back; new workers read the pushed catalogue, not the bootstrap file."""

from __future__ import annotations

import sys
from pathlib import Path

from aivos.cloud.models.autoscale import ScalePolicy
from aivos.cloud.models.pool import WorkerPool
from aivos.cloud.worker.catalogue import parse_catalogue
from aivos.cloud.worker.stats import WorkerStats

V1 = """
[models.smol]
backend = "llamacpp"
version = "a"
cost_per_1k_tokens = 0.1
[models.other]
backend = "llamacpp"
version = "o"
"""
COST_ONLY = V1.replace("0.1", "0.5")
NEW_VERSION = COST_ONLY.replace('version = "a"', 'version = "b"')
WITHOUT_SMOL = """
[models.other]
backend = "llamacpp"
version = "o"
"""


def _report(pool: WorkerPool) -> None:
    """Every live child reports stats (its model loaded)."""
    for child in pool.live:
        pool.stats[child.name] = WorkerStats(
            model="smol",
            worker=child.name,
            in_flight=0,
            waiting=0,
            capacity=2,
            served=0,
            rejected=0,
            p95_ms=0.0,
        )
        pool._seen[child.name] = pool.clock()


async def test_pool_rolls_drains_and_restores_on_pushed_catalogues(tmp_path: Path) -> None:
    bootstrap = tmp_path / "catalogue.toml"
    bootstrap.write_text(V1)
    pool = WorkerPool(
        "nats://unused",
        bootstrap,
        "smol",
        ScalePolicy(min_workers=1, max_workers=2),
        argv=lambda name: [sys.executable, "-c", "import time; time.sleep(120)"],
    )
    try:
        pool.tick()
        first = pool.live
        assert len(first) == 1
        _report(pool)

        await pool.apply_catalogue(parse_catalogue(COST_ONLY), 1, COST_ONLY)
        pool.tick()
        assert pool.live == first  # the router's business: no restart
        assert pool.catalogue != bootstrap and pool.catalogue.read_text() == COST_ONLY

        await pool.apply_catalogue(parse_catalogue(NEW_VERSION), 2, NEW_VERSION)
        pool.tick()
        assert len(pool.live) == 2  # the new worker starts next to the old one...
        assert first[0] in pool.live  # ...which serves until the new one reports
        pool.tick()
        assert first[0] in pool.live
        _report(pool)
        pool.tick()
        assert first[0] not in pool.live and len(pool.live) == 1
        assert pool.catalogue.read_text() == NEW_VERSION

        await pool.apply_catalogue(parse_catalogue(WITHOUT_SMOL), 3, WITHOUT_SMOL)
        for _ in range(3):
            pool.tick()
        assert pool.live == [] and pool.removed

        await pool.apply_catalogue(parse_catalogue(NEW_VERSION), 4, NEW_VERSION)
        pool.tick()
        assert len(pool.live) == 1 and not pool.removed
    finally:
        await pool.shutdown(grace_s=5)
    assert pool.children == []
