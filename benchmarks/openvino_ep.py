"""CPU execution provider vs OpenVINO execution provider (its CPU device), same bundle.

    python benchmarks/openvino_ep.py [--bundle DIR] [--artifacts DIR] [--n 300] [--rounds 3]

`onnxruntime-openvino` lives in its own environment (`.venv-openvino`, built by `.ci/run`;
docs/accelerators.md): when this interpreter's onnxruntime has no OpenVINO provider the script
re-runs itself with that environment's python (or `--python`). Both providers then run in the
same process and the same onnxruntime build, interleaved round by round so that load from
other work on the box falls on both alike. Each side: start-up (session + proving probe),
batch-1 latency per CLINC150 test query (tokenization included), batch-32 throughput; one
intra-op thread each (the box's default, `model.intra_op_threads`), OpenVINO's
`num_of_threads` likewise. With `--artifacts` (from `aivos models build --keep-artifacts`)
the bundle's fp32 twin is measured too: the int8 bundle is dynamically quantized, which
OpenVINO runs far slower than onnxruntime's own int8 kernels. Prints a table and writes
benchmarks/results/openvino_ep.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_REPO = Path(__file__).resolve().parents[1]
_OV = "OpenVINOExecutionProvider"
_SIDES = {
    "cpu": (["cpu"], {}),
    "openvino": (["openvino"], {"openvino": {"device_type": "CPU", "precision": "FP32"}}),
}


def _reexec_in_openvino_env(python: Path) -> None:
    import onnxruntime as ort

    if _OV in ort.get_available_providers():
        return
    if not python.exists():
        sys.exit(f"no {_OV} here and no OpenVINO environment at {python} (see .ci/run)")
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def _queries(n: int) -> list[str]:
    from aivos.shared.datasets import load_examples
    from aivos.shared.paths import clinc150_path

    texts = [e.text for e in load_examples(f"{clinc150_path()}#test")]
    rng = np.random.default_rng(0)
    return [texts[i] for i in rng.choice(len(texts), size=n, replace=False)]


def _round(bundle: Path, side: str, texts: Sequence[str], bulk: Sequence[str]) -> dict[str, float]:
    from aivos.edge.intent import IntentModel

    providers, options = _SIDES[side]
    t0 = time.perf_counter()
    model = IntentModel.load(bundle, providers, 1, provider_options=options)
    load_s = time.perf_counter() - t0
    if model.provider != model.proof.wanted:  # a benchmark of the wrong provider is worthless
        sys.exit(f"{side}: {model.proof.describe()}")
    for t in texts[:20]:
        model.classify_batch([t])
    times = []
    for t in texts:
        t1 = time.perf_counter()
        model.classify_batch([t])
        times.append((time.perf_counter() - t1) * 1000)
    model.classify_batch(list(bulk[:32]))
    t2 = time.perf_counter()
    for i in range(0, len(bulk), 32):
        model.classify_batch(list(bulk[i : i + 32]))
    qps = len(bulk) / (time.perf_counter() - t2)
    return {
        "load_s": load_s,
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "qps_b32": qps,
    }


def _compare(
    bundle: Path, texts: Sequence[str], bulk: Sequence[str], n_rounds: int
) -> dict[str, object]:
    rounds: dict[str, list[dict[str, float]]] = {side: [] for side in _SIDES}
    for r in range(n_rounds):
        # alternate which side goes first: neither always gets the quieter moment
        for side in _SIDES if r % 2 == 0 else reversed(_SIDES):
            rounds[side].append(_round(bundle, side, texts, bulk))
            print(f"{bundle.name} round {r + 1} {side}: {rounds[side][-1]}", flush=True)
    keys = ("load_s", "p50_ms", "p99_ms", "qps_b32")
    summary = {
        side: {k: statistics.median(x[k] for x in rounds[side]) for k in keys} for side in _SIDES
    }
    ratio = {k: summary["openvino"][k] / summary["cpu"][k] for k in keys}
    return {
        "bundle": str(bundle),
        "median_of_rounds": summary,
        "ratio_openvino_over_cpu": ratio,
        "per_round": rounds,
    }


def main(argv: list[str] | None = None) -> None:
    from aivos.shared.paths import default_bundle_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--artifacts", type=Path, default=None, help="adds the fp32 twin")
    parser.add_argument("--n", type=int, default=300, help="batch-1 queries per round")
    parser.add_argument("--bulk", type=int, default=1024, help="queries per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", type=Path, default=_REPO / ".venv-openvino/bin/python")
    parser.add_argument("--out", type=Path, default=_REPO / "benchmarks/results/openvino_ep.json")
    args = parser.parse_args(argv)
    _reexec_in_openvino_env(args.python)
    import onnxruntime as ort

    bundle = args.bundle or default_bundle_dir()
    pool = _queries(args.n + args.bulk)
    texts, bulk = pool[: args.n], pool[args.n :]
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"int8 (bundle)": bundle}
        if args.artifacts:
            from _intent_common import fp32_twin  # run as a script: benchmarks/ is on sys.path

            variants["fp32 (twin)"] = fp32_twin(bundle, args.artifacts, Path(tmp) / "fp32")
        results = {name: _compare(b, texts, bulk, args.rounds) for name, b in variants.items()}
    result = {
        "what": "CPU EP vs OpenVINO EP (device_type CPU, FP32 precision), same bundle, same "
        "process, rounds interleaved; medians of the rounds",
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu": _cpu_model(),
            "platform": platform.platform(),
            "loadavg_1m_at_end": os.getloadavg()[0],
            "note": "shared 2-core box with other work running: absolute times are upper "
            "bounds; the ratio is the figure to read",
        },
        "onnxruntime": f"onnxruntime-openvino {ort.__version__}",
        "threads": 1,
        "n_single": args.n,
        "n_bulk": args.bulk,
        "rounds": args.rounds,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'':24} {'load s':>8} {'p50 ms':>8} {'p99 ms':>8} {'q/s b32':>9}")
    for name, res in results.items():
        summary = res["median_of_rounds"]
        assert isinstance(summary, dict)
        for side, row in [*summary.items(), ("ov/cpu", res["ratio_openvino_over_cpu"])]:
            print(
                f"{name + ' ' + side:24} {row['load_s']:8.2f} {row['p50_ms']:8.2f} "
                f"{row['p99_ms']:8.2f} {row['qps_b32']:9.2f}"
            )
    print(f"wrote {args.out}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    main()
