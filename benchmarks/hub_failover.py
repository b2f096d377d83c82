"""Escalations while a hub node dies: how long a site's escalations fail, and that no
record the site synced is lost.

Run:  python benchmarks/hub_failover.py [--rate 10] [--before-s 10] [--after-s 20] [--out FILE]

Setup (all real, on loopback): a 3-node routed nats-server cluster (``AIVOS_SYNC`` at R3),
a site leaf dialling every node's leaf URL, the generation worker service
(`GenerationWorker` with the `OpenAIBackend`) against a tiny local OpenAI-compatible HTTP
server (the only fake: the model endpoint), connected to the cluster with every node's
URL. The site sends `--rate` escalations per second (`generate`, 2 s budget each, as the
edge does) and writes one audit record per escalation into its outbox, which the
`OutboxDrainer` syncs to ``AIVOS_SYNC``. After `--before-s` the node that holds the
leaf's link (and leads ``AIVOS_SYNC``, moved there first) is SIGKILLed.

Measured: the **failure window** = from the kill to the send time of the first escalation
after which every escalation succeeded; failed escalations before the kill (the baseline,
same run: 0 expected) and after it; escalation latency p50 before and after; and, once the
outbox has drained, that the stream holds every audit record exactly once.
Results go to benchmarks/results/hub_failover.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.worker.openai import OpenAIBackend  # noqa: E402
from aivos.cloud.worker.service import GenerationWorker  # noqa: E402
from aivos.edge.store import AuditRecord, Store  # noqa: E402
from aivos.edge.uplink.generation import generate  # noqa: E402
from aivos.edge.uplink.sync import OutboxDrainer, ensure_sync_stream  # noqa: E402
from aivos.shared.messages import GenerateRequest  # noqa: E402
from aivos.shared.natsconf.server import start_local_cluster  # noqa: E402
from aivos.shared.residency import ExitGate, ResidencyPolicy  # noqa: E402
from aivos.shared.subjects import SYNC_STREAM  # noqa: E402
from tests.fixtures.nats import move_stream_leader, start_leaf, wait_for_responders  # noqa: E402

SITE = "branch1"


class _ChatCompletions(BaseHTTPRequestHandler):
    """A streaming ``/v1/chat/completions`` answering "ok" (the model endpoint's seam)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        events = [
            {"choices": [{"delta": {"content": "ok"}}]},
            {"choices": [{"delta": {}, "finish_reason": "stop"}]},
        ]
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    http = ThreadingHTTPServer(("127.0.0.1", 0), _ChatCompletions)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    nodes = start_local_cluster(tmp / "cluster", 3)
    urls = [n.url for n in nodes]
    leaf_urls = [n.leaf_url for n in nodes]
    leaf = start_leaf(tmp / "leaf", SITE, leaf_urls[0], hub_leaf_urls=tuple(leaf_urls[1:]))
    victim = next(n for n in nodes if n.leafnode_count() > 0)
    admin = await nats.connect(urls)
    await ensure_sync_stream(admin.jetstream(), replicas=3)
    await admin.close()
    await move_stream_leader(urls, SYNC_STREAM, victim.conf.server_name)

    worker_nc = await nats.connect(urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    backend = OpenAIBackend(f"http://127.0.0.1:{http.server_address[1]}/v1")
    worker = GenerationWorker(backend, name="bench-worker", concurrency=8)
    await worker.start(worker_nc)
    edge_nc = await nats.connect(leaf.url, max_reconnect_attempts=-1)
    await wait_for_responders(edge_nc, SITE)
    policy = ResidencyPolicy.from_mapping({"region": "eu", "classes": {"audit": "allow"}})
    store = Store.open(tmp / "edge")
    drainer = OutboxDrainer(store, ExitGate(policy), SITE, batch=50)
    drain = asyncio.create_task(drainer.run(edge_nc))

    results: list[tuple[float, float, bool]] = []  # (sent, done, ok)
    audit_ids: list[str] = []

    async def escalate(n: int) -> None:
        sent = time.monotonic()
        request = GenerateRequest(request_id=f"r{n}", site=SITE, prompt="who painted it")
        try:
            done = await generate(edge_nc, request, timeout_s=2.0)
            ok = done.text == "ok"
        except Exception:
            ok = False
        results.append((sent, time.monotonic(), ok))
        row = await store.append_audit(
            AuditRecord(id=f"req-{n:05d}", intent="oos", decision="escalate" if ok else "refuse")
        )
        audit_ids.append(f"audit-{row.id}")
        drainer.wake()

    tasks: list[asyncio.Task[None]] = []
    t0 = time.monotonic()
    t_kill = t0 + args.before_s
    t_end = t_kill + args.after_s
    n = 0
    killed = False
    while time.monotonic() < t_end:
        if not killed and time.monotonic() >= t_kill:
            victim.kill()
            t_kill = time.monotonic()
            killed = True
        tasks.append(asyncio.create_task(escalate(n)))
        n += 1
        await asyncio.sleep(max(0.0, t0 + n / args.rate - time.monotonic()))
    await asyncio.gather(*tasks)
    drained = False
    for _ in range(600):  # the outbox drains through a surviving node (bounded: 60 s)
        if store.outbox_depth() == 0:
            drained = True
            break
        await asyncio.sleep(0.1)
    survivors = [u for u in urls if u != victim.url]
    check = await nats.connect(survivors)
    stream = await check.jetstream().stream_info(SYNC_STREAM)
    await check.close()

    await drainer.stop()
    await drain
    await edge_nc.close()
    await worker.drain(2)
    await worker_nc.close()
    store.close()
    leaf.stop()
    for node in nodes:
        if node is not victim:
            node.stop()
    http.shutdown()

    before = [r for r in results if r[0] < t_kill]
    after = sorted(r for r in results if r[0] >= t_kill)
    last_bad = max((i for i, r in enumerate(after) if not r[2]), default=-1)
    recovered_at = after[last_bad + 1][0] if last_bad + 1 < len(after) else None
    return {
        "escalations_per_s": args.rate,
        "killed": f"{victim.conf.server_name} (held the leaf link, led AIVOS_SYNC)",
        "before_kill": {
            "escalations": len(before),
            "failed": sum(1 for r in before if not r[2]),
            "p50_ms": round(statistics.median((d - s) * 1000 for s, d, _ in before), 1),
        },
        "after_kill": {
            "escalations": len(after),
            "failed": sum(1 for r in after if not r[2]),
            "p50_ms_ok": round(statistics.median((d - s) * 1000 for s, d, ok in after if ok), 1),
        },
        "failure_window_s": None if recovered_at is None else round(recovered_at - t_kill, 2),
        "outbox_drained": drained,
        "audit_records": len(audit_ids),
        "stream_messages": stream.state.messages,
        "records_lost": max(0, len(audit_ids) - stream.state.messages),
        "target_failure_window_s": 5.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10.0, help="escalations per second")
    ap.add_argument("--before-s", type=float, default=10.0)
    ap.add_argument("--after-s", type=float, default=20.0)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "hub_failover.json",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aivos-hub-failover-") as d:
        result = asyncio.run(run(args, Path(d)))
    result["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
