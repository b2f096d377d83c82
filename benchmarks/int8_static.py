"""Static int8 quantization of the edge graph against the shipped dynamic int8 graph.

    nice -n 10 python benchmarks/int8_static.py --bundle DIR --artifacts DIR \
        [--split val] [--calib-n 500] [--n 400] [--rounds 5] \
        [--out benchmarks/results/int8_static.json]

`--bundle` is a built int8 bundle (the "shipped" graph: fused, dynamic per-channel int8,
`onnxgraph.fuse_and_quantize_int8`); `--artifacts` the build's `--keep-artifacts` folder
with the fp32 folded graph `model_fp32.onnx` it was quantized from. No retraining: every
variant is quantized from that same fp32 graph and served through the edge runtime
(`IntentModel`, one intra-op thread) as a copy of the bundle with only `model.onnx`
replaced (`benchmarks/int8_fusion.py`'s harness: interleaved calls, per-call thread CPU).

Static quantization (`onnxruntime.quantization.quantize_static`, QDQ format, per-channel
int8 weights, uint8 activations unless said) is calibrated on `--calib-n` TRAIN queries,
spelling-corrected and tokenized as the runtime feeds them (one unpadded row per call:
`input_ids`, all-ones `attention_mask`, zero `token_type_ids`, int64). Variants:

  shipped              the bundle's graph (fused, dynamic int8: DynamicQuantizeMatMul,
                       QAttention, QEmbedLayerNormalization)
  static-mm            the fused fp32 graph (`fuse_for_int8`), shapes inferred
                       (`quant_pre_process`), its 18 weight MatMuls static QDQ, MinMax
                       ranges; MatMul outputs stay fp32 (-> MatMulIntegerToFloat). The
                       fused Attention and EmbedLayerNormalization stay fp32: onnxruntime's
                       QDQ quantizer has no rule for these contrib ops
  static-mm-qout       as static-mm, MatMul outputs quantized too (-> QLinearMatMul + DQ)
  static-hybrid        static-mm, then Attention and EmbedLayerNormalization dynamic int8
                       (QAttention, QEmbedLayerNormalization) as in the shipped graph:
                       the static recipe's best case on the fused graph
  static-hybrid-s8     as static-hybrid, int8 (S8S8) activations
  static-hybrid-rr     as static-hybrid, 7-bit weights (`reduce_range`, onnxruntime's advice
                       for x86 without VNNI)
  static-hybrid-pct    as static-hybrid, percentile calibration (99.999), quality only
  static-hybrid-ent    as static-hybrid, entropy calibration, quality only
  static-unfused       the unfused fp32 graph (`quant_pre_process` with its ORT
                       optimization), every op the QDQ quantizer supports, MinMax
  shipped-aa           the shipped graph again, the runtime's session options (A/A control:
                       the spread of a ratio that should be 1)
  shipped+noarena      the shipped graph, session without the CPU memory arena
  shipped+daz          the shipped graph, `session.set_denormal_as_zero`
  shipped+noprepack    the shipped graph, `session.disable_prepacking`
  fp32                 the fp32 folded graph (quality reference; not timed)

The histogram calibrators (percentile, entropy) stack every call's tensors, so they get the
first 200 queries padded to one length (mask 0 on the padding, as the runtime pads
sub-batches): they hold every call's tensors in memory at once.

Latency and quality as in `benchmarks/int8_fusion.py` (`_latency`, `_quality`): per-query
medians of wall and thread CPU time on one query (`session_batch1`: `_run_padded`, feed
building included), sub-batches of 4, and `classify_batch([text])` end to end; quality on the
whole `--split` (top-1 agreement with shipped and fp32, label accuracy, in-scope accuracy /
out-of-scope recall at the bundle's served threshold). `decision` applies the bar a variant
must pass to ship: single-query thread CPU (session_batch1 p50) >= 10 % below shipped, fp32
agreement >= 99.0 %, in-scope accuracy and oos recall at threshold within 0.3 points of
shipped. Validate on val; never tune on test.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from aivos.cloud.modelbuild.onnxgraph import HEAD_MATMUL, QUANTIZATION_FUSED, fuse_for_int8
from aivos.edge.intent import IntentModel
from aivos.edge.intent.runtime import _session_options
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.datasets import load_examples
from aivos.shared.paths import clinc150_path
from benchmarks.int8_fusion import _latency, _quality, _twin, harness_args, split_queries

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
TIMED = (
    "shipped",
    "static-mm",
    "static-mm-qout",
    "static-hybrid",
    "static-hybrid-s8",
    "static-hybrid-rr",
    "static-unfused",
    "shipped-aa",
    "shipped+noarena",
    "shipped+daz",
    "shipped+noprepack",
)
# session knobs tried on the shipped graph (on top of the runtime's `_session_options`)
KNOBS: dict[str, dict[str, str]] = {
    "shipped-aa": {},  # A/A control: a second session on the shipped graph, same options
    "shipped+noarena": {"enable_cpu_mem_arena": "0"},
    "shipped+daz": {"session.set_denormal_as_zero": "1"},
    "shipped+noprepack": {"session.disable_prepacking": "1"},
}
MAX_CPU_RATIO = 0.90
MIN_FP32_AGREEMENT = 0.990
MAX_DROP_POINTS = 0.3
# calibration queries the histogram calibrators get (they hold every call's tensors at once)
HIST_N = 200


class _Feeds(CalibrationDataReader):
    """The calibration queries, one runtime feed per call."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _feeds(
    seqs: list[list[int]], type_ids: bool, pad_to: int | None = None
) -> list[dict[str, np.ndarray]]:
    """The runtime's feed for each token sequence (`IntentModel._run_padded` of one row);
    `pad_to`: every row padded to that length (mask 0) for the histogram calibrators."""
    out = []
    for seq in seqs:
        n = len(seq) if pad_to is None else pad_to
        ids = np.zeros((1, n), dtype=np.int64)
        mask = np.zeros((1, n), dtype=np.int64)
        ids[0, : len(seq)] = seq[:n]
        mask[0, : len(seq)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if type_ids:
            feed["token_type_ids"] = np.zeros_like(ids)
        out.append(feed)
    return out


def _static(
    source: Path,
    out: Path,
    feeds: list[dict[str, np.ndarray]],
    *,
    op_types: list[str] | None,
    quantize_outputs: bool = False,
    activation: QuantType = QuantType.QUInt8,
    reduce_range: bool = False,
    method: CalibrationMethod = CalibrationMethod.MinMax,
) -> Path:
    extra: dict[str, object] = {"DefaultTensorType": TensorProto.FLOAT}
    if not quantize_outputs:
        extra["OpTypesToExcludeOutputQuantization"] = ["MatMul"]
    quantize_static(
        str(source),
        str(out),
        _Feeds(feeds),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=activation,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=[HEAD_MATMUL],
        calibrate_method=method,
        extra_options=extra,
    )
    return out


def _dynamic_attention(source: Path, out: Path) -> Path:
    """The fused Attention and EmbedLayerNormalization of `source` to their dynamic int8
    forms (QAttention, QEmbedLayerNormalization), as `quantize_int8` makes them."""
    quantize_dynamic(
        str(source),
        str(out),
        op_types_to_quantize=["Attention", "EmbedLayerNormalization"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    return out


def _graphs(
    fp32: Path, config: Path, calib: list[list[int]], type_ids: bool, tmp: Path
) -> tuple[dict[str, Path], dict[str, float]]:
    """Every static variant of `fp32`, built in `tmp`, and the seconds each build took."""
    fused, recipe = fuse_for_int8(fp32, tmp / "fused.onnx", config)
    if recipe != QUANTIZATION_FUSED:
        raise SystemExit(f"{fp32} did not fuse")
    # the quantizer needs every tensor's type: the fused graph's contrib ops are typed by
    # onnxruntime's symbolic shape inference, which gives up on the unfused export (ONNX's own
    # inference types that one)
    pre = tmp / "fused_pre.onnx"
    quant_pre_process(str(fused), str(pre), skip_optimization=True)
    unfused_pre = tmp / "unfused_pre.onnx"
    quant_pre_process(str(fp32), str(unfused_pre), skip_symbolic_shape=True)
    feeds = _feeds(calib, type_ids)
    hist = calib[:HIST_N]
    padded = _feeds(hist, type_ids, pad_to=max(len(s) for s in hist))
    mm = ["MatMul"]
    recipes: dict[str, Callable[[], Path]] = {
        "static-mm": lambda: _static(pre, tmp / "smm.onnx", feeds, op_types=mm),
        "static-mm-qout": lambda: _static(
            pre, tmp / "smmq.onnx", feeds, op_types=mm, quantize_outputs=True
        ),
        "static-hybrid": lambda: _dynamic_attention(
            _static(pre, tmp / "shyb-mm.onnx", feeds, op_types=mm), tmp / "shyb.onnx"
        ),
        "static-hybrid-s8": lambda: _dynamic_attention(
            _static(pre, tmp / "s8-mm.onnx", feeds, op_types=mm, activation=QuantType.QInt8),
            tmp / "s8.onnx",
        ),
        "static-hybrid-rr": lambda: _dynamic_attention(
            _static(pre, tmp / "rr-mm.onnx", feeds, op_types=mm, reduce_range=True),
            tmp / "rr.onnx",
        ),
        "static-hybrid-pct": lambda: _dynamic_attention(
            _static(
                pre, tmp / "pct-mm.onnx", padded, op_types=mm, method=CalibrationMethod.Percentile
            ),
            tmp / "pct.onnx",
        ),
        "static-hybrid-ent": lambda: _dynamic_attention(
            _static(
                pre, tmp / "ent-mm.onnx", padded, op_types=mm, method=CalibrationMethod.Entropy
            ),
            tmp / "ent.onnx",
        ),
        "static-unfused": lambda: _static(unfused_pre, tmp / "sunf.onnx", feeds, op_types=None),
    }
    out: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    for name, build in recipes.items():
        t0 = time.monotonic()
        out[name] = build()
        seconds[name] = round(time.monotonic() - t0, 1)
        print(f"built {name} in {seconds[name]} s", flush=True)
    return out, seconds


def _with_knobs(model: IntentModel, graph: Path, knobs: dict[str, str]) -> IntentModel:
    """`model` served by a session with the runtime's options plus `knobs`."""
    options = _session_options(1)
    for key, value in knobs.items():
        if key == "enable_cpu_mem_arena":
            options.enable_cpu_mem_arena = value == "1"
        else:
            options.add_session_config_entry(key, value)
    model._session = ort.InferenceSession(  # noqa: SLF001 - same graph, other options
        str(graph), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return model


def _decision(
    quality: dict[str, dict[str, float]], latency: dict[str, dict[str, object]]
) -> dict[str, dict[str, object]]:
    """Each variant against the bar (`MAX_CPU_RATIO`, `MIN_FP32_AGREEMENT`,
    `MAX_DROP_POINTS`); {} without latency."""
    if not latency:
        return {}
    ratios = {
        path: {
            n: float(v["cpu_p50_ratio_to_shipped"])
            for n, v in cast("dict[str, dict[str, float]]", latency[path]["variants"]).items()
        }
        for path in ("session_batch1", "classify_batch1")
    }
    base = quality["shipped"]
    out: dict[str, dict[str, object]] = {}
    for name, ratio in ratios["session_batch1"].items():
        if name == "shipped":
            continue
        q = quality[name]
        drops = {
            k: round(100 * (base[k] - q[k]), 2)
            for k in ("in_scope_accuracy_at_threshold", "oos_recall_at_threshold")
        }
        out[name] = {
            "cpu_ratio_session_batch1": ratio,
            "cpu_ratio_classify_batch1": ratios["classify_batch1"][name],
            "fp32_agreement": round(q["top1_agreement_with_fp32"], 4),
            "drop_points": drops,
            "qualifies": ratio <= MAX_CPU_RATIO
            and q["top1_agreement_with_fp32"] >= MIN_FP32_AGREEMENT
            and all(d <= MAX_DROP_POINTS for d in drops.values()),
        }
    return out


def main() -> None:
    ap = harness_args(__doc__, "int8_static.json")
    ap.add_argument("--calib-n", type=int, default=500, help="train queries to calibrate on")
    args = ap.parse_args()
    texts, truth = split_queries(args.split)
    manifest = load_bundle_manifest(args.bundle)
    fp32 = args.artifacts / "model_fp32.onnx"
    config = args.artifacts / "encoder" / "config.json"
    load0 = os.getloadavg()
    rng = np.random.default_rng(args.seed)
    train = load_examples(f"{clinc150_path()}#train")
    calib_texts = [train[i].text for i in rng.choice(len(train), args.calib_n, replace=False)]
    with tempfile.TemporaryDirectory(prefix="aivos-int8-static-") as tmp_name:
        tmp = Path(tmp_name)
        shipped = IntentModel.load(args.bundle, intra_op_threads=1)
        speller = shipped.speller
        if speller is not None:
            calib_texts = [speller.correct(t) for t in calib_texts]
        tok = shipped._tokenizer  # noqa: SLF001 - the runtime's own tokenization
        calib = [e.ids for e in tok.encode_batch(calib_texts)]
        type_ids = shipped._type_ids  # noqa: SLF001
        built, build_seconds = _graphs(fp32, config, calib, type_ids, tmp)
        graphs = {"shipped": args.bundle / "model.onnx", **built, "fp32": fp32}
        info = {
            n: {
                "bytes": g.stat().st_size,
                "nodes": len(onnx.load(str(g)).graph.node),
                "op_types": dict(
                    sorted(_op_counts(onnx.load(str(g))).items(), key=lambda kv: -kv[1])
                ),
            }
            for n, g in graphs.items()
        }
        models = {
            n: IntentModel.load(_twin(args.bundle, g, tmp / f"b-{n}", n), intra_op_threads=1)
            for n, g in graphs.items()
        }
        for name, knobs in KNOBS.items():
            twin = _twin(args.bundle, graphs["shipped"], tmp / f"b-{name}", name)
            models[name] = _with_knobs(
                IntentModel.load(twin, intra_op_threads=1), twin / "model.onnx", knobs
            )
        quality = _quality(models, texts, truth, manifest.oos_label)
        print(json.dumps(quality, indent=1))
        latency: dict[str, dict[str, object]] = {}
        if not args.no_latency:
            sample = [texts[i] for i in rng.choice(len(texts), min(args.n, len(texts)), False)]
            latency = _latency({n: models[n] for n in TIMED}, sample, args.rounds)
    decision = _decision(quality, latency)
    result = {
        "command": "python benchmarks/int8_static.py "
        + f"--bundle {args.bundle} --artifacts {args.artifacts} --split {args.split} "
        + f"--calib-n {args.calib_n} --n {args.n} --rounds {args.rounds} --seed {args.seed}"
        + (" --no-latency" if args.no_latency else ""),
        "bundle_version": manifest.bundle_version,
        "bundle_threshold": manifest.ood.threshold if manifest.ood else manifest.threshold,
        "split": args.split,
        "n_queries": len(texts),
        "calibration": {
            "split": "train",
            "n_queries": len(calib),
            "tokens_mean": round(float(np.mean([len(s) for s in calib])), 1),
            "tokens_max": max(len(s) for s in calib),
        },
        "build_seconds": build_seconds,
        "graphs": info,
        "knobs": KNOBS,
        "quality": quality,
        "latency": latency,
        "decision_bar": {
            "max_cpu_ratio_session_batch1": MAX_CPU_RATIO,
            "min_fp32_agreement": MIN_FP32_AGREEMENT,
            "max_drop_points_in_scope_and_oos_at_threshold": MAX_DROP_POINTS,
        },
        "decision": decision,
        "qualifying": sorted(n for n, d in decision.items() if d["qualifies"]),
        "intra_op_threads": 1,
        "load_average_before": [round(x, 2) for x in load0],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "onnxruntime": ort.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(decision, indent=1))
    print(f"-> {args.out}")


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


if __name__ == "__main__":
    main()
