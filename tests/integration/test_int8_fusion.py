"""The full build's int8 step (`onnxgraph.fuse_and_quantize_int8`): the optimum export of the
base encoder with a folded head, fused (Attention, SkipLayerNormalization, Gelu,
EmbedLayerNormalization) and quantized, keeps the graph's inputs and outputs and classifies
clear queries as its fp32 source does; a graph the optimizer cannot fuse is quantized as
before and says so."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from aivos.cloud.modelbuild.bert_onnx import encoder_graph
from aivos.cloud.modelbuild.frozen_build import embed_texts
from aivos.cloud.modelbuild.onnxgraph import (
    QUANTIZATION,
    QUANTIZATION_FUSED,
    FusionIncomplete,
    add_pooling,
    export_encoder,
    fold_head,
    fuse_and_quantize_int8,
    fuse_bert,
    fused_op_counts,
)
from aivos.cloud.modelbuild.source import base_model_dir

pytest.importorskip("optimum.exporters.onnx")

INTENTS = {
    "balance": ["what is my account balance", "how much money do i have", "show my balance"],
    "alarm": ["set an alarm for 7 am", "wake me up at six tomorrow", "alarm at noon please"],
    "weather": ["what is the weather today", "will it rain tomorrow", "is it sunny outside"],
    "joke": ["tell me a joke", "say something funny", "make me laugh with a joke"],
}
QUERIES = {  # clear paraphrases, 2 to ~15 tokens: one padded batch mixes the lengths
    "how much is in my checking account right now": "balance",
    "balance": "balance",
    "please set an alarm to wake me at 5:30 in the morning": "alarm",
    "is it going to rain this afternoon in the city": "weather",
    "weather": "weather",
    "do you know any good jokes": "joke",
}


def _run(model: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(probs, embeddings) of one right-padded batch, as the edge runtime feeds it."""
    tok = Tokenizer.from_file(str(base_model_dir() / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    feed = {
        "input_ids": ids,
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.zeros_like(ids),
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    probs, emb = sess.run(["probs", "sentence_embedding"], feed)
    return probs, emb


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, list[str]]:
    """(fp32 folded graph, its fused int8 graph, the recipe returned, labels)."""
    work = tmp_path_factory.mktemp("int8-fusion")
    exported = export_encoder(base_model_dir(), work / "onnx")
    onnx.save(add_pooling(onnx.load(str(exported))), str(work / "embed.onnx"))
    labels = sorted(INTENTS)
    protos = np.stack(
        [
            embed_texts(work / "embed.onnx", base_model_dir() / "tokenizer.json", INTENTS[k]).mean(
                0
            )
            for k in labels
        ]
    )
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    fp32 = fold_head(exported, 20.0 * protos, np.zeros(len(labels)), work / "model_fp32.onnx")
    recipe = fuse_and_quantize_int8(fp32, work / "model.onnx", base_model_dir() / "config.json")
    return fp32, work / "model.onnx", recipe, labels


def test_the_built_graph_carries_the_fused_quantized_ops(
    built: tuple[Path, Path, str, list[str]],
) -> None:
    _, int8, recipe, _ = built
    assert recipe == QUANTIZATION_FUSED
    model = onnx.load(str(int8))
    ops = Counter(n.op_type for n in model.graph.node)
    layers = 6  # all-MiniLM-L6-v2
    assert ops["QAttention"] == layers
    assert ops["QEmbedLayerNormalization"] == 1
    assert ops["SkipLayerNormalization"] == 2 * layers
    assert ops["Gelu"] == layers
    assert ops["LayerNormalization"] == ops["Attention"] == ops["Erf"] == 0  # nothing unfused
    assert fused_op_counts(model) == {
        "EmbedLayerNormalization": 1,
        "Attention": layers,
        "SkipLayerNormalization": 2 * layers,
        "Gelu": layers,
    }
    # the head MatMul stays fp32: the only plain MatMul left
    assert ops["MatMul"] == 1


def test_inputs_and_outputs_are_the_fp32_graphs(built: tuple[Path, Path, str, list[str]]) -> None:
    fp32, int8, _, _ = built
    a = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in a.get_inputs()] == [(i.name, i.type) for i in b.get_inputs()]
    assert [(o.name, o.type) for o in a.get_outputs()] == [
        (o.name, o.type) for o in b.get_outputs()
    ]


def test_same_top1_as_the_fp32_source_in_one_padded_batch(
    built: tuple[Path, Path, str, list[str]],
) -> None:
    fp32, int8, _, labels = built
    texts = list(QUERIES)
    p32, e32 = _run(fp32, texts)
    p8, e8 = _run(int8, texts)
    assert [labels[i] for i in p32.argmax(1)] == list(QUERIES.values())
    assert [labels[i] for i in p8.argmax(1)] == list(QUERIES.values())
    assert float((e8 * e32).sum(1).min()) > 0.95  # int8 stays close to its fp32 source
    # alone, each query gets the label it gets in the padded batch (dynamic int8 scales
    # activations per batch, so the numbers themselves move a little)
    alone = np.concatenate([_run(int8, [t])[0] for t in texts])
    assert (alone.argmax(1) == p8.argmax(1)).all()


def test_fusion_alone_is_the_same_function(
    built: tuple[Path, Path, str, list[str]], tmp_path: Path
) -> None:
    """Before quantization the fused graph computes what its source does, padding included:
    the fused Attention reads the raw 2-D mask."""
    fp32, _, _, _ = built
    fused = fuse_bert(fp32, tmp_path / "fused.onnx", num_heads=12, hidden_size=384)
    texts = list(QUERIES)
    p_src, e_src = _run(fp32, texts)
    p_fused, e_fused = _run(fused, texts)
    assert float(np.abs(e_fused - e_src).max()) < 1e-4
    assert float(np.abs(p_fused - p_src).max()) < 1e-4
    alone = np.concatenate([_run(fused, [t])[1] for t in texts])
    assert float(np.abs(alone - e_fused).max()) < 1e-4


def test_a_graph_the_optimizer_cannot_fuse_is_quantized_unfused(tmp_path: Path) -> None:
    """The quick build's torch-free encoder graph does not match the attention patterns:
    `fuse_bert` refuses it and the full build's step falls back to the plain recipe."""
    onnx.save(add_pooling(encoder_graph(base_model_dir())), str(tmp_path / "fp32.onnx"))
    with pytest.raises(FusionIncomplete):
        fuse_bert(tmp_path / "fp32.onnx", tmp_path / "fused.onnx")
    assert not (tmp_path / "fused.onnx").exists()
    recipe = fuse_and_quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    assert recipe == QUANTIZATION
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node)
    assert ops["QAttention"] == 0 and ops["MatMulInteger"] > 0
