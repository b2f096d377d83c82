"""Generation priority: how long a live request waits behind a backlog of deferred jobs.

One real llama.cpp worker (SmolLM2-135M, one generation at a time) on a real hub
nats-server. A backlog of `--backlog` background requests (the job runner completing
escalations after an outage) arrives first, then one interactive request. Measured: the
interactive request's end-to-end latency and the backlog's completion time, in two modes
in the same run:

* ``priority``: the backlog is sent as ``background`` (what the edge does);
* ``fifo``: the backlog is sent as ``interactive``, i.e. no priority (the old behaviour).

    python benchmarks/worker_priority.py [--backlog 4] [--max-tokens 48] [--rounds 3]

Writes benchmarks/results/worker_priority.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.worker.llamacpp import LlamaCppBackend  # noqa: E402
from aivos.cloud.worker.service import GenerationWorker  # noqa: E402
from aivos.edge.uplink.generation import generate  # noqa: E402
from aivos.shared.messages import GenerateRequest  # noqa: E402
from aivos.shared.natsconf import start_local_hub  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "worker_priority.json"
PROMPT = "Explain what an overdraft fee is and how to avoid one."


async def _round(edge: nats.NATS, backlog: int, max_tokens: int, mode: str, n: int) -> dict:
    def request(rid: str, priority: str) -> GenerateRequest:
        return GenerateRequest(
            request_id=rid, site="bench", prompt=PROMPT, max_tokens=max_tokens, priority=priority
        )

    started = time.perf_counter()
    backlog_priority = "background" if mode == "priority" else "interactive"
    jobs = [
        asyncio.create_task(
            generate(edge, request(f"{mode}{n}-b{i}", backlog_priority), timeout_s=600)
        )
        for i in range(backlog)
    ]
    await asyncio.sleep(0.2)  # the backlog is queued at the worker
    live_sent = time.perf_counter()
    await generate(edge, request(f"{mode}{n}-live", "interactive"), timeout_s=600)
    live_s = time.perf_counter() - live_sent
    await asyncio.gather(*jobs)
    return {"live_s": live_s, "backlog_done_s": time.perf_counter() - started}


async def main(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="aivos-prio-"))
    hub = start_local_hub(work)
    backend = LlamaCppBackend(n_threads=args.threads)
    worker_nc = await nats.connect(hub.url)
    # room for the whole backlog plus the live request: nothing is answered Saturated
    worker = GenerationWorker(backend, concurrency=args.backlog + 2)
    await worker.start(worker_nc)
    edge = await nats.connect(hub.url)
    rows: dict[str, list[dict]] = {"priority": [], "fifo": []}
    try:
        await generate(edge, GenerateRequest("warm", "bench", "hi", max_tokens=4), timeout_s=60)
        for n in range(args.rounds):
            for mode in ("fifo", "priority"):
                rows[mode].append(await _round(edge, args.backlog, args.max_tokens, mode, n))
    finally:
        await worker.drain(grace_s=5)
        await worker_nc.close()
        await edge.close()
        hub.stop()
    summary = {
        mode: {
            "live_s_median": round(statistics.median(r["live_s"] for r in rs), 3),
            "backlog_done_s_median": round(statistics.median(r["backlog_done_s"] for r in rs), 3),
        }
        for mode, rs in rows.items()
    }
    summary["live_speedup"] = round(
        summary["fifo"]["live_s_median"] / summary["priority"]["live_s_median"], 2
    )
    return {
        "benchmark": "worker_priority",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": vars(args) | {"out": str(args.out)},
        "rounds": rows,
        "summary": summary,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backlog", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    cli = ap.parse_args()
    result = asyncio.run(main(cli))
    cli.out.parent.mkdir(parents=True, exist_ok=True)
    cli.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
