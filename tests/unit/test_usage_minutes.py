"""The per-minute usage (the models page's charts) with several routers on one file: each
router keeps its own row of a minute, readers merge them (counts add up, the p95 is the
routers' p95s weighted by their requests); a file written before the router column is
migrated with its rows kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aivos.cloud.models.report import models_report
from aivos.cloud.models.usage import UsageLedger, read_minutes
from aivos.cloud.worker.catalogue import parse_catalogue

CATALOGUE = """
[models.smol]
backend = "llamacpp"
version = "v1"
cost_per_1k_tokens = 1.0
"""

NOW = 1_800_000_000.0  # a fixed clock: every request in one minute
MINUTE = int(NOW // 60)


def _answer(ledger: UsageLedger, n: int, latency_ms: float, fallback: bool = False) -> None:
    for _ in range(n):
        ledger.record("b1", "smol", "v1", 3, 7, fallback=fallback, latency_ms=latency_ms)


def test_two_routers_in_one_minute_merge_counts_and_weigh_their_p95s(tmp_path: Path) -> None:
    cat = parse_catalogue(CATALOGUE)
    db = tmp_path / "model_usage.sqlite"
    fast = UsageLedger(cat, db, clock=lambda: NOW)
    slow = UsageLedger(cat, db, clock=lambda: NOW)
    assert fast.router != slow.router  # a router's rows are its own without configuration
    _answer(fast, 30, 100.0)
    _answer(slow, 10, 500.0, fallback=True)
    fast.flush()
    slow.flush()
    _answer(fast, 10, 100.0)  # a later flush of the same minute replaces fast's p95 only
    fast.flush()
    (row,) = read_minutes(db, MINUTE)
    assert (row.minute, row.model) == (MINUTE, "smol")
    assert (row.requests, row.fallback, row.tokens) == (50, 10, 500)
    assert row.cost == pytest.approx(0.5)
    # 40 answers at 100 ms (fast), 10 at 500 ms (slow): (40 x 100 + 10 x 500) / 50
    assert row.p95_ms == pytest.approx(180.0)
    # the last flush alone (100 ms) or the max (500 ms) would be either router's view
    fast.close()
    slow.close()
    (usage,) = models_report(cat, db, now=NOW)
    assert usage.p95_ms == pytest.approx(180.0)
    assert [m.requests for m in usage.minutes] == [50]


_OLD_MINUTES = """
CREATE TABLE model_minutes (
    minute INTEGER NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    fallback INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    p95_ms REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, model)
)
"""


def test_a_file_from_before_the_router_column_is_migrated_with_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "model_usage.sqlite"
    conn = sqlite3.connect(db)
    conn.execute(_OLD_MINUTES)
    conn.execute("INSERT INTO model_minutes VALUES (?, 'smol', 10, 0, 100, 0.1, 200.0)", (MINUTE,))
    conn.commit()
    conn.close()
    cat = parse_catalogue(CATALOGUE)
    ledger = UsageLedger(cat, db, clock=lambda: NOW)
    again = UsageLedger(cat, db, clock=lambda: NOW)  # a second router: nothing left to migrate
    _answer(ledger, 10, 400.0)
    ledger.close()
    again.close()
    (row,) = read_minutes(db, MINUTE)
    assert (row.requests, row.tokens) == (20, 200)
    assert row.p95_ms == pytest.approx(300.0)  # the old row's 200 ms and the new 400 ms
    conn = sqlite3.connect(db)
    routers = sorted(r for (r,) in conn.execute("SELECT router FROM model_minutes"))
    tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    conn.close()
    assert routers == ["", ledger.router]
    assert "model_minutes_v1" not in tables
