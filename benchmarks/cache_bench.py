"""The edge result cache: hit path vs miss path, inside a real agent.

A real `Agent` (bundle, SQLite store, usearch index of `docs/examples/kb`, micro-batcher; no
uplink) is started in a temp dir. The same CLINC150 test texts are sent twice, one at a
time: the first pass misses (each text is new: batch-worker trip = ONNX call + retrieval),
the second pass hits. Timed per request:

* `understand`: what the cache replaces (check text, cache lookup or model + retrieval,
  routing); the issue's "hit path inside the agent";
* `infer`: the whole request, answer and durable audit row included (the audit write is
  the same on both paths).

Reported: p50/p99 per path and the miss/hit ratio of p50s, plus the cache's own hit rate.

    python benchmarks/cache_bench.py --bundle DIR [--n 300]

Writes benchmarks/results/cache_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
KB = ROOT / "docs" / "examples" / "kb"
RESULTS = Path(__file__).resolve().parent / "results" / "cache_bench.json"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


def _stats(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(ms), 4), "p99_ms": _pct(ms, 0.99), "n": len(ms)}


async def run(bundle: Path, n: int) -> dict[str, Any]:
    from aivos.edge.agent import Agent
    from aivos.edge.results import StoredQuery
    from aivos.edge.settings import load_edge_settings
    from aivos.shared.paths import clinc150_path

    data = json.loads(clinc150_path().read_bytes())
    texts = list(dict.fromkeys(row[0] for row in data["test"]))[:n]
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_edge_settings(
            None, **{"data_dir": tmp, "model.bundle": str(bundle), "server.json_logs": False}
        )
        agent = Agent(settings)
        await agent.start()
        try:
            for path in sorted(KB.iterdir()):
                await agent.documents.add(path.name, path.read_text(encoding="utf-8"), None)
            pipeline = agent.pipeline
            await pipeline.infer(StoredQuery("warm up the model"))
            out: dict[str, Any] = {}
            for stage in ("understand", "infer"):
                pipeline.cache.clear()
                call = pipeline.understand if stage == "understand" else pipeline.infer
                timings: dict[str, list[float]] = {"miss": [], "hit": []}
                for path_name in ("miss", "hit"):
                    for text in texts:
                        t0 = time.perf_counter()
                        await call(StoredQuery(text))
                        timings[path_name].append((time.perf_counter() - t0) * 1000)
                miss, hit = _stats(timings["miss"]), _stats(timings["hit"])
                out[stage] = {
                    "miss": miss,
                    "hit": hit,
                    "p50_ratio_miss_over_hit": round(miss["p50_ms"] / hit["p50_ms"], 1),
                }
            out["cache"] = {
                "hits": pipeline.cache.hits,
                "misses": pipeline.cache.misses,
                "hit_rate": round(pipeline.cache.hit_rate, 4),
                "entries": len(pipeline.cache),
            }
        finally:
            await agent.stop()
    return out


def main() -> None:
    from aivos.shared.bundle import load_bundle_manifest
    from aivos.shared.paths import default_bundle_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=default_bundle_dir())
    ap.add_argument("--n", type=int, default=300, help="Distinct texts (each sent twice).")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    result = asyncio.run(run(args.bundle, args.n))
    report = {
        "bundle_version": load_bundle_manifest(args.bundle).bundle_version,
        **result,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
