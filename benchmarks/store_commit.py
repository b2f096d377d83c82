"""Durable audit appends per second: group commit (the store's writer) vs one commit per row.

Both sides do the same work: a hash-chained audit row plus its outbox record, committed with
`synchronous=FULL` in WAL mode. The baseline commits each row on its own (what a handler that
writes its audit row with plain sqlite3 does); the store commits concurrent rows together.

    python benchmarks/store_commit.py [--rows 5000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from aivos.edge.store import AuditRecord, Store
from aivos.edge.store import audit as audit_mod
from aivos.edge.store.db import db_path, open_writer
from aivos.edge.store.migrations import apply
from aivos.edge.store.outbox import Outbox


def _record(prefix: str, i: int) -> AuditRecord:
    return AuditRecord(
        id=f"{prefix}-{i}",
        intent="card_declined",
        confidence=0.93,
        decision="local",
        model_version="bench",
        latency_ms=1.7,
        pii_counts={"EMAIL": 1},
        trace_id="0" * 32,
    )


def baseline(data_dir: Path, rows: int) -> float:
    conn = open_writer(db_path(data_dir))
    apply(conn)
    outbox = Outbox(quota=10**9)
    start = time.perf_counter()
    for i in range(rows):
        conn.execute("BEGIN IMMEDIATE")
        row = audit_mod.append(conn, _record("base", i))
        outbox.enqueue(conn, "audit", row, record_id=f"audit-{row.id}")
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


async def grouped(data_dir: Path, rows: int, concurrency: int) -> tuple[float, float]:
    store = Store.open(data_dir, outbox_quota=10**9)
    per_worker = rows // concurrency

    async def worker(w: int) -> None:
        for i in range(per_worker):
            await store.append_audit(_record(f"g{w}", i))

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - start
    stats = store.writer_stats
    mean_batch = stats.ops / max(1, stats.commits)
    assert store.verify_audit().ok
    store.close()
    return per_worker * concurrency / elapsed, mean_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        base = baseline(Path(a), args.rows)
        group, mean_batch = asyncio.run(grouped(Path(b), args.rows, args.concurrency))
    print(f"one commit per row (synchronous=FULL): {base:10,.0f} rows/s")
    print(
        f"group commit, {args.concurrency} concurrent callers:   {group:10,.0f} rows/s "
        f"(mean batch {mean_batch:.1f})"
    )
    print(f"ratio: {group / base:.1f}x")


if __name__ == "__main__":
    main()
