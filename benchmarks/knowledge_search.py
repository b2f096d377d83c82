"""Knowledge search: usearch HNSW (what the edge agent uses) vs numpy brute force.

Both search the same L2-normalised vectors one query at a time (batch 1, as the agent does
per request). Reported per index size: queries/s, recall@k against the exact brute-force
answer, and the speed ratio. Vectors are real MiniLM embeddings of CLINC150 utterances when
a bundle is given (``--bundle``), else embedding-like synthetic data (clustered, 384-d).

    python benchmarks/knowledge_search.py [--bundle DIR] [--sizes 10000 100000] [--queries 500]

Writes benchmarks/results/knowledge_search.json.
"""

from __future__ import annotations

import argparse
import json
import os

# batch-1 search is a matrix-vector product: BLAS threads only add contention on a small box
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
import platform
import time
from pathlib import Path

import numpy as np  # noqa: E402
from usearch.index import Index  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "knowledge_search.json"


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, q: int, dim: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors: many topics, passages near their topic centre."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, n // 50), dim)).astype(np.float32)
    labels = rng.integers(0, len(centres), n + q)
    data = centres[labels] + 0.6 * rng.standard_normal((n + q, dim)).astype(np.float32)
    data = _normalise(data)
    return data[:n], data[n:]


def real(bundle: str, n: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    from aivos.edge.intent.runtime import IntentModel
    from aivos.shared.paths import clinc150_path

    data = json.loads(clinc150_path().read_bytes())
    texts = [row[0] for split in ("train", "val", "oos_train", "oos_val") for row in data[split]]
    queries = [row[0] for row in data["test"]][:q]
    model = IntentModel.load(bundle)

    def embed(ts: list[str]) -> np.ndarray:
        return np.concatenate([model.embed_batch(ts[i : i + 64]) for i in range(0, len(ts), 64)])

    base = embed(texts[:n])
    return base, embed(queries)


def brute_force(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    out = np.empty((len(queries), k), dtype=np.int64)
    start = time.perf_counter()
    for i, qv in enumerate(queries):
        scores = base @ qv
        top = np.argpartition(-scores, k)[:k]
        out[i] = top[np.argsort(-scores[top])]
    return out, len(queries) / (time.perf_counter() - start)


def hnsw(
    base: np.ndarray, queries: np.ndarray, k: int, dtype: str
) -> dict[str, float | np.ndarray]:
    index = Index(ndim=base.shape[1], metric="cos", dtype=dtype)
    start = time.perf_counter()
    index.add(np.arange(len(base), dtype=np.uint64), base)
    build_s = time.perf_counter() - start
    for qv in queries[:50]:  # warm-up
        index.search(qv, k)
    out = np.empty((len(queries), k), dtype=np.int64)
    start = time.perf_counter()
    for i, qv in enumerate(queries):
        out[i] = index.search(qv, k).keys
    qps = len(queries) / (time.perf_counter() - start)
    return {"keys": out, "qps": qps, "build_s": build_s, "memory_mb": index.memory_usage / 2**20}


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", default=None, help="embed CLINC150 with this intent bundle")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rows = []
    for n in args.sizes:
        if args.bundle:
            base, queries = real(args.bundle, n, args.queries)
            source = "clinc150-minilm"
        else:
            base, queries = synthetic(n, args.queries)
            source = "synthetic-clustered"
        n = len(base)
        for k in args.k:
            exact, bf_qps = brute_force(base, queries, k)
            for dtype in ("f32", "f16", "i8"):
                res = hnsw(base, queries, k, dtype)
                row = {
                    "vectors": source,
                    "n": n,
                    "dim": int(base.shape[1]),
                    "k": k,
                    "dtype": dtype,
                    "usearch_qps": round(float(res["qps"])),
                    "numpy_qps": round(bf_qps),
                    "ratio": round(float(res["qps"]) / bf_qps, 2),
                    "recall_at_k": round(recall(np.asarray(res["keys"]), exact), 4),
                    "build_s": round(float(res["build_s"]), 2),
                    "index_mb": round(float(res["memory_mb"]), 1),
                }
                rows.append(row)
                print(
                    f"{source:20s} n={n:>7d} k={k:>2d} {dtype}: usearch {row['usearch_qps']:>7d} q/s, "
                    f"numpy {row['numpy_qps']:>7d} q/s, ratio {row['ratio']:>6.2f}x, "
                    f"recall@{k} {row['recall_at_k']:.4f}, build {row['build_s']} s"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
