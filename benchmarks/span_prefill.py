"""The span cache's background pre-fill: how long it takes, and what it costs the requests
that run meanwhile.

Knowledge base: the 1,500 public presidio-research sentences (`pii_public.py`'s data) joined
four at a time into ~375 passages of a few hundred characters (PII-dense: every sentence holds
some). The edge agent's `SpanPrefill` (its defaults: chunk 1 ms, pause 5 ms) fills a fresh masker's
cache with them in its thread while the event loop runs what a request does:
`Escalator.prepare` of a prompt and three passages (warm: in the cache) every 5 ms, and a
1 ms timer whose lateness shows how long the loop waited for the GIL. The same loop runs once
with no pre-fill (idle), for comparison; p50/p99/max of both, and the pre-fill's duration.
The heap built before is frozen out of the garbage collector's view, as the agent does at
the end of its start-up (`edge/agent.py`, `_freeze_startup_heap`).

    python benchmarks/span_prefill.py            # JSON to benchmarks/results/span_prefill.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.edge.escalation import Escalator  # noqa: E402
from aivos.edge.uplink.link import Uplink  # noqa: E402
from aivos.shared.messages import Passage  # noqa: E402
from aivos.shared.residency import ExitGate, ResidencyPolicy, SpanPrefill  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "presidio_synth_dataset_v2.jsonl.gz"
PROMPT = "I'm Jane Doe, born 01/02/1980; please call me back on +44 20 7946 0958."


def passages() -> list[str]:
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh if line.strip()]
    return [" ".join(texts[i : i + 4]) for i in range(0, len(texts), 4)]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "max": round(ordered[-1], 3),
    }


async def probe(esc: Escalator, kb: list[Passage], until: Any) -> dict[str, Any]:
    """Timer lateness (ms) and `prepare` time (ms) on the loop while `until()` is false."""
    late: list[float] = []
    prepare: list[float] = []
    loop = asyncio.get_running_loop()

    async def timer() -> None:
        while not until():
            t0 = loop.time()
            await asyncio.sleep(0.001)
            late.append((loop.time() - t0 - 0.001) * 1000)

    async def requests() -> None:
        i = 0
        while not until():
            three = [kb[(i + k) % len(kb)] for k in range(3)]
            t0 = time.perf_counter()
            esc.prepare(f"r{i}", PROMPT, three)
            prepare.append((time.perf_counter() - t0) * 1000)
            i += 1
            await asyncio.sleep(0.005)

    await asyncio.gather(timer(), requests())
    return {"timer_late_ms": summary(late), "prepare_ms": summary(prepare)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    texts = passages()
    policy = ResidencyPolicy(region="local", classes={"escalation_prompt": "mask"})
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()},
        "passages": len(texts),
        "passage_chars_p50": statistics.median(len(t) for t in texts),
    }
    # the requests cite passages already warm, so their own cost stays the same in both runs
    hot = [Passage(text=t, source=f"kb/{i}", score=1.0) for i, t in enumerate(texts[:6])]

    def escalator() -> Escalator:
        gate = ExitGate(policy)
        gate.masker.warm_up()
        for p in hot:
            gate.masker.mask(p.text, cache=True)
        return Escalator(Uplink(None, "bench"), gate, max_tokens=16)

    idle_esc, esc = escalator(), escalator()
    gc.collect()
    gc.freeze()
    deadline = time.perf_counter() + args.idle_s
    results["idle"] = await probe(idle_esc, hot, lambda: time.perf_counter() > deadline)

    prefill = SpanPrefill()
    t0 = time.perf_counter()
    prefill.start(esc.gate.masker, lambda: iter(texts))
    results["during_prefill"] = await probe(esc, hot, lambda: prefill.stats().state != "running")
    results["prefill_s"] = round(time.perf_counter() - t0, 2)
    results["prefill"] = {
        k: getattr(prefill.stats(), k) for k in ("state", "seen", "warmed", "already", "skipped")
    }
    results["machine"]["load_avg_end"] = os.getloadavg()
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle-s", type=float, default=5.0, help="seconds of the idle run")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "span_prefill.json"
    )
    args = ap.parse_args()
    res = asyncio.run(main(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print(f"wrote {args.out}")
