"""Fleet console at 1,000 sites: registry ingest keeps up, the overview renders fast.

Run:  python benchmarks/fleet_console.py [--sites 1000] [--duration 60] [--requests 200]
                                         [--prefill 360] [--out benchmarks/results/fleet_console.json]

Setup (all real, all on this machine): a hub nats-server with JetStream; the console as a
separate process (``aivos cloud console``: heartbeat ingest + rollout controller + pages);
``benchmarks/fleet_sim.py`` as another process with N sites heartbeating every 10 s (plus
audit records to the hub stream). The registry is pre-filled with ``--prefill`` history
rows per site (steady state of the bounded history is 720 rows = 2 h at 10 s).

Measured:

1. ingest at the nominal rate (N sites / 10 s) while pages are being requested: every
   heartbeat sent is written (``/api/ingest`` counters vs the simulator's count), and the
   send -> committed lag (max and last batch);
2. the same at 10x the rate (1 s interval), for headroom;
3. ``GET /`` (the fleet overview page, logged in: counts over all N sites, the first page of
   100 sites, problems first) and
   ``GET /api/sites`` over HTTP during (1): p50/p95/max;
4. baseline, in process on the same registry file: the overview's data built the naive way
   (latest heartbeat per site queried from the history table, one query per site, on a copy
   without the ``(site_id, ts)`` index) vs the registry's way (latest state kept in the
   sites row, one query); both rendered with the same template. Reported as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.console.queries import FleetQuery, overview  # noqa: E402
from aivos.cloud.fleet.registry import SiteRow, SqliteRegistry, open_registry, site_state  # noqa: E402
from aivos.cloud.fleet.sim import SimSite  # noqa: E402
from aivos.cloud.fleet.tokens import add_operator, create_operator_token  # noqa: E402
from aivos.shared.natsconf.server import free_port, start_local_hub  # noqa: E402
from aivos.up_scale import operator_token_in  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _stats(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(_pct(ms, 0.95), 2),
        "max_ms": round(max(ms), 2),
    }


def prefill(data_dir: Path, sites: int, rows: int, prefix: str, db: str | None = None) -> None:
    """History rows per site as if the fleet had been heartbeating for a while (old ts)."""
    reg = open_registry(db, data_dir)
    now = time.time() - 60
    sims = [SimSite(None, f"{prefix}-{i:04d}", interval_s=10.0, seed=i) for i in range(sites)]  # type: ignore[arg-type]
    for k in range(rows):
        ts = now - (rows - k) * 10.0
        reg.ingest_heartbeats([(s.heartbeat(), ts) for s in sims])
    reg.close()


def login(client: httpx.Client) -> None:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    resp = client.post(
        "/login",
        data={
            "username": "bench",
            "password": "bench-password",
            "csrf": csrf.group(1),
            "next": "/",
        },
    )
    assert resp.status_code == 200 and 'id="sites"' in resp.text, resp.status_code


def time_requests(
    client: httpx.Client, path: str, n: int, headers: dict[str, str] | None = None
) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = client.get(path, headers=headers)
        out.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200, resp.status_code
    return out


def run_sim(
    hub_url: str, sites: int, interval: float, duration: float, audit_every: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "fleet_sim.py"),
            "--nats",
            hub_url,
            "--sites",
            str(sites),
            "--interval",
            str(interval),
            "--duration",
            str(duration),
            "--audit-every",
            str(audit_every),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def ingest_counters(client: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    return client.get("/api/ingest", headers=headers).json()  # type: ignore[no-any-return]


def wait_written(
    client: httpx.Client, headers: dict[str, str], target: int, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        c = ingest_counters(client, headers)
        if c["written"] >= target or time.monotonic() > deadline:
            return c
        time.sleep(0.2)


# ----- baseline: latest state per site from the history table, one query per site ----------


def naive_sites(conn: sqlite3.Connection, now: float) -> list[SiteRow]:
    import msgspec

    from aivos.cloud.fleet.registry import Heartbeat  # same decoder as the real path

    decoder = msgspec.json.Decoder(Heartbeat)
    out: list[SiteRow] = []
    for site_id, registered_by, first_seen in conn.execute(
        "SELECT site_id, registered_by, first_seen FROM sites ORDER BY site_id"
    ).fetchall():
        row = conn.execute(
            "SELECT ts, p50_ms, p99_ms, request_rate, outbox_depth, bundle_version FROM heartbeats "
            "WHERE site_id = ? ORDER BY ts DESC LIMIT 1",
            (site_id,),
        ).fetchone()
        cfg = conn.execute(
            "SELECT heartbeat, interval_s, bundle_status, bundle_desired, config_desired, "
            "config_applied, config_error FROM sites WHERE site_id = ?",
            (site_id,),
        ).fetchone()
        hb = decoder.decode(cfg[0]) if cfg[0] else None
        last_seen = row[0] if row else None
        state, age = site_state(last_seen, cfg[1], now)
        out.append(
            SiteRow(
                site_id=site_id,
                state=state,
                last_seen_age_s=None if age is None else round(age, 1),
                bundle_version=row[5] if row else None,
                registered_by=registered_by,
                health="stale" if state == "offline" else "healthy",
                bundle_status=cfg[2],
                bundle_desired=cfg[3],
                config_desired=cfg[4],
                config_applied=cfg[5],
                config_error=cfg[6],
                agent_version=hb.agent_version if hb else None,
                provider=hb.provider if hb else None,
                link_state=hb.link_state if hb else None,
                request_rate=row[3] if row else None,
                p50_ms=row[1] if row else None,
                p99_ms=row[2] if row else None,
                outbox_depth=row[4] if row else None,
                first_seen=first_seen,
                last_seen=last_seen,
                interval_s=cfg[1],
            )
        )
    return out


def baseline(data_dir: Path, repeats: int, no_index_repeats: int = 1) -> dict[str, Any]:
    from jinja2 import Environment, FileSystemLoader

    from aivos.cloud.console.app import _age, _ts
    from aivos.cloud.console.queries import Overview

    env = Environment(
        loader=FileSystemLoader(ROOT / "cloud" / "console" / "templates"), autoescape=True
    )
    env.filters["age"] = _age
    env.filters["ts"] = _ts
    template = env.get_template("fleet.html")
    ctx = {
        "operator": "bench",
        "csrf": "x",
        "nav": "fleet",
        "flash": "",
        "error": "",
        "query": FleetQuery(),
    }

    reg = SqliteRegistry.open(data_dir)
    indexed: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        view = overview(reg, FleetQuery())
        template.render(view=view, **ctx)
        indexed.append((time.perf_counter() - t0) * 1000)
    reg.close()

    copy = Path(tempfile.mkdtemp()) / "naive.db"
    src = sqlite3.connect(data_dir / SqliteRegistry.FILENAME)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    n_rows = dst.execute("SELECT count(*) FROM heartbeats").fetchone()[0]

    def naive_page() -> float:
        t0 = time.perf_counter()
        sites = naive_sites(dst, time.time())
        counts = {"online": 0, "offline": 0, "healthy": 0, "degraded": 0, "never_seen": 0}
        for s in sites:
            counts[s.state] += 1
        view = Overview(counts=counts, total=len(sites), shown=len(sites), sites=sites)
        template.render(view=view, **ctx)
        return (time.perf_counter() - t0) * 1000

    # N+1: one query per site for its latest heartbeat, (site_id, ts) index present
    n_plus_one = [naive_page() for _ in range(repeats)]
    # the same without the index (each per-site query scans the history table)
    dst.execute("DROP INDEX IF EXISTS idx_hb_site_ts")
    dst.commit()
    no_index = [naive_page() for _ in range(no_index_repeats)]
    dst.close()
    shutil.rmtree(copy.parent, ignore_errors=True)
    return {
        "history_rows": n_rows,
        "registry_page_build": _stats(indexed),
        "n_plus_one_indexed_page_build": _stats(n_plus_one),
        "n_plus_one_no_index_page_build": _stats(no_index),
        "ratio_p50_vs_n_plus_one_indexed": round(
            statistics.median(n_plus_one) / statistics.median(indexed), 1
        ),
        "ratio_p50_vs_no_index": round(statistics.median(no_index) / statistics.median(indexed), 1),
    }


def start_console(
    hub_url: str, data: Path, db: str | None = None
) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """`aivos cloud console` as its own process (on `db` when given); waits for /healthz."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from aivos.cli import main; main()",
            "cloud",
            "console",
            "--nats",
            hub_url,
            "--data-dir",
            str(data),
            *(["--db", db] if db else []),
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ],
        stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, follow_redirects=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return proc, client
        except httpx.HTTPError:
            time.sleep(0.2)
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("console did not start")


def run_engine(engine: str, work: Path, args: argparse.Namespace, db: str | None) -> dict[str, Any]:
    """The nominal phase on one engine: a fresh hub and registry, N sites heartbeating every
    10 s for `--duration` s, the overview page timed meanwhile; every heartbeat written?"""
    data = work / engine
    hub = start_local_hub(work / f"hub-{engine}")
    proc = None
    try:
        t0 = time.perf_counter()
        prefill(data, args.sites, args.prefill, "sim", db)
        prefill_s = time.perf_counter() - t0
        reg = open_registry(db, data)
        add_operator(reg, "bench", "bench-password")
        reg.close()
        token = operator_token_in(db, data) if db else create_operator_token(data)
        auth = {"Authorization": f"Bearer {token}"}
        proc, client = start_console(hub.url, data, db)
        login(client)
        page_bytes = len(client.get("/").content)
        sim = run_sim(hub.url, args.sites, 10.0, args.duration, 5)
        time.sleep(3)
        page_ms: list[float] = []
        # pages requested all through the simulated traffic: --requests of them, paced evenly
        # over --duration (a page that answers fast does not use them all up at the start)
        pace = args.duration / max(1, args.requests)
        while sim.poll() is None and len(page_ms) < args.requests:
            t0 = time.monotonic()
            page_ms += time_requests(client, "/", 1)
            time.sleep(max(0.0, pace - (time.monotonic() - t0)))
        out, _ = sim.communicate(timeout=args.duration + 60)
        sim_result = json.loads(out.strip().splitlines()[-1])
        counters = wait_written(client, auth, sim_result["heartbeats_sent"])
        client.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        hub.stop()
    return {
        "engine": engine,
        "prefill_rows_per_site": args.prefill,
        "prefill_s": round(prefill_s, 1),
        "sim": sim_result,
        "written": counters["written"],
        "lost": max(0, sim_result["heartbeats_sent"] - counters["written"]),
        "max_lag_ms": counters["max_lag_ms"],
        "batches": counters["batches"],
        "overview_page_http": {**_stats(page_ms), "bytes": page_bytes},
    }


def compare_engines(args: argparse.Namespace) -> dict[str, Any]:
    """SQLite and PostgreSQL side by side, same fleet, same run."""
    from tests.fixtures.postgres import PostgresServer, pg_bindir

    bindir = pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found")
    work = Path(tempfile.mkdtemp(prefix="fleet-sim-"))
    pg_root = Path(tempfile.mkdtemp(prefix="fleet-sim-pg-"))  # the `postgres` user's own
    pg = PostgresServer(bindir, pg_root).init()
    pg.start()
    try:
        rows = [
            run_engine("sqlite", work, args, None),
            run_engine("postgres", work, args, pg.create_db()),
        ]
    finally:
        pg.stop("fast")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pg_root, ignore_errors=True)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
        },
        "sites": args.sites,
        "interval_s": 10.0,
        "duration_s": args.duration,
        "engines": rows,
        "targets": {"lost": 0, "max_lag_ms": 2000, "overview_p95_ms": 300},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sites", type=int, default=1000)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--stress-duration", type=float, default=20.0)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--prefill", type=int, default=360, help="history rows per site before start")
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "fleet_console.json"
    )
    p.add_argument(
        "--engines",
        action="store_true",
        help="only the nominal phase, on SQLite and on PostgreSQL side by side "
        "(writes benchmarks/results/fleet_sim.json unless --out)",
    )
    args = p.parse_args()
    if args.engines:
        out = args.out
        if out == ROOT / "benchmarks" / "results" / "fleet_console.json":
            out = ROOT / "benchmarks" / "results" / "fleet_sim.json"
        result = compare_engines(args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    data = work / "cloud"
    hub = start_local_hub(work)
    console_proc = None
    try:
        t0 = time.perf_counter()
        prefill(data, args.sites, args.prefill, "sim")
        prefill_s = time.perf_counter() - t0
        reg = SqliteRegistry.open(data)
        add_operator(reg, "bench", "bench-password")
        reg.close()
        token = create_operator_token(data)
        auth = {"Authorization": f"Bearer {token}"}
        console_proc, client = start_console(hub.url, data)
        login(client)

        # 1 + 3: nominal load, pages measured while heartbeats stream in
        sim = run_sim(hub.url, args.sites, 10.0, args.duration, 5)
        time.sleep(3)
        page_ms = time_requests(client, "/", args.requests)
        api_ms = time_requests(client, "/api/sites", args.requests, headers=auth)
        out, _ = sim.communicate(timeout=args.duration + 60)
        nominal_sim = json.loads(out.strip().splitlines()[-1])
        nominal = wait_written(client, auth, nominal_sim["heartbeats_sent"])
        sizes = len(client.get("/").content)
        online = sum(
            1 for s in client.get("/api/sites", headers=auth).json() if s["state"] == "online"
        )

        # 2: 10x rate
        before = ingest_counters(client, auth)
        sim = run_sim(hub.url, args.sites, 1.0, args.stress_duration, 0)
        out, _ = sim.communicate(timeout=args.stress_duration + 60)
        stress_sim = json.loads(out.strip().splitlines()[-1])
        stress = wait_written(client, auth, before["written"] + stress_sim["heartbeats_sent"])
        client.close()
    finally:
        if console_proc is not None:
            console_proc.terminate()
            console_proc.wait(30)
        hub.stop()

    base_result = baseline(data, 30)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sites": args.sites,
        "prefill_rows_per_site": args.prefill,
        "prefill_s": round(prefill_s, 1),
        "nominal": {
            "interval_s": 10.0,
            "sim": nominal_sim,
            "written": nominal["written"],
            "invalid": nominal["invalid"],
            "kept_up": nominal["written"] >= nominal_sim["heartbeats_sent"],
            "max_lag_ms": nominal["max_lag_ms"],
            "batches": nominal["batches"],
        },
        "stress_10x": {
            "interval_s": 1.0,
            "sim": stress_sim,
            "written": stress["written"] - before["written"],
            "kept_up": stress["written"] - before["written"] >= stress_sim["heartbeats_sent"],
            "max_lag_ms": stress["max_lag_ms"],
        },
        "overview_page_http": {**_stats(page_ms), "bytes": sizes, "sites_online": online},
        "api_sites_http": _stats(api_ms),
        "baseline": base_result,
    }
    shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
