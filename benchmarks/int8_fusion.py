"""The int8 graph with and without onnxruntime's BERT fusion before quantization.

    nice -n 10 python benchmarks/int8_fusion.py --bundle DIR --artifacts DIR \
        [--split val] [--n 400] [--rounds 5] [--out benchmarks/results/int8_fusion.json]

`--bundle` is a built int8 bundle (the "shipped" graph: export -> fold_head -> quantize
without fusion); `--artifacts` the build's `--keep-artifacts` folder with the fp32 folded
graph `model_fp32.onnx` it was quantized from. No retraining: every variant is quantized
from that same fp32 graph and served through the edge runtime (`IntentModel`, one intra-op
thread) as a copy of the bundle with only `model.onnx` replaced:

  shipped            the bundle's own graph (no fusion, per-channel int8)
  fused              `onnxgraph.fuse_and_quantize_int8`: the build's step (`fuse_for_int8`
                     then `quantize_int8`: fusion, then per-channel int8)
  fused-biasgelu     the optimizer's default BERT fusion (BiasGelu, bias into
                     SkipLayerNormalization), per-channel int8
  fused-per-tensor   fusion, per-tensor int8 weights
  unfused-per-tensor no fusion, per-tensor int8 weights
  fp32               the fp32 folded graph (quality reference; not timed)

Latency: `--n` queries of `--split`, old and new interleaved call by call in one process,
the order of the variants rotated every round. Timed per call: wall clock and the calling
thread's CPU time (with one intra-op thread onnxruntime runs the graph on the caller; on a
shared box CPU time is the steadier yardstick). Three paths: the session alone on one
query (`_run_padded`, the runtime's feed building included), the session on length-sorted
groups of `SUB_BATCH` (4) queries as the runtime runs a batch, and `classify_batch([text])`
end to end (tokenizer, spelling correction, session, scoring: the edge model thread's work
per query at c=1). Reported: per-query medians and each variant's ratio to `shipped`.

Quality on the whole `--split`: top-1 agreement with the shipped graph and with fp32, label
accuracy on in-scope rows, and in-scope accuracy / out-of-scope recall at the bundle's own
threshold (`IntentModel.classify_batch`'s decision). Validate on val; run test once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import onnx

from aivos.cloud.modelbuild.onnxgraph import (
    QUANTIZATION_FUSED,
    fuse_and_quantize_int8,
    fuse_bert,
    fused_op_counts,
    quantize_int8,
)
from aivos.edge.intent import IntentModel
from aivos.edge.intent.runtime import SUB_BATCH
from aivos.shared.bundle import load_bundle_manifest, sha256_file, staged_bundle, write_manifest
from aivos.shared.datasets import load_examples
from aivos.shared.paths import clinc150_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
TIMED = ("shipped", "fused", "fused-biasgelu", "fused-per-tensor", "unfused-per-tensor")


def _variant(
    fp32: Path, out: Path, tmp: Path, *, fuse: bool, bias_gelu: bool, per_channel: bool
) -> Path:
    """A recipe the build does not use, measured here: the ORT optimizer's default BERT
    fusion (with BiasGelu and bias on SkipLayerNormalization) and/or per-tensor scales."""
    source = fp32
    if fuse:
        source = fuse_bert(fp32, tmp / f"fused-{out.stem}.onnx", merge_biases=bias_gelu)
    return quantize_int8(source, out, per_channel=per_channel)


def _twin(bundle: Path, graph: Path, dest: Path, quantization: str) -> Path:
    """A copy of `bundle` serving `graph` (all other files as they are)."""
    manifest = load_bundle_manifest(bundle)
    with staged_bundle(dest) as staging:
        shutil.copy2(graph, staging / "model.onnx")
        for name in manifest.files:
            if name != "model.onnx":
                shutil.copy2(bundle / name, staging / name)
        files = {n: sha256_file(staging / n) for n in manifest.files}
        write_manifest(
            staging,
            msgspec.structs.replace(manifest, files=files, quantization=quantization),
        )
    return dest


def _quality(
    models: dict[str, IntentModel], texts: list[str], truth: np.ndarray, oos: str
) -> dict[str, dict[str, float]]:
    top1: dict[str, np.ndarray] = {}
    decided: dict[str, np.ndarray] = {}
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for name, model in models.items():
        t1 = np.empty(len(texts), dtype=object)
        dec = np.empty(len(texts), dtype=object)
        for s in range(0, len(order), 64):
            idx = order[s : s + 64]
            preds = model.classify_batch([texts[i] for i in idx])
            for i, p in zip(idx, preds, strict=True):
                # top-1 of the head (`intent` is that label; `in_scope` applies the threshold)
                t1[i] = p.intent
                dec[i] = p.intent if p.in_scope else oos
        top1[name], decided[name] = t1, dec
    is_oos = truth == oos
    out: dict[str, dict[str, float]] = {}
    for name in models:
        out[name] = {
            "top1_agreement_with_shipped": float((top1[name] == top1["shipped"]).mean()),
            "top1_agreement_with_fp32": float((top1[name] == top1["fp32"]).mean()),
            "in_scope_label_accuracy": float((top1[name] == truth)[~is_oos].mean()),
            "in_scope_accuracy_at_threshold": float((decided[name] == truth)[~is_oos].mean()),
            "oos_recall_at_threshold": float((decided[name] == oos)[is_oos].mean()),
            "decision_agreement_with_shipped": float((decided[name] == decided["shipped"]).mean()),
        }
    return out


def _timed(fn: Callable[[IntentModel], object], model: IntentModel) -> tuple[float, float]:
    c0 = time.thread_time_ns()
    t0 = time.perf_counter_ns()
    fn(model)
    return (time.perf_counter_ns() - t0) / 1e6, (time.thread_time_ns() - c0) / 1e6


def _session_call(seqs: list[list[int]]) -> Callable[[IntentModel], object]:
    """The runtime's padded session run (feed building included) on pre-tokenized rows."""
    return lambda m: m._run_padded(seqs)  # noqa: SLF001 - the benchmark times the runtime's path


def _classify_call(text: str) -> Callable[[IntentModel], object]:
    return lambda m: m.classify_batch([text])


def _latency(
    models: dict[str, IntentModel], texts: list[str], rounds: int
) -> dict[str, dict[str, object]]:
    names = list(models)
    # the runtime's own tokenizer (no padding, truncation at max_length)
    tok = models[names[0]]._tokenizer  # noqa: SLF001 - the benchmark times the runtime's path
    seqs = [e.ids for e in tok.encode_batch(texts)]
    groups = [
        sorted(seqs[i : i + SUB_BATCH], key=len)
        for i in range(0, len(seqs) - SUB_BATCH + 1, SUB_BATCH)
    ]
    paths: dict[str, tuple[list[Callable[[IntentModel], object]], int]] = {
        "session_batch1": ([_session_call([s]) for s in seqs], 1),
        f"session_batch{SUB_BATCH}": ([_session_call(g) for g in groups], SUB_BATCH),
        "classify_batch1": ([_classify_call(t) for t in texts], 1),
    }
    for model in models.values():  # warm-up
        for calls, _ in paths.values():
            for call in calls[:20]:
                call(model)
    out: dict[str, dict[str, object]] = {}
    for path, (calls, rows) in paths.items():
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        round_ratio: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            this_cpu: dict[str, list[float]] = {n: [] for n in names}
            for call in calls:
                for n in order:
                    w, c = _timed(call, models[n])
                    wall[n].append(w / rows)
                    cpu[n].append(c / rows)
                    this_cpu[n].append(c / rows)
            base = float(np.median(this_cpu["shipped"]))
            for n in names:
                round_ratio[n].append(float(np.median(this_cpu[n])) / base)
        out[path] = {
            "calls_per_round": len(calls),
            "rows_per_call": rows,
            "variants": {
                n: {
                    "wall_p50_ms_per_query": round(float(np.median(wall[n])), 4),
                    "wall_p90_ms_per_query": round(float(np.percentile(wall[n], 90)), 4),
                    "cpu_p50_ms_per_query": round(float(np.median(cpu[n])), 4),
                    "cpu_mean_ms_per_query": round(float(np.mean(cpu[n])), 4),
                    "cpu_p50_ratio_to_shipped": round(
                        float(np.median(cpu[n]) / np.median(cpu["shipped"])), 4
                    ),
                    "wall_p50_ratio_to_shipped": round(
                        float(np.median(wall[n]) / np.median(wall["shipped"])), 4
                    ),
                    "cpu_p50_ratio_per_round": [round(x, 4) for x in round_ratio[n]],
                }
                for n in names
            },
        }
        print(path)
        for n in names:
            v = out[path]["variants"][n]  # type: ignore[index]
            print(
                f"  {n:20s} cpu p50 {v['cpu_p50_ms_per_query']:.3f} ms "
                f"(x{v['cpu_p50_ratio_to_shipped']:.3f})  wall p50 "
                f"{v['wall_p50_ms_per_query']:.3f} ms (x{v['wall_p50_ratio_to_shipped']:.3f})"
            )
    return out


def harness_args(doc: str | None, out_name: str) -> argparse.ArgumentParser:
    """The arguments every int8 graph comparison takes (this file and int8_static.py)."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--n", type=int, default=400, help="queries timed per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-latency", action="store_true", help="quality only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results" / out_name)
    return ap


def split_queries(split: str) -> tuple[list[str], np.ndarray]:
    """CLINC150 `split`'s texts and their labels (the truth `_quality` scores against)."""
    rows = load_examples(f"{clinc150_path()}#{split}")
    return [e.text for e in rows], np.array([e.label for e in rows], dtype=object)


def main() -> None:
    args = harness_args(__doc__, "int8_fusion.json").parse_args()
    texts, truth = split_queries(args.split)
    manifest = load_bundle_manifest(args.bundle)
    fp32 = args.artifacts / "model_fp32.onnx"
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aivos-int8-fusion-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.monotonic()
        recipe = fuse_and_quantize_int8(
            fp32, tmp / "fused.onnx", args.artifacts / "encoder" / "config.json"
        )
        if recipe != QUANTIZATION_FUSED:
            raise SystemExit(f"{fp32} did not fuse")
        graphs = {"shipped": args.bundle / "model.onnx", "fused": tmp / "fused.onnx"}
        fuse_seconds = time.monotonic() - t0
        graphs["fused-biasgelu"] = _variant(
            fp32, tmp / "fbg.onnx", tmp, fuse=True, bias_gelu=True, per_channel=True
        )
        graphs["fused-per-tensor"] = _variant(
            fp32, tmp / "fpt.onnx", tmp, fuse=True, bias_gelu=False, per_channel=False
        )
        graphs["unfused-per-tensor"] = _variant(
            fp32, tmp / "upt.onnx", tmp, fuse=False, bias_gelu=False, per_channel=False
        )
        graphs["fp32"] = fp32
        info = {
            n: {
                "bytes": g.stat().st_size,
                "nodes": len(onnx.load(str(g)).graph.node),
                "fused_ops": fused_op_counts(onnx.load(str(g))),
            }
            for n, g in graphs.items()
        }
        models = {
            n: IntentModel.load(_twin(args.bundle, g, tmp / f"b-{n}", n), intra_op_threads=1)
            for n, g in graphs.items()
        }
        io = {
            n: (
                sorted((i.name, i.type) for i in m._session.get_inputs()),  # noqa: SLF001
                [(o.name, o.type) for o in m._session.get_outputs()],  # noqa: SLF001
            )
            for n, m in models.items()
        }
        same_io = all(v == io["shipped"] for v in io.values())
        quality = _quality(models, texts, truth, manifest.oos_label)
        print(json.dumps(quality, indent=1))
        latency: dict[str, dict[str, object]] = {}
        if not args.no_latency:
            rng = np.random.default_rng(args.seed)
            sample = [texts[i] for i in rng.choice(len(texts), min(args.n, len(texts)), False)]
            timed = {n: models[n] for n in TIMED}
            latency = _latency(timed, sample, args.rounds)
    result = {
        "command": "python benchmarks/int8_fusion.py "
        + f"--bundle {args.bundle} --artifacts {args.artifacts} --split {args.split} "
        + f"--n {args.n} --rounds {args.rounds}"
        + (" --no-latency" if args.no_latency else ""),
        "bundle_version": manifest.bundle_version,
        "bundle_threshold": manifest.threshold,
        "build_quantization": QUANTIZATION_FUSED,
        "split": args.split,
        "n_queries": len(texts),
        "fuse_and_quantize_seconds": round(fuse_seconds, 1),
        "graphs": info,
        "same_inputs_outputs": same_io,
        "quality": quality,
        "latency": latency,
        "intra_op_threads": 1,
        "load_average_before": [round(x, 2) for x in load0],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "onnxruntime": __import__("onnxruntime").__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
