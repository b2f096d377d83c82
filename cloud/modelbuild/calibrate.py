"""Out-of-scope threshold calibration on validation data, against the quantized graph itself.

The graph is scored as the edge serves it: one query per onnxruntime run by default
(`aivos.shared.as_served.ROWS_PER_RUN`). Its int8 activations are quantized per run, so in a
batch a row's MSP and embedding would depend on its batch-mates, and a threshold or statistics
chosen on batched scores would be chosen for a model the edge never runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from aivos.shared.as_served import ROWS_PER_RUN
from aivos.shared.bundle import OodCalibration
from aivos.shared.datasets import OOS_LABEL, Example
from aivos.shared.ood import OOD_FILE, SCORE, OodScorer, fit

__all__ = [
    "GENERIC_IN_SCOPE_BUDGET",
    "USER_IN_SCOPE_BUDGET",
    "predict_probs",
    "scores_at",
    "scores_on",
    "choose_threshold",
    "choose_threshold_on",
    "ood_calibration",
    "ood_calibration_from",
]

# In-scope validation accuracy the threshold may cost (absolute). With the user's own `oos`
# rows the `oos` class knows what this site rejects, and half a point is enough. With only
# generic negatives it knows the rest of the world but not the site's near misses, so the
# threshold has to do more of the rejecting: a point (set by this argument, not tuned on
# any test split).
USER_IN_SCOPE_BUDGET = 0.005
GENERIC_IN_SCOPE_BUDGET = 0.01


def predict_probs(
    model: Path, tokenizer_file: Path, texts: Sequence[str], batch_size: int = ROWS_PER_RUN
) -> tuple[np.ndarray, np.ndarray]:
    """(probs, embeddings) for `texts`, in order. `batch_size` rows per run: 1 (the default)
    scores each row alone and unpadded, exactly as the edge runs a lone query; larger batches
    (length-sorted to cut padding) are faster but move each row's scores with its batch-mates
    (the int8 graph quantizes its activations per run), so they are not as served."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs: list[np.ndarray] = []
    embs: list[np.ndarray] = []
    for start in range(0, len(order), batch_size):
        enc = tok.encode_batch([texts[i] for i in order[start : start + batch_size]])
        feed = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        }
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        p, e = sess.run(["probs", "sentence_embedding"], feed)
        probs.append(p)
        embs.append(e)
    inverse = np.argsort(np.array(order))
    return np.concatenate(probs)[inverse], np.concatenate(embs)[inverse]


def scores_at(
    probs: np.ndarray, truth: Sequence[str], labels: Sequence[str], threshold: float, oos: str
) -> tuple[float, float]:
    """(in-scope accuracy, oos recall) at `threshold`, with the project's counting rules."""
    return scores_on(probs.max(1), np.asarray(labels)[probs.argmax(1)], truth, threshold, oos)


def scores_on(
    score: np.ndarray, pred: np.ndarray, truth: Sequence[object], threshold: float, oos: object
) -> tuple[float, float]:
    """`scores_at` for any in-scope score (accepted when >= `threshold`) and predicted labels:
    right label and accepted for in-scope rows, rejected or predicted `oos` for oos rows."""
    pred = np.asarray(pred)
    truth_a = np.asarray(truth)
    is_oos = truth_a == oos
    accepted = (np.asarray(score) >= threshold) & (pred != oos)
    in_acc = float(((pred == truth_a) & accepted)[~is_oos].mean()) if (~is_oos).any() else 0.0
    oos_rec = float((~accepted)[is_oos].mean()) if is_oos.any() else 0.0
    return in_acc, oos_rec


def choose_threshold(
    probs: np.ndarray,
    truth: Sequence[str],
    labels: Sequence[str],
    oos: str,
    max_in_scope_drop: float = USER_IN_SCOPE_BUDGET,
) -> float:
    """The highest MSP threshold that costs at most `max_in_scope_drop` of validation
    in-scope accuracy (absolute, vs. no threshold): as much oos recall as that budget buys.

    Maximising accuracy + recall instead over-weights the few oos validation rows (100 in
    CLINC150) and picks thresholds that reject many in-scope queries.
    """
    pred = np.asarray(labels)[probs.argmax(1)]
    return choose_threshold_on(probs.max(1), pred, np.asarray(truth), oos, max_in_scope_drop)


def choose_threshold_on(
    score: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray,
    oos: object,
    max_in_scope_drop: float = USER_IN_SCOPE_BUDGET,
) -> float:
    """`choose_threshold` for any in-scope score (higher = more in scope, accepted when
    >= the threshold): the MSP or the embedding-distance score of `shared/ood.py`.
    `pred`/`truth`: predicted and true labels (names or indices), `oos` the oos one."""
    score = np.asarray(score)  # float32 MSPs stay float32: thresholds as before
    pred, truth = np.asarray(pred), np.asarray(truth)
    in_scope = truth != oos
    n_in = int(in_scope.sum())
    if n_in == 0:
        return 0.0
    right = np.sort(score[in_scope & (pred == truth) & (pred != oos)])
    # every score rounded to 4 places, and the lowest rounded down: a lowest score that rounds
    # up would reject its own row at the first candidate, and with a budget under one row
    # (160 in-scope rows at 0.5 point) nothing would be left but no threshold at all
    low = score.min()
    lowest = np.minimum(np.floor(low * 1e4) / 1e4, low).astype(score.dtype)
    candidates = np.unique(np.append(np.round(score, 4), lowest))
    # in-scope accuracy at each candidate: the right rows scoring at least that much
    in_acc = (right.size - np.searchsorted(right, candidates, side="left")) / n_in
    ok = in_acc >= right.size / n_in - max_in_scope_drop
    # ascending: accuracy only falls as the threshold rises; keep the last one before a fall
    n_ok = int(np.argmin(ok)) if not ok.all() else ok.size
    return float(candidates[n_ok - 1]) if n_ok else 0.0


def ood_calibration(
    staging: Path,
    model: Path,
    tokenizer_file: Path,
    rows: Sequence[Example],
    labels: Sequence[str],
    val_probs: np.ndarray,
    val_emb: np.ndarray,
    val_truth: Sequence[str],
    budget: float,
    oos: str = OOS_LABEL,
    batch_size: int = ROWS_PER_RUN,
) -> tuple[OodScorer, OodCalibration]:
    """The embedding-distance out-of-scope score for a bundle being built (shared/ood.py):
    class statistics fitted on the in-scope `rows`' embeddings (the user's rows, without
    noisy copies or borrowed negatives), the typicality's distances from the in-scope
    validation rows, written to `OOD_FILE` in `staging`; its threshold chosen on validation
    by the same rule and budget as the MSP's (`choose_threshold_on`). `val_probs`/`val_emb`
    come from `predict_probs`; the training rows are run `batch_size` per run (default: one,
    as served, like the validation rows should be)."""
    in_scope = [e for e in rows if e.label != oos]
    _, train_emb = predict_probs(model, tokenizer_file, [e.text for e in in_scope], batch_size)
    return ood_calibration_from(
        staging, in_scope, train_emb, labels, val_probs, val_emb, val_truth, budget, oos
    )


def ood_calibration_from(
    staging: Path,
    rows: Sequence[Example],
    train_emb: np.ndarray,
    labels: Sequence[str],
    val_probs: np.ndarray,
    val_emb: np.ndarray,
    val_truth: Sequence[str],
    budget: float,
    oos: str = OOS_LABEL,
) -> tuple[OodScorer, OodCalibration]:
    """`ood_calibration` on embeddings a build already has: `train_emb` holds the served
    graph's embeddings of `rows`, in order (their `oos` rows are left out of the fit)."""
    index = {label: i for i, label in enumerate(labels)}
    keep = np.array([e.label != oos for e in rows], dtype=bool)
    y = np.array([index[e.label] for e in rows if e.label != oos])
    stats = fit(np.asarray(train_emb)[keep], y, np.unique(y))
    val_in = np.array([t != oos for t in val_truth])
    stats = stats.with_quantiles(OodScorer(stats).distance(val_emb[val_in]))
    stats.save(staging / OOD_FILE)
    scorer = OodScorer(stats)
    threshold = choose_threshold_on(
        scorer.score(val_probs.max(1), val_emb),
        np.asarray(labels)[val_probs.argmax(1)],
        np.asarray(val_truth),
        oos,
        budget,
    )
    return scorer, OodCalibration(file=OOD_FILE, score=SCORE, threshold=threshold)
