"""Build an intent bundle: data -> fine-tune -> export -> fold head -> int8 -> calibrate -> bundle."""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from aivos.cloud.modelbuild.calibrate import choose_threshold, predict_probs, scores_at
from aivos.cloud.modelbuild.onnxgraph import QUANTIZATION, export_encoder, fold_head, quantize_int8
from aivos.cloud.modelbuild.progress import PlainProgress, build_progress
from aivos.cloud.modelbuild.source import BASE_MODEL_ID, MAX_LENGTH, base_model_dir, offline
from aivos.shared.bundle import (
    FORMAT_VERSION,
    GoldenQuery,
    Manifest,
    TrainingSummary,
    sha256_file,
    staged_bundle,
    write_manifest,
)
from aivos.shared.datasets import OOS_LABEL, Example, check_trainable, load_examples
from aivos.shared.errors import DataError

__all__ = ["build_bundle", "stratified_split"]

log = logging.getLogger(__name__)

_N_GOLDEN = 20


def stratified_split(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Hold out `fraction` of every class (at least one, never the whole class)."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        by_label[e.label].append(e)
    rng = random.Random(seed)
    train: list[Example] = []
    held: list[Example] = []
    for label in sorted(by_label):
        rows = by_label[label][:]
        rng.shuffle(rows)
        k = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
        held.extend(rows[:k])
        train.extend(rows[k:])
    return train, held


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
) -> Manifest:
    """Train and write a bundle to `out` (atomically). Returns its manifest."""
    from aivos.cloud.modelbuild.finetune import TrainConfig, save_encoder, train_intent_model

    offline()
    started = time.monotonic()
    console = console or Console(stderr=True)
    examples = load_examples(train_spec)
    check_trainable(examples, str(train_spec))
    if val_spec is not None:
        val = load_examples(val_spec)
        train = examples
        val_source = str(val_spec)
    else:
        train, val = stratified_split(examples, 0.2, seed)
        val_source = f"stratified 20% hold-out of {train_spec}"
    if max_train_examples is not None:
        train = train[:max_train_examples]
    labels = sorted({e.label for e in train if e.label != OOS_LABEL})
    if any(e.label == OOS_LABEL for e in train):
        labels.append(OOS_LABEL)
    index = {label: i for i, label in enumerate(labels)}
    for i, e in enumerate(val):
        if e.label != OOS_LABEL and e.label not in index:
            raise DataError(
                f"{val_source}: example {i}", f"label {e.label!r} is not in the training data"
            )

    config = TrainConfig(
        epochs=epochs,
        head_only_epochs=head_only_epochs,
        seed=seed,
        layers=layers,
        frozen_layers=frozen_layers,
    )
    steps = ((len(train) + config.batch_size - 1) // config.batch_size) * (
        epochs + head_only_epochs
    )
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
            with _stage(progress, "quantize int8 per-channel"):
                model = quantize_int8(fp32, staging / "model.onnx")
                tokenizer_file = _write_tokenizer(staging / "tokenizer.json")
            with _stage(progress, "calibrate threshold (val)", len(val)) as advance:
                val_texts = [e.text for e in val]
                val_truth = [e.label for e in val]
                probs, _ = predict_probs(model, tokenizer_file, val_texts)
                advance(len(val))  # type: ignore[operator]
                threshold = choose_threshold(probs, val_truth, labels, OOS_LABEL)
                in_acc, oos_rec = scores_at(probs, val_truth, labels, threshold, OOS_LABEL)
            golden = _golden(val_texts, val_truth, probs, labels, threshold)
            files = {name: sha256_file(staging / name) for name in ("model.onnx", "tokenizer.json")}
            created = datetime.now(UTC)
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                bundle_version=f"intent-{created:%Y%m%dT%H%M%SZ}-{files['model.onnx'][:8]}",
                labels=labels,
                threshold=threshold,
                embedding_model_id=BASE_MODEL_ID,
                embedding_dim=int(head.weight.shape[1]),
                max_length=MAX_LENGTH,
                quantization=QUANTIZATION,
                training=TrainingSummary(
                    train_source=str(train_spec),
                    val_source=val_source,
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
                    "val_n_in_scope": float(sum(t != OOS_LABEL for t in val_truth)),
                    "val_n_oos": float(sum(t == OOS_LABEL for t in val_truth)),
                },
                files=files,
                created_at=created.isoformat(),
                golden=golden,
                canary_min_accuracy=0.9,
                embedding_version=f"{BASE_MODEL_ID}@{encoder_hash[:16]}/{QUANTIZATION}",
            )
            write_manifest(staging, manifest)
    console.print(
        f"[green]bundle[/green] {manifest.bundle_version} -> {out}  "
        f"threshold={threshold:.3f} val in-scope={in_acc:.2%} val oos-recall={oos_rec:.2%}"
    )
    return manifest


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
