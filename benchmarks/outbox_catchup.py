"""Outbox catch-up after an outage: sync resumes within 2 s of the link returning and drains
at >= 5,000 records/s (targets), against two baselines measured in the same run.

Run:  python benchmarks/outbox_catchup.py [--n 10000] [--outage-s 60] [--out FILE]

Setup (all real): a hub nats-server with JetStream, a site leaf connected to the hub
through a TCP proxy (the "WAN link"), the edge SQLite store with the exit gate (audit
records masked). While the proxy is cut, `--n` audit records are written; then the link
is restored and we measure:

* aivos (`OutboxDrainer`: outbox -> hub stream AIVOS_SYNC, publish_async + gathered acks,
  retry back-off capped at 0.5 s): time from restore to the first record acked by the hub,
  then the drain rate until the outbox is empty;
* baseline A, JetStream stream *sourcing* across the leaf: the same number of records
  written to a stream on the leaf's own JetStream during an equally long outage, sourced
  by a hub stream; time from restore to the first sourced message and until all arrived;
* baseline B, per-message synchronous ``js.publish`` from the leaf to the hub stream
  (link up): the drain rate a naive drainer gets;
* `hub_store_ceiling`: per-record pipelined ``publish_async`` straight on the hub, the
  ceiling of any drainer that sends one JetStream publish per record (the drainer uses
  atomic batches: one commit per batch).

Results go to benchmarks/results/outbox_catchup.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.js import api
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.edge.store import AuditRecord, Store  # noqa: E402
from aivos.edge.uplink.sync import OutboxDrainer, ensure_sync_stream  # noqa: E402
from aivos.shared.natsconf import HubConfig, LeafConfig, NatsServer, free_port  # noqa: E402
from aivos.shared.residency import ExitGate, ResidencyPolicy  # noqa: E402
from tests.fixtures.netproxy import TcpProxy  # noqa: E402

SITE = "bench1"
BASE_SITE = "bench2"


def _hub(tmp: Path) -> NatsServer:
    conf = HubConfig(
        store_dir=str(tmp / "hub-js"), port=free_port(), leaf_port=free_port(), monitor_port=0
    )
    return NatsServer(conf, tmp / "hub").start()


def _leaf(tmp: Path, site: str, hub_leaf_url: str, jetstream: bool) -> NatsServer:
    conf = LeafConfig(
        site=site,
        hub_leaf_url=hub_leaf_url,
        port=free_port(),
        monitor_port=free_port(),
        store_dir=str(tmp / f"js-{site}") if jetstream else None,
    )
    leaf = NatsServer(conf, tmp / f"leaf-{site}").start()
    leaf.wait_leafnodes(1)
    return leaf


def _record(i: int) -> AuditRecord:
    return AuditRecord(
        id=f"req-{i:07d}",
        intent="card_declined",
        confidence=0.93,
        decision="local",
        model_version="minilm-int8-1",
        latency_ms=3.2,
        pii_counts={"EMAIL": 1},
        detail={"route": "local", "passages": ["faq-cards#2", "faq-cards#7"], "answer_chars": 212},
    )


async def _fill_outbox(store: Store, n: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, 500):
        await asyncio.gather(
            *(store.append_audit(_record(i)) for i in range(start, min(n, start + 500)))
        )
    return n / (time.perf_counter() - t0)


async def bench_drainer(tmp: Path, hub: NatsServer, n: int, outage_s: float) -> dict[str, Any]:
    proxy = TcpProxy(0, ("127.0.0.1", hub.conf.leaf_port)).start()  # type: ignore[union-attr]
    leaf = _leaf(tmp, SITE, f"nats-leaf://{proxy.url_hostport}", jetstream=False)
    policy = ResidencyPolicy.from_mapping({"region": "eu", "classes": {"audit": "mask"}})
    store = Store.open(tmp / "edge", outbox_quota=n + 1000)
    drainer = OutboxDrainer(store, ExitGate(policy), SITE, batch=500)
    nc = await nats.connect(leaf.url, max_reconnect_attempts=-1)
    task = asyncio.create_task(drainer.run(nc))
    try:
        proxy.cut()
        t_cut = time.perf_counter()
        write_rate = await _fill_outbox(store, n)
        drainer.wake()
        await asyncio.sleep(max(0.0, outage_s - (time.perf_counter() - t_cut)))
        assert drainer.stats.sent == 0 and store.outbox_depth() == n
        proxy.restore()
        t_restore = time.perf_counter()
        t_first = t_done = None
        while t_done is None:
            if t_first is None and drainer.stats.sent > 0:
                t_first = time.perf_counter()
            if drainer.stats.sent >= n:
                t_done = time.perf_counter()
            await asyncio.sleep(0.002)
        assert t_first is not None
        js = (await nats.connect(hub.url)).jetstream()
        info = await js.stream_info("AIVOS_SYNC")
        return {
            "records": n,
            "outage_s": outage_s,
            "outbox_write_rate_per_s": round(write_rate),
            "restore_to_first_synced_s": round(t_first - t_restore, 3),
            "restore_to_all_synced_s": round(t_done - t_restore, 3),
            "drain_rate_per_s": round(n / max(t_done - t_first, 1e-9)),
            "hub_stream_messages": info.state.messages,
            "failed_rounds_during_outage": drainer.stats.errors,
        }
    finally:
        await drainer.stop()
        await task
        await nc.close()
        store.close()
        leaf.stop()
        proxy.close()


async def bench_sourcing(
    tmp: Path, hub: NatsServer, n: int, outage_s: float, cap_s: float
) -> dict[str, Any]:
    proxy = TcpProxy(0, ("127.0.0.1", hub.conf.leaf_port)).start()  # type: ignore[union-attr]
    leaf = _leaf(tmp, BASE_SITE, f"nats-leaf://{proxy.url_hostport}", jetstream=True)
    edge = await nats.connect(leaf.url, max_reconnect_attempts=-1)
    cloud = await nats.connect(hub.url)
    try:
        ljs = edge.jetstream()  # the leaf's own JetStream (domain = site)
        await ljs.add_stream(
            api.StreamConfig(
                name="SITE_OUTBOX",
                subjects=[f"aivos.outbox.{BASE_SITE}.>"],
                storage=api.StorageType.FILE,
            )
        )
        hjs = cloud.jetstream()
        await hjs.add_stream(
            api.StreamConfig(
                name="BASELINE_SOURCED",
                storage=api.StorageType.FILE,
                sources=[
                    api.StreamSource(
                        name="SITE_OUTBOX",
                        external=api.ExternalStream(api=f"$JS.{BASE_SITE}.API"),
                    )
                ],
            )
        )
        await ljs.publish(f"aivos.outbox.{BASE_SITE}.audit", b"warm-up")
        while (await hjs.stream_info("BASELINE_SOURCED")).state.messages < 1:
            await asyncio.sleep(0.05)  # sourcing works while the link is up
        proxy.cut()
        t_cut = time.perf_counter()
        body = json.dumps({"intent": "card_declined", "detail": {"route": "local"}}).encode()
        futs = [
            await ljs.publish_async(
                f"aivos.outbox.{BASE_SITE}.audit", body, headers={"Nats-Msg-Id": f"r{i}"}
            )
            for i in range(n)
        ]
        await asyncio.gather(*futs)
        await asyncio.sleep(max(0.0, outage_s - (time.perf_counter() - t_cut)))
        proxy.restore()
        t_restore = time.perf_counter()
        t_first = t_done = None
        while t_done is None and time.perf_counter() - t_restore < cap_s:
            got = (await hjs.stream_info("BASELINE_SOURCED")).state.messages - 1
            if t_first is None and got > 0:
                t_first = time.perf_counter()
            if got >= n:
                t_done = time.perf_counter()
            await asyncio.sleep(0.02)
        return {
            "records": n,
            "outage_s": outage_s,
            "restore_to_first_synced_s": None if t_first is None else round(t_first - t_restore, 3),
            "restore_to_all_synced_s": None if t_done is None else round(t_done - t_restore, 3),
            "gave_up_after_s": None if t_done is not None else cap_s,
        }
    finally:
        await edge.close()
        await cloud.close()
        leaf.stop()
        proxy.close()


async def bench_sync_publish(tmp: Path, hub: NatsServer, n: int) -> dict[str, Any]:
    leaf = _leaf(tmp, "bench3", hub.leaf_url, jetstream=False)
    nc = await nats.connect(leaf.url)
    try:
        js = nc.jetstream(domain="hub")
        body = json.dumps({"intent": "card_declined", "detail": {"route": "local"}}).encode()
        t0 = time.perf_counter()
        for i in range(n):
            await js.publish(
                "aivos.sync.bench3.audit", body, headers={"Nats-Msg-Id": f"bench3:r{i}"}
            )
        return {"records": n, "drain_rate_per_s": round(n / (time.perf_counter() - t0))}
    finally:
        await nc.close()
        leaf.stop()


async def bench_hub_ceiling(hub: NatsServer, n: int, size: int) -> dict[str, Any]:
    """How fast the hub stores (and fsyncs, `sync_interval: always`) per-record pipelined
    ``publish_async`` from a client on the hub itself: the ceiling of any per-record drainer
    on this machine (atomic batches are not bound by it: one commit per batch)."""
    nc = await nats.connect(hub.url)
    try:
        js = nc.jetstream(publish_async_max_pending=4000)
        body = b"x" * size
        t0 = time.perf_counter()
        futs = [
            await js.publish_async(
                "aivos.sync.ceiling.audit", body, headers={"Nats-Msg-Id": f"ceiling:{i}"}
            )
            for i in range(n)
        ]
        await asyncio.gather(*futs)
        return {"records": n, "bytes": size, "rate_per_s": round(n / (time.perf_counter() - t0))}
    finally:
        await nc.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aivos-catchup-") as d:
        tmp = Path(d)
        hub = _hub(tmp)
        try:
            nc = await nats.connect(hub.url)
            await ensure_sync_stream(nc.jetstream())
            await nc.close()
            ours = await bench_drainer(tmp, hub, args.n, args.outage_s)
            ceiling = await bench_hub_ceiling(hub, args.sync_n, 800)
            sync_pub = await bench_sync_publish(tmp, hub, args.sync_n)
            sourcing = (
                None
                if args.skip_sourcing
                else await bench_sourcing(tmp, hub, args.n, args.outage_s, args.sourcing_cap_s)
            )
        finally:
            hub.stop()
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "aivos_drainer": ours,
        "baseline_sync_js_publish": sync_pub,
        "hub_store_ceiling": ceiling,
        "baseline_stream_sourcing": sourcing,
        "targets": {"restore_to_first_synced_s": 2.0, "drain_rate_per_s": 5000},
    }
    result["ratios"] = {
        "drain_rate_vs_sync_publish": round(
            ours["drain_rate_per_s"] / max(sync_pub["drain_rate_per_s"], 1), 1
        ),
    }
    if sourcing and sourcing["restore_to_first_synced_s"]:
        result["ratios"]["resume_time_sourcing_vs_drainer"] = round(
            sourcing["restore_to_first_synced_s"] / max(ours["restore_to_first_synced_s"], 1e-3), 1
        )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--outage-s", type=float, default=60.0)
    ap.add_argument("--sync-n", type=int, default=2_000, help="records for baseline B")
    ap.add_argument("--sourcing-cap-s", type=float, default=180.0)
    ap.add_argument("--skip-sourcing", action="store_true")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "outbox_catchup.json",
    )
    args = ap.parse_args()
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    ours, src, pub = (
        result["aivos_drainer"],
        result["baseline_stream_sourcing"] or {},
        result["baseline_sync_js_publish"],
    )
    table = Table(title=f"Outbox catch-up: {args.n} records after a {args.outage_s:.0f} s outage")
    for col in ("path", "restore -> first synced (s)", "restore -> all (s)", "drain rate (rec/s)"):
        table.add_column(col)
    table.add_row(
        "aivos drainer",
        str(ours["restore_to_first_synced_s"]),
        str(ours["restore_to_all_synced_s"]),
        str(ours["drain_rate_per_s"]),
    )
    table.add_row(
        "JetStream sourcing",
        str(src.get("restore_to_first_synced_s")),
        str(src.get("restore_to_all_synced_s")),
        "-",
    )
    table.add_row("sync js.publish", "-", "-", str(pub["drain_rate_per_s"]))
    table.add_row(
        "per-record publish_async on the hub",
        "-",
        "-",
        str(result["hub_store_ceiling"]["rate_per_s"]),
    )
    Console().print(table)
    Console().print(f"ratios: {result['ratios']}  -> {args.out}")


if __name__ == "__main__":
    main()
