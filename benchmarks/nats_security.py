"""What the secured fleet link costs: escalation round trip with auth + TLS vs plain, and
`aivos fleet enroll` -> the new site online in the registry (targets: <= 0.5 ms added at
p50; <= 5 s to online).

Run:  python benchmarks/nats_security.py [--n 3000] [--sites 3] [--out FILE]

Setup (all real, loopback, side by side in one run):

* **plain**: an open hub (`HubConfig`) and a plain leaf; a responder on the hub
  queue-subscribed to ``aivos.gen.*``; the requester is a client of the leaf.
* **secure**: a hub from `secure_hub_config` (TLS + certificate-mapped users), a site
  enrolled with `enroll_site` whose leaf runs from its kit (``nats-server -c
  KIT/leaf.conf``), the responder connected with the worker's certificate and inbox, the
  requester a client of the leaf with the site's inbox prefix.

Each request is a 1 KB `GenerateRequest` (what the edge sends on escalation) and the
reply 1 KB; requests go one at a time, in blocks alternating between the two setups
(so drift on a shared machine hits both alike).

Enrollment: a fleet service (fleet identity, heartbeat ingest into the registry) runs on
the secure hub. Per site we time `python -m aivos fleet enroll` (a subprocess, as an
operator runs it), then start the leaf from the kit and an emulated agent that connects to
the leaf and sends a heartbeat at once and then every `--hb-interval` seconds (the edge
sends its first heartbeat when its uplink connects), until the registry lists the site
``online``. Results go to benchmarks/results/nats_security.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.fleet.enroll import (  # noqa: E402
    enroll_site,
    secure_hub_config,
    service_env,
    service_identity,
)
from aivos.cloud.fleet.registry import SqliteRegistry  # noqa: E402
from aivos.cloud.fleet.service import FleetService  # noqa: E402
from aivos.shared.fleet import Decisions, Heartbeat  # noqa: E402
from aivos.shared.messages import GenerateRequest  # noqa: E402
from aivos.shared.natsconf import (  # noqa: E402
    HubConfig,
    LeafConfig,
    NatsServer,
    free_port,
    nats_server_binary,
)
from aivos.shared.natsconf.connect import connect_nats, tls_context  # noqa: E402
from aivos.shared.natsconf.permissions import service_inbox_prefix, site_inbox_prefix  # noqa: E402
from aivos.shared.subjects import GEN_ALL_SITES, gen_subject, heartbeat_subject  # noqa: E402

SITE = "bench-rt"
PAYLOAD = 1024


class KitLeaf:
    """A leaf node run from an enrollment kit, as on a branch box."""

    def __init__(self, kit: Path, port: int) -> None:
        self.url = f"nats://127.0.0.1:{port}"
        with (kit / "leaf.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(kit / "leaf.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _request_bytes(i: int) -> bytes:
    base = GenerateRequest(request_id=f"r{i}", site=SITE, prompt="")
    pad = PAYLOAD - len(msgspec.json.encode(base))
    req = GenerateRequest(request_id=f"r{i}", site=SITE, prompt="x" * max(pad, 0))
    return msgspec.json.encode(req)


async def _quiet(exc: Exception) -> None:
    pass  # connection refused while the leaf starts: expected, retried below


async def _connect_retry(url: str, **options: Any) -> NATS:
    deadline = time.monotonic() + 15
    while True:
        try:
            return await nats.connect(
                url,
                connect_timeout=1,
                allow_reconnect=False,
                reconnect_time_wait=0,
                error_cb=_quiet,
                **options,
            )
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def _responder(url: str, **options: Any) -> NATS:
    nc = await nats.connect(url, **options)
    reply = b"y" * PAYLOAD

    async def answer(msg: Any) -> None:
        await msg.respond(reply)

    await nc.subscribe(GEN_ALL_SITES, queue="aivos-gen", cb=answer)
    await nc.flush()
    return nc


async def _warm(nc: NATS) -> None:
    deadline = time.monotonic() + 15
    while True:  # interest crosses the leaf link asynchronously
        try:
            await nc.request(gen_subject(SITE), _request_bytes(0), timeout=0.5)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _block(nc: NATS, n: int, out: list[float]) -> None:
    for i in range(n):
        data = _request_bytes(i)
        t0 = time.perf_counter()
        await nc.request(gen_subject(SITE), data, timeout=5)
        out.append((time.perf_counter() - t0) * 1000)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": _pct(values, 0.50),
        "p90_ms": _pct(values, 0.90),
        "p99_ms": _pct(values, 0.99),
        "mean_ms": round(statistics.fmean(values), 3),
    }


async def round_trip(tmp: Path, n: int, block: int) -> dict[str, Any]:
    plain_hub = NatsServer(
        HubConfig(store_dir=str(tmp / "plain-js"), port=free_port(), leaf_port=free_port()),
        tmp / "plain",
    ).start()
    plain_leaf = NatsServer(
        LeafConfig(
            site=SITE, hub_leaf_url=plain_hub.leaf_url, port=free_port(), monitor_port=free_port()
        ),
        tmp / "plain",
    ).start()
    plain_leaf.wait_leafnodes(1)
    data_dir = tmp / "secure"
    conf = secure_hub_config(
        data_dir, port=free_port(), leaf_port=free_port(), monitor_port=free_port()
    )
    secure_hub = NatsServer(conf, data_dir / "nats").start()
    port = free_port()
    secure_leaf = KitLeaf(enroll_site(data_dir, SITE, tmp / "kit-rt", leaf_port=port), port)
    conns: list[NATS] = []
    try:
        secure_hub.wait_leafnodes(1)
        worker = service_identity(data_dir, "worker")
        conns.append(await _responder(plain_hub.url))
        conns.append(
            await _responder(
                secure_hub.url,
                tls=tls_context(worker),
                inbox_prefix=service_inbox_prefix("worker"),
            )
        )
        plain = await _connect_retry(plain_leaf.url)
        secure = await _connect_retry(secure_leaf.url, inbox_prefix=site_inbox_prefix(SITE))
        conns += [plain, secure]
        await _warm(plain)
        await _warm(secure)
        await _block(plain, 200, [])  # JIT-free, but warms sockets, TLS buffers, caches
        await _block(secure, 200, [])
        samples: dict[str, list[float]] = {"plain": [], "secure": []}
        for _ in range(max(1, n // block)):
            await _block(plain, block, samples["plain"])
            await _block(secure, block, samples["secure"])
    finally:
        for nc in conns:
            await nc.close()
        secure_leaf.stop()
        plain_leaf.stop()
        secure_hub.stop()
        plain_hub.stop()
    p, s = _summary(samples["plain"]), _summary(samples["secure"])
    return {
        "plain": p,
        "secure": s,
        "added_p50_ms": round(s["p50_ms"] - p["p50_ms"], 3),
        "added_p99_ms": round(s["p99_ms"] - p["p99_ms"], 3),
        "ratio_p50": round(s["p50_ms"] / p["p50_ms"], 2),
        "ratio_p99": round(s["p99_ms"] / p["p99_ms"], 2),
        "target_added_p50_ms": 0.5,
    }


def _heartbeat(site: str, interval_s: float) -> bytes:
    beat = Heartbeat(
        site_id=site,
        agent_version="bench",
        bundle_version="v1",
        provider="CPUExecutionProvider",
        link_state="up",
        outbox_depth=0,
        job_backlog=0,
        request_rate=0.0,
        decisions=Decisions(local=0, escalate=0, refuse=0),
        p50_ms=1.0,
        p99_ms=2.0,
        cpu_percent=1.0,
        mem_percent=1.0,
        disk_percent=1.0,
        sent_at_unix_ms=int(time.time() * 1000),
        interval_s=interval_s,
    )
    return msgspec.json.encode(beat)


async def _agent(url: str, site: str, interval_s: float, sent: list[float]) -> None:
    # connect as the edge uplink does (backoff from 0.1 s with jitter, the site's inbox)
    nc = await connect_nats(url, name=f"agent-{site}", inbox_prefix=site_inbox_prefix(site))
    try:
        while True:
            await nc.publish(heartbeat_subject(site), _heartbeat(site, interval_s))
            await nc.flush()
            sent.append(time.perf_counter())
            await asyncio.sleep(interval_s)
    finally:
        await nc.close()


def _online(registry: SqliteRegistry, site: str) -> bool:
    return any(row.site_id == site and row.state == "online" for row in registry.sites())


async def enroll_to_online(tmp: Path, sites: int, hb_interval_s: float) -> dict[str, Any]:
    data_dir = tmp / "fleet"
    conf = secure_hub_config(
        data_dir, port=free_port(), leaf_port=free_port(), monitor_port=free_port()
    )
    hub = NatsServer(conf, data_dir / "nats").start()
    saved = dict(os.environ)
    os.environ.update(service_env(data_dir, "fleet"))  # FleetService connects as "fleet"
    service = await FleetService(data_dir, hub.url, flush_interval_s=0.2).start()
    os.environ.clear()
    os.environ.update(saved)
    registry = SqliteRegistry.open(data_dir)
    runs: list[dict[str, float]] = []
    leaves: list[KitLeaf] = []
    try:
        for i in range(sites):
            site, port = f"bench-enroll-{i}", free_port()
            out = tmp / f"kit-{site}"
            cmd = [sys.executable, "-m", "aivos", "fleet", "enroll", site]
            cmd += ["--data-dir", str(data_dir), "--out", str(out), "--leaf-port", str(port)]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            t_enrolled = time.perf_counter()
            assert done.returncode == 0, done.stderr
            kit = Path(done.stdout.strip().splitlines()[-1])
            leaves.append(KitLeaf(kit, port))
            sent: list[float] = []
            agent = asyncio.create_task(_agent(leaves[-1].url, site, hb_interval_s, sent))
            t_link = None
            while not _online(registry, site):
                if t_link is None and hub.leafnode_count() >= i + 1:
                    t_link = time.perf_counter()
                if time.perf_counter() - t0 > 60:
                    raise TimeoutError(f"{site} not online after 60 s")
                await asyncio.sleep(0.01)
            t_online = time.perf_counter()
            agent.cancel()
            runs.append(
                {
                    "enroll_cli_s": round(t_enrolled - t0, 3),
                    "leaf_link_up_s": round((t_link or t_online) - t0, 3),
                    "first_heartbeat_sent_s": round(sent[0] - t0, 3) if sent else -1.0,
                    "online_s": round(t_online - t0, 3),
                    "heartbeats_sent": len(sent),
                }
            )
    finally:
        registry.close()
        await service.stop()
        for leaf in leaves:
            leaf.stop()
        hub.stop()
    online = [r["online_s"] for r in runs]
    return {
        "runs": runs,
        "online_median_s": round(statistics.median(online), 3),
        "online_max_s": round(max(online), 3),
        "heartbeat_interval_s": hb_interval_s,
        "target_s": 5.0,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000, help="requests per setup")
    ap.add_argument("--block", type=int, default=250, help="requests per alternating block")
    ap.add_argument("--sites", type=int, default=3, help="sites to enroll")
    ap.add_argument("--hb-interval", type=float, default=1.0)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "nats_security.json",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aivos-natssec-") as tmp:
        rt = await round_trip(Path(tmp), args.n, args.block)
        enroll = await enroll_to_online(Path(tmp), args.sites, args.hb_interval)
    result = {
        "benchmark": "nats_security",
        "payload_bytes": PAYLOAD,
        "round_trip": rt,
        "enroll_to_online": enroll,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "unix_time": int(time.time()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title="escalation round trip through a leaf (1 KB each way)")
    for col in ("setup", "n", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(col)
    for name in ("plain", "secure"):
        s = rt[name]
        table.add_row(name, str(s["n"]), str(s["p50_ms"]), str(s["p90_ms"]), str(s["p99_ms"]))
    console = Console()
    console.print(table)
    console.print(
        f"added at p50: {rt['added_p50_ms']} ms (x{rt['ratio_p50']}), "
        f"at p99: {rt['added_p99_ms']} ms (x{rt['ratio_p99']})"
    )
    console.print(f"enroll -> online: {enroll['runs']}")
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
