"""ONNX side of the build: optimum export (or `bert_onnx`'s torch-free graph), folding the
head into the graph, int8 quantization.

After `fold_head` (`add_pooling`, then `add_head`) the graph takes `input_ids`,
`attention_mask` (and `token_type_ids` if the export has it) and returns `probs` (batch,
n_labels) and `sentence_embedding` (batch, dim, L2-normalised), so one session call serves
both classification and retrieval.
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
    "HEAD_MATMUL",
    "QUANTIZATION",
]

log = logging.getLogger(__name__)

HEAD_MATMUL = "aivos_head_matmul"
QUANTIZATION = "int8-dynamic-per-channel"
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


def quantize_int8(fp32: Path, out: Path) -> Path:
    """Dynamic int8, per-channel weights; the small head MatMul stays fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model_input=str(fp32),
        model_output=str(out),
        per_channel=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=[HEAD_MATMUL],
    )
    return out
