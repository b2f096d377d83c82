"""Intent latency: int8 bundle vs fp32 export vs sentence-transformers (PyTorch) + same head.

    python benchmarks/intent_latency.py --bundle DIR --artifacts DIR [--n 300]

`DIR`s come from `aivos models build --keep-artifacts ARTIFACTS`. All three stacks see the
same CLINC150 test queries; batch-1 timings include tokenization. Prints a table and writes
JSON to benchmarks/results/intent_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from _intent_common import fp32_twin  # run as a script: benchmarks/ is on sys.path

from aivos.edge.intent import IntentModel
from aivos.shared.datasets import load_examples
from aivos.shared.paths import clinc150_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _single(fn: Callable[[list[str]], object], texts: Sequence[str]) -> dict[str, float]:
    for t in texts[:20]:
        fn([t])
    times = []
    for t in texts:
        t0 = time.perf_counter()
        fn([t])
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def _throughput(fn: Callable[[list[str]], object], texts: Sequence[str], batch: int = 32) -> float:
    fn(list(texts[:batch]))
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        fn(list(texts[i : i + batch]))
    return len(texts) / (time.perf_counter() - t0)


def _st_stack(artifacts: Path, threads: int) -> Callable[[list[str]], object]:
    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.set_num_threads(threads)
    word = models.Transformer(str(artifacts / "encoder"), max_seq_length=256)
    st = SentenceTransformer(
        modules=[
            word,
            models.Pooling(word.get_word_embedding_dimension(), "mean"),
            models.Normalize(),
        ],
        device="cpu",
    )
    head = np.load(artifacts / "head.npz")
    w = torch.from_numpy(head["weight"]).T.contiguous()
    b = torch.from_numpy(head["bias"])

    def run(texts: list[str]) -> object:
        with torch.inference_mode():
            emb = st.encode(texts, convert_to_tensor=True, batch_size=len(texts))
            return torch.softmax(emb @ w + b, -1)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--n", type=int, default=300, help="queries timed at batch 1")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "intent_latency.json"
    )
    args = ap.parse_args()

    texts = [e.text for e in load_examples(f"{clinc150_path()}#test")]
    single, bulk = texts[: args.n], texts[:1024]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = fp32_twin(args.bundle, args.artifacts, Path(tmp) / "fp32")
        stacks: list[tuple[str, Callable[[int], Callable[[list[str]], object]]]] = [
            (
                "int8 (bundle)",
                lambda n: IntentModel.load(args.bundle, intra_op_threads=n).classify_batch,
            ),
            ("fp32 (onnx)", lambda n: IntentModel.load(fp32, intra_op_threads=n).classify_batch),
            ("sentence-transformers", lambda n: _st_stack(args.artifacts, n)),
        ]
        for name, make in stacks:
            row: dict[str, float] = {}
            for threads in (1, 2):
                fn = make(threads)
                s = _single(fn, single)
                row[f"p50_ms_{threads}t"] = s["p50_ms"]
                row[f"p99_ms_{threads}t"] = s["p99_ms"]
                if threads == 2:
                    row["sent_per_s_b32_2t"] = _throughput(fn, bulk)
            results[name] = row
            print(name, {k: round(v, 2) for k, v in row.items()}, flush=True)

    base = results["sentence-transformers"]
    header = f"{'stack':<24}{'p50 1t':>9}{'p99 1t':>9}{'p50 2t':>9}{'p99 2t':>9}{'b32 s/s':>10}{'x ST (p50 2t)':>15}"
    print(header)
    for name, r in results.items():
        ratio = base["p50_ms_2t"] / r["p50_ms_2t"]
        print(
            f"{name:<24}{r['p50_ms_1t']:>9.2f}{r['p99_ms_1t']:>9.2f}{r['p50_ms_2t']:>9.2f}"
            f"{r['p99_ms_2t']:>9.2f}{r['sent_per_s_b32_2t']:>10.0f}{ratio:>14.1f}x"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                    "loadavg_1m_at_end": os.getloadavg()[0],
                },
                "n_single": len(single),
                "n_bulk": len(bulk),
                "results": results,
                "speedup_int8_vs_st_p50_2t": base["p50_ms_2t"]
                / results["int8 (bundle)"]["p50_ms_2t"],
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
