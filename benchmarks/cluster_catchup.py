"""Ingest catch-up from a 3-node hub cluster: records/s into SQLite (the baseline) and into
PostgreSQL with one and with two ingest replicas, same backlog, same run.

Run:  python benchmarks/cluster_catchup.py [--n 20000] [--batch 1000] [--out FILE]

Setup (all real, on loopback): a 3-node routed nats-server cluster with ``AIVOS_SYNC`` at
R3, a PostgreSQL server (initdb into a temp dir, `tests/fixtures/postgres.py`). `--n`
records (about 330 bytes each, from 20 sites, published as site drainers do, with
``Nats-Msg-Id``) wait in the stream. Then, per scenario, a fresh durable consumer and a
fresh database, and `aivos cloud ingest` processes (the CLI, as deployed) are started;
the store's row count is polled until it holds every record. Reported: the steady rate
(from the first 10 % of the records stored to the last, so process start-up is left
out), the time from process start to the last record, and that the store holds each
record once. Results go to benchmarks/results/cluster_catchup.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.ingest import CloudStore  # noqa: E402
from aivos.shared.natsconf.server import start_local_cluster  # noqa: E402
from aivos.shared.syncwire import SyncEnvelope, encode_envelope, ensure_sync_stream, msg_id  # noqa: E402
from tests.fixtures.postgres import PostgresServer, pg_bindir  # noqa: E402

SITES = 20


def _envelope(site: str, n: int) -> SyncEnvelope:
    return SyncEnvelope(
        id=f"audit-{n:07d}",
        site=site,
        data_class="audit",
        kind="decision",
        seq=n,
        created_at="2026-01-01T00:00:00Z",
        payload={
            "intent": "card_declined",
            "confidence": 0.93,
            "decision": "local",
            "model_version": "minilm-int8-1",
            "latency_ms": 3.2,
            "pii_counts": {"EMAIL": 1},
            "detail": {"route": "local", "passages": ["faq-cards#2", "faq-cards#7"]},
        },
    )


async def fill_stream(urls: list[str], n: int) -> int:
    nc = await nats.connect(urls)
    try:
        js = nc.jetstream(publish_async_max_pending=4000)
        await ensure_sync_stream(js, replicas=3)
        futs = []
        for i in range(n):
            site = f"site-{i % SITES:02d}"
            env = _envelope(site, i)
            futs.append(
                await js.publish_async(
                    f"aivos.sync.{site}.audit",
                    encode_envelope(env),
                    headers={"Nats-Msg-Id": msg_id(site, env.id)},
                )
            )
        await asyncio.gather(*futs)
        return len(encode_envelope(_envelope("site-00", 0)))
    finally:
        await nc.close()


def run_scenario(
    name: str, urls: list[str], n: int, replicas: int, batch: int, db: str | None, work: Path
) -> dict[str, Any]:
    data_dir = work / name
    data_dir.mkdir()
    store = CloudStore.open(data_dir, db=db)  # migrations applied before the clock starts
    args = [
        sys.executable,
        "-m",
        "aivos",
        "cloud",
        "ingest",
        "--nats",
        ",".join(urls),
        "--data-dir",
        str(data_dir),
        "--durable",
        f"bench-{name}",
        "--batch",
        str(batch),
        "--js-replicas",
        "3",
        "--log-level",
        "WARNING",
    ]
    if db:
        args += ["--db", db]
    procs: list[subprocess.Popen[bytes]] = []
    t_start = time.perf_counter()
    try:
        for i in range(replicas):
            log = (work / f"{name}-{i}.log").open("wb")
            procs.append(subprocess.Popen(args, stdout=log, stderr=log))
        t_tenth = None
        count = 0
        deadline = t_start + 600
        while count < n:
            if time.perf_counter() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"{name}: stuck at {count}/{n} (see {work}/{name}-*.log)")
            time.sleep(0.05)
            count = store.total()
            if t_tenth is None and count >= n // 10:
                t_tenth = time.perf_counter(), count
        t_done = time.perf_counter()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    assert t_tenth is not None
    counts = store.counts()
    stored_once = store.total() == n and sum(c["audit"] for c in counts.values()) == n
    store.close()
    return {
        "engine": "postgres" if db else "sqlite",
        "ingest_replicas": replicas,
        "records": n,
        "records_per_s": round((n - t_tenth[1]) / max(t_done - t_tenth[0], 1e-9)),
        "start_to_all_stored_s": round(t_done - t_start, 2),
        "stored_once": stored_once,
        "sites": len(counts),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "cluster_catchup.json",
    )
    args = ap.parse_args()
    bindir = pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found")
    work = Path(tempfile.mkdtemp(prefix="aivos-cluster-catchup-"))
    nodes = start_local_cluster(work / "cluster", 3)
    # its own temp dir: as root the server runs as `postgres`, which cannot enter `work`
    pg_root = Path(tempfile.mkdtemp(prefix="aivos-cluster-catchup-pg-"))
    pg = PostgresServer(bindir, pg_root)
    try:
        pg.init().start()
        urls = [node.url for node in nodes]
        size = asyncio.run(fill_stream(urls, args.n))
        rows = [
            run_scenario("sqlite", urls, args.n, 1, args.batch, None, work),
            run_scenario("pg1", urls, args.n, 1, args.batch, pg.create_db(), work),
            run_scenario("pg2", urls, args.n, 2, args.batch, pg.create_db(), work),
        ]
    finally:
        for node in nodes:
            node.stop()
        pg.stop("fast")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pg_root, ignore_errors=True)
    sqlite, pg1, pg2 = rows
    result = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
        },
        "hub": "3-node nats-server cluster, AIVOS_SYNC R3",
        "record_bytes": size,
        "batch": args.batch,
        "scenarios": rows,
        "targets": {"postgres_one_replica_records_per_s": 5000},
        "ratios": {
            "postgres_1_vs_sqlite": round(
                pg1["records_per_s"] / max(sqlite["records_per_s"], 1), 2
            ),
            "postgres_2_vs_1": round(pg2["records_per_s"] / max(pg1["records_per_s"], 1), 2),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
