"""The quick first bundle without torch: the base encoder frozen, only the intent head trained.

    base encoder graph (bert_onnx, from safetensors) + pooling -> int8 (per channel)
    -> embed the training rows (onnxruntime) -> cosine head (numpy_head)
    -> head appended to the int8 graph -> threshold calibrated on val
    -> out-of-scope statistics (shared/ood.py) from the same training embeddings -> bundle

The bundle is what `build.build_bundle(..., epochs=0, augment_ratio=0)` writes — same graph
inputs and outputs, quantization, tokenizer, calibration, out-of-scope statistics
(``ood.npz`` and the manifest's ``ood``, so the edge serves the same score as for a full
build), canary and manifest fields — so the edge loads it as any other; only the way there
needs onnx, onnxruntime and numpy alone, which is what lets `scripts/up` answer before the
torch stack is installed.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from rich.console import Console
from tokenizers import Tokenizer

from aivos.cloud.modelbuild.bert_onnx import (
    BertConfig,
    encoder_graph,
    encoder_hash,
    read_safetensors,
)
from aivos.cloud.modelbuild.build import (
    BUNDLE_FILES,
    _expected_oos_recall,
    _golden,
    _write_tokenizer,
    _write_words,
)
from aivos.cloud.modelbuild.calibrate import (
    GENERIC_IN_SCOPE_BUDGET,
    choose_threshold,
    ood_calibration_from,
    predict_probs,
    scores_at,
    scores_on,
)
from aivos.cloud.modelbuild.numpy_head import HeadRecipe, train_cosine_head
from aivos.cloud.modelbuild.onnxgraph import QUANTIZATION, add_head, add_pooling, quantize_int8
from aivos.cloud.modelbuild.source import (
    BASE_MODEL_ID,
    MAX_LENGTH,
    TrainingData,
    base_model_dir,
    offline,
    training_data,
)
from aivos.shared.bundle import (
    FORMAT_VERSION,
    Manifest,
    TrainingSummary,
    sha256_file,
    staged_bundle,
    write_manifest,
)
from aivos.shared.datasets import OOS_LABEL
from aivos.shared.ood import OOD_FILE, SCORE

__all__ = ["EmbedPrecision", "build_frozen_bundle", "embed_texts"]

# Which graph embeds the training rows: the int8 one the bundle serves (faster, and the head
# learns the embeddings it will see) or the fp32 one. benchmarks/quick_bundle.py measures both.
EmbedPrecision = Literal["int8", "fp32"]


def embed_texts(model: Path, tokenizer_file: Path, texts: Sequence[str]) -> np.ndarray:
    """`sentence_embedding` of `model` for `texts`, in order; length-sorted batches cut
    padding (CLINC150's rows are 3 to 30 tokens)."""
    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), sess.get_outputs()[-1].shape[-1]), dtype=np.float32)
    for start in range(0, len(order), 64):
        idx = order[start : start + 64]
        enc = tok.encode_batch([texts[i] for i in idx])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        feed = {
            "input_ids": ids,
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.zeros_like(ids),
        }
        (out[idx],) = sess.run(["sentence_embedding"], feed)
    return out


def _with_generic_negatives(data: TrainingData, embed_model: Path, tokenizer: Path) -> TrainingData:
    """`source.training_data`'s generic negatives, embedded with the ONNX graph instead of
    torch (`source.base_encoder_embed`): the same pool, the same overlap rule."""
    from aivos.cloud.modelbuild.negatives import generic_negatives

    negatives = generic_negatives(
        data.train, embed=lambda texts: embed_texts(embed_model, tokenizer, texts), seed=13
    )
    return dataclasses.replace(
        data,
        train=[*data.train, *negatives.train],
        heldout_negatives=negatives.heldout,
        labels=[*data.labels, OOS_LABEL],
        train_source=f"{data.train_source} + {negatives.describe()}",
        val_source=f"{data.val_source}; expected oos recall on {negatives.describe_heldout()}",
        n_generic_negatives=len(negatives.train),
        max_in_scope_drop=GENERIC_IN_SCOPE_BUDGET,
    )


def build_frozen_bundle(
    data_file: Path,
    out: Path,
    *,
    version_prefix: str = "intent-",
    embed_precision: EmbedPrecision = "int8",
    recipe: HeadRecipe | None = None,
    console: Console | None = None,
) -> Manifest:
    """Write the frozen-encoder bundle for `data_file` (CLINC150 layout; val from its
    `#val` split) to `out`, atomically. Returns its manifest."""
    offline()
    recipe = recipe or HeadRecipe()
    console = console or Console(stderr=True)
    started = time.monotonic()

    def stage(what: str) -> None:
        console.print(f"quick build: {what} ({time.monotonic() - started:.0f} s)")

    data = training_data(data_file, f"{data_file}#val", augment_ratio=0.0, generic_negatives=False)
    base = base_model_dir()
    with tempfile.TemporaryDirectory(prefix="aivos-quick-") as tmp, staged_bundle(out) as staging:
        work = Path(tmp)
        stage("encoder graph from the base model's safetensors")
        weights = read_safetensors(base / "model.safetensors")
        weights_hash = encoder_hash(weights)
        embedder = add_pooling(encoder_graph(base, weights))
        del weights
        onnx.save(embedder, str(work / "embed_fp32.onnx"))
        stage("quantize int8 per-channel")
        # unfused: onnxruntime's BERT fusion (the full build's `fuse_and_quantize_int8`) does
        # not recognise bert_onnx's attention, GELU or embedding nodes (tests/integration/
        # test_int8_fusion.py), so this graph is quantized as written
        int8 = quantize_int8(work / "embed_fp32.onnx", work / "embed_int8.onnx")
        tokenizer_file = _write_tokenizer(staging / "tokenizer.json")
        embed_model = int8 if embed_precision == "int8" else work / "embed_fp32.onnx"
        if OOS_LABEL not in data.labels:
            stage("borrowing generic negatives")
            data = _with_generic_negatives(data, embed_model, tokenizer_file)
        train, val, labels = data.train, data.val, data.labels
        stage(f"embedding {len(train)} training rows ({embed_precision})")
        embs = embed_texts(embed_model, tokenizer_file, [e.text for e in train])
        stage(f"training the head ({recipe.epochs} epochs)")
        index = {label: i for i, label in enumerate(labels)}
        weight, bias = train_cosine_head(embs, [index[e.label] for e in train], len(labels), recipe)
        served = add_head(onnx.load(str(int8)), weight, bias)
        onnx.checker.check_model(served)
        model = staging / "model.onnx"
        onnx.save(served, str(model))
        stage(f"calibrating the threshold on {len(val)} val rows")
        val_texts, val_truth = [e.text for e in val], [e.label for e in val]
        probs, val_emb = predict_probs(model, tokenizer_file, val_texts)
        threshold = choose_threshold(probs, val_truth, labels, OOS_LABEL, data.max_in_scope_drop)
        msp_in_acc, msp_oos_rec = scores_at(probs, val_truth, labels, threshold, OOS_LABEL)
        stage("out-of-scope statistics (train embeddings)")
        # the served graph's embeddings of the training rows: the ones the head was trained
        # on when they came from the int8 graph (the served graph is that graph + the head)
        train_emb = (
            embs
            if embed_precision == "int8"
            else embed_texts(model, tokenizer_file, [e.text for e in train])
        )
        # fitted on the embeddings the head was trained on: embedding the 15,000 CLINC150
        # rows again would cost about as much CPU as the rest of the quick build
        scorer, ood = ood_calibration_from(
            staging, train, train_emb, labels, probs, val_emb, val_truth, data.max_in_scope_drop
        )
        pred = np.asarray(labels)[probs.argmax(1)]
        score = scorer.score(probs.max(1), val_emb)
        in_acc, oos_rec = scores_on(score, pred, val_truth, ood.threshold, OOS_LABEL)
        expected = _expected_oos_recall(
            model, tokenizer_file, data, labels, scorer, ood.threshold, oos_rec
        )  # with the served score, as the full build measures it
        _write_words(staging, train)  # no noisy copies in this build
        files = {name: sha256_file(staging / name) for name in (*BUNDLE_FILES, OOD_FILE)}
        created = datetime.now(UTC)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            bundle_version=f"{version_prefix}{created:%Y%m%dT%H%M%SZ}-{files['model.onnx'][:8]}",
            labels=labels,
            threshold=threshold,
            embedding_model_id=BASE_MODEL_ID,
            embedding_dim=int(weight.shape[1]),
            max_length=MAX_LENGTH,
            quantization=QUANTIZATION,
            training=TrainingSummary(
                train_source=data.train_source,
                val_source=data.val_source,
                n_train=len(train),
                n_val=len(val),
                n_labels=len(labels),
                epochs=0,
                fine_tuned_encoder=False,
                seconds=round(time.monotonic() - started, 1),
                encoder_layers=BertConfig.from_model_dir(base).num_layers,
            ),
            metrics={
                "val_in_scope_accuracy": round(in_acc, 4),
                "val_oos_recall": round(oos_rec, 4),
                # MSP alone against `threshold` (runtimes that predate `ood`)
                "val_msp_in_scope_accuracy": round(msp_in_acc, 4),
                "val_msp_oos_recall": round(msp_oos_rec, 4),
                "val_n_in_scope": float(sum(t != OOS_LABEL for t in val_truth)),
                "val_n_oos": float(sum(t == OOS_LABEL for t in val_truth)),
                **expected,
                "n_generic_negatives": float(data.n_generic_negatives),
                "n_augmented": 0.0,
                "calibration_in_scope_budget": data.max_in_scope_drop,
            },
            files=files,
            created_at=created.isoformat(),
            golden=_golden(val_texts, val_truth, probs, labels, threshold),
            canary_min_accuracy=0.9,
            # the base encoder's weights hashed as the torch build hashes them
            embedding_version=f"{BASE_MODEL_ID}@{weights_hash[:16]}/{QUANTIZATION}",
            ood=ood,
        )
        write_manifest(staging, manifest)
    console.print(
        f"[green]bundle[/green] {manifest.bundle_version} -> {out}  "
        f"{SCORE} threshold={ood.threshold:.3f} val in-scope={in_acc:.2%} "
        f"val oos-recall={oos_rec:.2%} (MSP alone: threshold={threshold:.3f} "
        f"{msp_in_acc:.2%} / {msp_oos_rec:.2%}) ({time.monotonic() - started:.0f} s)"
    )
    return manifest
