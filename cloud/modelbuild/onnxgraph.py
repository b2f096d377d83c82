"""ONNX side of the build: optimum export (or `bert_onnx`'s torch-free graph), folding the
head into the graph, BERT operator fusion, int8 quantization.

After `fold_head` (`add_pooling`, then `add_head`) the graph takes `input_ids`,
`attention_mask` (and `token_type_ids` if the export has it) and returns `probs` (batch,
n_labels) and `sentence_embedding` (batch, dim, L2-normalised), so one session call serves
both classification and retrieval.

The full build (`fuse_for_int8`, then `quantize_int8`; `fuse_and_quantize_int8` in one
call) first fuses the fp32 graph with onnxruntime's transformer optimizer (Attention, SkipLayerNormalization, Gelu, EmbedLayerNormalization),
then quantizes it: once its MatMuls are quantized the runtime's own optimizer can no longer
fuse attention or the layer norms around them, and the unfused int8 graph runs ~280 kernels
per query instead of ~66 (benchmarks/int8_fusion.py). Inputs and outputs stay as above.
`quantize_int8` quantizes as given: the quick build's `bert_onnx` graph does not match the
optimizer's attention patterns.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "export_encoder",
    "fold_head",
    "add_pooling",
    "add_head",
    "quantize_int8",
    "fuse_and_quantize_int8",
    "fuse_for_int8",
    "fuse_bert",
    "fused_op_counts",
    "FusionIncomplete",
    "HEAD_MATMUL",
    "QUANTIZATION",
    "QUANTIZATION_FUSED",
]

log = logging.getLogger(__name__)

HEAD_MATMUL = "aivos_head_matmul"
QUANTIZATION = "int8-dynamic-per-channel"
QUANTIZATION_FUSED = "int8-dynamic-per-channel-fused"
# the fused ops `fuse_bert` expects, one per layer (Attention, Gelu), two per layer
# (SkipLayerNormalization) or one per graph (EmbedLayerNormalization); after quantization the
# Attention and EmbedLayerNormalization nodes become their Q* forms
FUSED_OPS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "Gelu")
_OPSET = 17


def export_encoder(model_dir: Path, out_dir: Path) -> Path:
    """Export a transformers encoder directory to `out_dir/model.onnx` with optimum."""
    from optimum.exporters.onnx import main_export

    main_export(
        model_name_or_path=str(model_dir),
        output=str(out_dir),
        task="feature-extraction",
        opset=_OPSET,
        device="cpu",
        do_validation=False,
        library_name="transformers",
    )
    path = out_dir / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def fold_head(encoder_onnx: Path, weight: np.ndarray, bias: np.ndarray, out: Path) -> Path:
    """Append mean pooling + L2 norm + linear head + softmax to the exported encoder graph."""
    model = onnx.load(str(encoder_onnx))
    add_pooling(model)
    add_head(model, weight, bias)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def add_pooling(model: onnx.ModelProto) -> onnx.ModelProto:
    """In place: mean pooling over real tokens + L2 norm after `last_hidden_state`; the
    graph's one output becomes `sentence_embedding` (batch, dim). An embedding model by
    itself (the quick build embeds its training rows with it) and the base of `add_head`."""
    graph = model.graph
    hidden = next(o for o in graph.output if o.name == "last_hidden_state")
    dim = hidden.type.tensor_type.shape.dim[-1].dim_value
    mask_in = "attention_mask"
    axes1 = numpy_helper.from_array(np.array([1], dtype=np.int64), "aivos_axes_1")
    axes_last = numpy_helper.from_array(np.array([-1], dtype=np.int64), "aivos_axes_last")
    eps = numpy_helper.from_array(np.array(1e-9, dtype=np.float32), "aivos_eps")
    eps12 = numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "aivos_eps12")
    graph.initializer.extend([axes1, axes_last, eps, eps12])
    n = helper.make_node
    graph.node.extend(
        [
            n("Cast", [mask_in], ["aivos_mask_f"], to=TensorProto.FLOAT),
            n("Unsqueeze", ["aivos_mask_f", "aivos_axes_last"], ["aivos_mask3"]),
            n("Mul", [hidden.name, "aivos_mask3"], ["aivos_masked"]),
            n("ReduceSum", ["aivos_masked", "aivos_axes_1"], ["aivos_sum"], keepdims=0),
            n("ReduceSum", ["aivos_mask3", "aivos_axes_1"], ["aivos_count0"], keepdims=0),
            n("Max", ["aivos_count0", "aivos_eps"], ["aivos_count"]),
            n("Div", ["aivos_sum", "aivos_count"], ["aivos_mean"]),
            n("Mul", ["aivos_mean", "aivos_mean"], ["aivos_sq"]),
            n("ReduceSum", ["aivos_sq", "aivos_axes_last"], ["aivos_sqsum"], keepdims=1),
            n("Sqrt", ["aivos_sqsum"], ["aivos_norm0"]),
            n("Max", ["aivos_norm0", "aivos_eps12"], ["aivos_norm"]),
            n("Div", ["aivos_mean", "aivos_norm"], ["sentence_embedding"]),
        ]
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info(
            "sentence_embedding", TensorProto.FLOAT, ["batch_size", dim or "dim"]
        )
    )
    return model


def add_head(model: onnx.ModelProto, weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """In place: the linear head + softmax on `sentence_embedding` (of `add_pooling`, also
    after int8 quantization, which keeps the output's name); outputs become `probs` and
    `sentence_embedding`. The head MatMul is named `HEAD_MATMUL` and stays fp32."""
    graph = model.graph
    w = numpy_helper.from_array(np.ascontiguousarray(weight.T.astype(np.float32)), "aivos_head_w")
    b = numpy_helper.from_array(bias.astype(np.float32), "aivos_head_b")
    graph.initializer.extend([w, b])
    n = helper.make_node
    graph.node.extend(
        [
            n(
                "MatMul",
                ["sentence_embedding", "aivos_head_w"],
                ["aivos_logits0"],
                name=HEAD_MATMUL,
            ),
            n("Add", ["aivos_logits0", "aivos_head_b"], ["aivos_logits"]),
            n("Softmax", ["aivos_logits"], ["probs"], axis=-1),
        ]
    )
    del graph.output[:]
    n_labels, dim = weight.shape
    graph.output.extend(
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch_size", n_labels]),
            helper.make_tensor_value_info(
                "sentence_embedding", TensorProto.FLOAT, ["batch_size", dim]
            ),
        ]
    )
    return model


def fused_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each fused kind (`FUSED_OPS`, quantized `Q*` forms counted with
    their fp32 kind) `model` has."""
    counts = dict.fromkeys(FUSED_OPS, 0)
    for node in model.graph.node:
        kind = node.op_type[1:] if node.op_type.startswith("Q") else node.op_type
        if kind in counts:
            counts[kind] += 1
    return counts


class FusionIncomplete(ValueError):
    """The optimizer did not find every layer's attention, GELU and layer norms."""


def fuse_bert(
    fp32: Path, out: Path, *, num_heads: int = 0, hidden_size: int = 0, merge_biases: bool = False
) -> Path:
    """onnxruntime's BERT fusion of `fp32` (an optimum export + `fold_head` or `add_pooling`
    graph) into `out`: embeddings + LayerNorm into EmbedLayerNormalization, each layer's
    attention into one Attention node (Q, K, V weights packed), residual + LayerNorm into
    SkipLayerNormalization, erf GELU into Gelu. The same math; the pooling and head appended
    by this module pass through untouched. The dense layers' bias Adds stay after their
    MatMuls (no BiasGelu, no bias input on SkipLayerNormalization): the edge's session folds
    them into its int8 MatMul kernels, which measured faster on sub-batches of 4 (1.06x the
    unfused graph's CPU per query against 1.10x with BiasGelu; benchmarks/int8_fusion.py).
    `num_heads`/`hidden_size` 0: read from the graph. Python fusions only (opt_level 0):
    nothing tied to this machine's CPU is baked in; the edge's session still optimizes at
    ORT_ENABLE_ALL. The fused Attention reads the 2-D attention mask as given (raw mask), as
    the unfused graph does. `merge_biases`: the optimizer's default instead (BiasGelu, bias
    on SkipLayerNormalization), which benchmarks/int8_fusion.py measures beside this.

    Raises `FusionIncomplete` (nothing written) unless every layer fused."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)
    options.enable_bias_gelu = merge_biases
    options.enable_bias_skip_layer_norm = merge_biases
    fused = optimize_model(
        str(fp32),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=0,
    )
    counts = fused_op_counts(fused.model)
    layers = counts["Attention"]
    gelus = counts["Gelu"] + sum(n.op_type == "BiasGelu" for n in fused.model.graph.node)
    if (
        not layers
        or counts["EmbedLayerNormalization"] != 1
        or counts["SkipLayerNormalization"] != 2 * layers
        or gelus != layers
    ):
        raise FusionIncomplete(f"BERT fusion incomplete for {fp32}: {counts}")
    fused.save_model_to_file(str(out), use_external_data_format=False)
    return out


def quantize_int8(fp32: Path, out: Path, *, per_channel: bool = True) -> Path:
    """Dynamic int8, per-channel weights (per-tensor: `per_channel=False`, measured by
    benchmarks/int8_fusion.py); the small head MatMul stays fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model_input=str(fp32),
        model_output=str(out),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=[HEAD_MATMUL],
        # shape inference cannot type the outputs of com.microsoft (fused) ops: fp32 all
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    return out


def fuse_for_int8(fp32: Path, out: Path, encoder_config: Path | None = None) -> tuple[Path, str]:
    """The graph to quantize and the manifest's `quantization` for it: `fuse_bert(fp32, out)`
    and `QUANTIZATION_FUSED`, or, when the graph does not fuse completely (an encoder the
    optimizer does not know), `fp32` itself and `QUANTIZATION`, with a warning.
    `encoder_config`: the encoder's transformers `config.json` (heads and hidden size; else
    read from the graph)."""
    import json

    heads = hidden = 0
    if encoder_config is not None:
        config = json.loads(encoder_config.read_text())
        heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
    try:
        return fuse_bert(fp32, out, num_heads=heads, hidden_size=hidden), QUANTIZATION_FUSED
    except FusionIncomplete as exc:
        log.warning("%s: quantizing the unfused graph", exc)
        return fp32, QUANTIZATION


def fuse_and_quantize_int8(fp32: Path, out: Path, encoder_config: Path | None = None) -> str:
    """`fuse_for_int8`, then `quantize_int8` into `out`: Attention becomes QAttention,
    EmbedLayerNormalization QEmbedLayerNormalization, the other weight MatMuls MatMulInteger;
    the head MatMul stays fp32. Returns the manifest's `quantization`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="aivos-fuse-") as tmp:
        source, quantization = fuse_for_int8(fp32, Path(tmp) / "fused.onnx", encoder_config)
        quantize_int8(source, out)
    return quantization
