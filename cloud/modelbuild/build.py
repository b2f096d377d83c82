"""Build an intent bundle: data -> fine-tune -> export -> fold head -> int8 -> calibrate ->
out-of-scope statistics (shared/ood.py) -> bundle."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from aivos.cloud.modelbuild.augment import AUGMENT_RATIO
from aivos.cloud.modelbuild.calibrate import (
    choose_threshold,
    ood_calibration,
    predict_probs,
    scores_at,
    scores_on,
)
from aivos.cloud.modelbuild.fewshot import few_shot_config, is_few_shot, rows_per_intent
from aivos.cloud.modelbuild.onnxgraph import export_encoder, fold_head, fuse_for_int8, quantize_int8
from aivos.cloud.modelbuild.progress import PlainProgress, build_progress
from aivos.cloud.modelbuild.source import (
    BASE_MODEL_ID,
    MAX_LENGTH,
    TrainingData,
    base_model_dir,
    offline,
    stratified_split,
    training_data,
)
from aivos.shared.bundle import (
    FORMAT_VERSION,
    GoldenQuery,
    Manifest,
    TrainingSummary,
    sha256_file,
    staged_bundle,
    write_manifest,
)
from aivos.shared.datasets import OOS_LABEL, Example
from aivos.shared.ood import OOD_FILE, SCORE, OodScorer
from aivos.shared.vocabulary import VOCABULARY_FILE, count_words, write_vocabulary

__all__ = ["build_bundle", "stratified_split"]

log = logging.getLogger(__name__)

_N_GOLDEN = 20


def _encoder_hash(net: object) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(net.encoder.state_dict().items()):  # type: ignore[attr-defined]
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def _stage(progress: Progress | PlainProgress, name: str, total: float = 1) -> Iterator[object]:
    task = progress.add_task(name, total=max(1, total))
    yield lambda n=1: progress.advance(task, n)
    progress.update(task, completed=max(1, total))


def build_bundle(
    train_spec: str | Path,
    out: Path,
    val_spec: str | Path | None = None,
    *,
    epochs: int = 2,
    head_only_epochs: int = 0,
    seed: int = 13,
    keep_artifacts: Path | None = None,
    console: Console | None = None,
    max_train_examples: int | None = None,
    layers: int = 0,
    frozen_layers: int = 2,
    distill_weight: float = 0.0,
    augment_ratio: float = AUGMENT_RATIO,
    generic_negatives: bool = True,
    exclude_negatives: Sequence[str] = (),
    few_shot: bool | None = None,
) -> Manifest:
    """Train and write a bundle to `out` (atomically). Returns its manifest.

    Without `oos` rows in the training data, generic negatives are borrowed (unless
    `generic_negatives` is off; `exclude_negatives` keeps named CLINC150 intents out of that
    pool); `augment_ratio` of the rows get a noisy copy (`source.training_data`).
    `few_shot` switches the few-shot recipe on or off (`fewshot.py`); None = for small data.
    `distill_weight` > 0 keeps the embedding close to the full-depth base model's while
    fine-tuning (`TrainConfig.distill_weight`), for retrieval with fewer `layers`."""
    from aivos.cloud.modelbuild.finetune import (
        HEAD_ONLY_BATCH,
        TrainConfig,
        planned_epochs,
        save_encoder,
        train_intent_model,
    )

    offline()
    started = time.monotonic()
    console = console or Console(stderr=True)
    data = training_data(
        train_spec,
        val_spec,
        seed=seed,
        augment_ratio=augment_ratio,
        generic_negatives=generic_negatives,
        exclude_negatives=exclude_negatives,
        max_train_examples=max_train_examples,
    )
    train, val, labels = data.train, data.val, data.labels
    index = {label: i for i, label in enumerate(labels)}

    config = TrainConfig(
        epochs=epochs,
        head_only_epochs=head_only_epochs,
        seed=seed,
        layers=layers,
        frozen_layers=frozen_layers,
        distill_weight=distill_weight,
    )
    # Rows per intent as the user gave them: the noisy copies sit at the end of `train`.
    user_labels = [e.label for e in train[: len(train) - data.n_augmented]]
    if few_shot is None:  # the recipe is about fine-tuning: a frozen-encoder build keeps its own
        few_shot = epochs > 0 and is_few_shot(user_labels)
    if few_shot:
        config = few_shot_config(config)
        log.info("few-shot recipe: %.0f rows per intent", rows_per_intent(user_labels))
    epochs = planned_epochs(config, len(train))
    head_batch = max(config.batch_size, HEAD_ONLY_BATCH)
    steps = ((len(train) + config.batch_size - 1) // config.batch_size) * epochs + (
        (len(train) + head_batch - 1) // head_batch
    ) * head_only_epochs
    steps += config.contrastive_steps  # the few-shot pair stage advances the same bar first
    progress = build_progress(console)  # bars with ETA on a terminal, else plain lines
    with tempfile.TemporaryDirectory(prefix="aivos-build-") as tmp_name, progress:
        work = keep_artifacts or Path(tmp_name)
        work.mkdir(parents=True, exist_ok=True)
        with _stage(progress, "fine-tune encoder + head", steps) as advance:
            net, hf_tokenizer = train_intent_model(
                [e.text for e in train],
                [index[e.label] for e in train],
                len(labels),
                config,
                progress=advance,  # type: ignore[arg-type]
            )
        head = net.folded_head()
        encoder_hash = _encoder_hash(net)
        with _stage(progress, "export to ONNX (optimum)"):
            save_encoder(net, hf_tokenizer, work / "encoder")
            np.savez(work / "head.npz", weight=head.weight, bias=head.bias)
            exported = export_encoder(work / "encoder", work / "onnx")
        with _stage(progress, "fold pooling + head"):
            fp32 = fold_head(exported, head.weight, head.bias, work / "model_fp32.onnx")
        with staged_bundle(out) as staging:
            with _stage(progress, "fuse attention + quantize int8 per-channel"):
                # fused Attention/LayerNorm/GELU before int8 (benchmarks/int8_fusion.py)
                fused, quantization = fuse_for_int8(
                    fp32, work / "model_fused.onnx", work / "encoder" / "config.json"
                )
                model = quantize_int8(fused, staging / "model.onnx")
                tokenizer_file = _write_tokenizer(staging / "tokenizer.json")
                # the user's rows and borrowed negatives, not the noisy copies: their typos
                # must not become words the edge's spelling correction knows
                _write_words(staging, train[: len(train) - data.n_augmented])
            with _stage(progress, "calibrate threshold (val)", len(val)) as advance:
                val_texts = [e.text for e in val]
                val_truth = [e.label for e in val]
                probs, val_emb = predict_probs(model, tokenizer_file, val_texts)
                advance(len(val))  # type: ignore[operator]
                threshold = choose_threshold(
                    probs, val_truth, labels, OOS_LABEL, data.max_in_scope_drop
                )
                msp_in_acc, msp_oos_rec = scores_at(probs, val_truth, labels, threshold, OOS_LABEL)
            with _stage(progress, "out-of-scope statistics (train embeddings)"):
                # the user's rows as given: not the noisy copies, not the borrowed negatives
                user_rows = train[: len(train) - data.n_augmented]
                scorer, ood = ood_calibration(
                    staging,
                    model,
                    tokenizer_file,
                    user_rows,
                    labels,
                    probs,
                    val_emb,
                    val_truth,
                    data.max_in_scope_drop,
                )
                score = scorer.score(probs.max(1), val_emb)
                in_acc, oos_rec = scores_on(
                    score, _predicted(probs, labels), val_truth, ood.threshold, OOS_LABEL
                )
                expected = _expected_oos_recall(
                    model, tokenizer_file, data, labels, scorer, ood.threshold, oos_rec
                )
            golden = _golden(val_texts, val_truth, probs, labels, threshold)
            files = {name: sha256_file(staging / name) for name in (*BUNDLE_FILES, OOD_FILE)}
            created = datetime.now(UTC)
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                bundle_version=f"intent-{created:%Y%m%dT%H%M%SZ}-{files['model.onnx'][:8]}",
                labels=labels,
                threshold=threshold,
                embedding_model_id=BASE_MODEL_ID,
                embedding_dim=int(head.weight.shape[1]),
                max_length=MAX_LENGTH,
                quantization=quantization,
                training=TrainingSummary(
                    train_source=data.train_source,
                    val_source=data.val_source,
                    n_train=len(train),
                    n_val=len(val),
                    n_labels=len(labels),
                    epochs=epochs,
                    fine_tuned_encoder=epochs > 0,
                    seconds=round(time.monotonic() - started, 1),
                    encoder_layers=_encoder_layers(net),
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
                    "n_augmented": float(data.n_augmented),
                    "calibration_in_scope_budget": data.max_in_scope_drop,
                    # a recipe knob, not a measurement: TrainingSummary has no field for it
                    **({"distill_weight": distill_weight} if config.distill_weight > 0 else {}),
                },
                files=files,
                created_at=created.isoformat(),
                golden=golden,
                canary_min_accuracy=0.9,
                embedding_version=f"{BASE_MODEL_ID}@{encoder_hash[:16]}/{quantization}",
                ood=ood,
            )
            write_manifest(staging, manifest)
    console.print(
        f"[green]bundle[/green] {manifest.bundle_version} -> {out}  "
        f"{SCORE} threshold={ood.threshold:.3f} val in-scope={in_acc:.2%} "
        f"val oos-recall={oos_rec:.2%} (MSP alone: threshold={threshold:.3f} "
        f"{msp_in_acc:.2%} / {msp_oos_rec:.2%})"
    )
    if "expected_oos_recall" in expected:
        console.print(
            f"expected oos recall {expected['expected_oos_recall']:.1%}, measured on "
            f"{expected['expected_oos_recall_n']:.0f} "
            + (
                "held-out generic negatives (never trained on)"
                if data.heldout_negatives
                else "oos rows of the validation data"
            )
        )
    return manifest


def _predicted(probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    return np.asarray(labels)[probs.argmax(1)]


def _expected_oos_recall(
    model: Path,
    tokenizer_file: Path,
    data: TrainingData,
    labels: Sequence[str],
    scorer: OodScorer | None,
    threshold: float,
    val_oos_recall: float,
) -> dict[str, float]:
    """The oos recall to expect in service (with the served score; `scorer` None: MSP, for
    bundles without out-of-scope statistics), and on how many rows it was measured: the
    held-out generic negatives when those were used, else the user's validation oos rows."""
    if data.heldout_negatives:
        texts = [e.text for e in data.heldout_negatives]
        probs, emb = predict_probs(model, tokenizer_file, texts)
        truth = [OOS_LABEL] * len(texts)
        score = probs.max(1) if scorer is None else scorer.score(probs.max(1), emb)
        _, recall = scores_on(score, _predicted(probs, labels), truth, threshold, OOS_LABEL)
        return {"expected_oos_recall": round(recall, 4), "expected_oos_recall_n": len(texts)}
    n_oos = sum(e.label == OOS_LABEL for e in data.val)
    if n_oos:
        return {"expected_oos_recall": round(val_oos_recall, 4), "expected_oos_recall_n": n_oos}
    return {}


# What a bundle holds besides its manifest (`words.txt`: the edge's spelling vocabulary).
BUNDLE_FILES = ("model.onnx", "tokenizer.json", VOCABULARY_FILE)


def _write_words(staging: Path, rows: Sequence[Example]) -> Path:
    """The training rows' words with their counts (shared/vocabulary.py)."""
    return write_vocabulary(staging / VOCABULARY_FILE, count_words(e.text for e in rows))


def _encoder_layers(net: object) -> int:
    return len(net.encoder.encoder.layer)  # type: ignore[attr-defined]


def _write_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(base_model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_LENGTH)
    tok.save(str(path))
    return path


def _golden(
    texts: Sequence[str],
    truth: Sequence[str],
    probs: np.ndarray,
    labels: Sequence[str],
    threshold: float,
) -> list[GoldenQuery]:
    """Confidently right in-scope val queries, spread over labels: the post-install canary."""
    seen: set[str] = set()
    out: list[GoldenQuery] = []
    for i in np.argsort(-probs.max(1)):
        pred = labels[int(probs[i].argmax())]
        if (
            truth[i] == pred != OOS_LABEL
            and probs[i].max() >= max(threshold, 0.5)
            and pred not in seen
        ):
            seen.add(pred)
            out.append(GoldenQuery(text=texts[i], intent=pred))
            if len(out) >= _N_GOLDEN:
                break
    return out


def copy_fp32(artifacts: Path, dest: Path) -> None:
    shutil.copy2(artifacts / "model_fp32.onnx", dest)
