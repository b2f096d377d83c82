"""Generic negatives: out-of-scope training rows for a user who brings in-scope rows only.

A site knows its own dozen intents, not the rest of the world. When the training data has no
`oos` rows, the build borrows them from the CLINC150 copy shipped with aivos (train split
only; CC BY 3.0): its out-of-scope rows, and rows of CLINC150 intents the user's labels do
not cover. An intent counts as covered when a user label has its name or when its centroid
(stock MiniLM embeddings) lies close to a user label's centroid: a user's "card_lost" must
not learn that "I lost my card" is out of scope because CLINC150 calls it `report_lost_card`.

Part of the pool is never trained on: a slice of the out-of-scope rows and a few whole
intents. The calibration reports the oos recall on them as the bundle's expected oos recall,
an estimate for requests of kinds the model has not seen.
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import numpy as np

from aivos.shared.datasets import OOS_LABEL, Example, load_examples
from aivos.shared.paths import clinc150_path

__all__ = [
    "OVERLAP_SIMILARITY",
    "GenericNegatives",
    "generic_negatives",
    "label_key",
]

log = logging.getLogger(__name__)

Embed = Callable[[Sequence[str]], np.ndarray]

# Centroid cosine (stock MiniLM) from which a CLINC150 intent counts as one of the user's.
# Measured on CLINC150 train, centroids of two disjoint samples (12 and 24 rows) of the same
# intent: median 0.89, 96% >= 0.75; an intent's nearest *other* intent: median 0.62, 17%
# >= 0.75. Erring low is cheap (a few negatives fewer in a pool of ~140 intents); erring
# high teaches the model that the user's own kind of text is out of scope.
OVERLAP_SIMILARITY = 0.75
HELDOUT_OOS_FRACTION = 0.3  # of CLINC150's out-of-scope rows, kept for the recall estimate
HELDOUT_INTENT_FRACTION = 0.2  # of the usable intents, kept whole for the recall estimate
HELDOUT_ROWS_PER_INTENT = 10
NEGATIVES_PER_IN_SCOPE = 1.0  # negatives trained on per in-scope training row ...
MIN_NEGATIVES, MAX_NEGATIVES = 400, 3000  # ... within these bounds
_CENTROID_ROWS = 12  # rows per intent for a centroid: enough to place an intent
_SOURCE = "CLINC150 train"


class GenericNegatives(msgspec.Struct, frozen=True):
    """What the build borrowed; every row is labelled `oos`."""

    train: list[Example]  # trained on as the `oos` class
    heldout: list[Example]  # never trained on: the expected-oos-recall estimate
    n_oos_rows: int  # CLINC150 out-of-scope rows among `train`
    intents: list[str]  # CLINC150 intents whose rows are in `train`
    heldout_intents: list[str]  # whole intents in `heldout`
    n_heldout_oos_rows: int
    skipped: dict[str, float]  # intents left out as the user's own: best centroid cosine
    excluded: list[str]  # intents the caller kept out of the pool

    def describe(self) -> str:
        return (
            f"{len(self.train)} generic negatives from {_SOURCE} ({self.n_oos_rows} "
            f"out-of-scope rows + rows of {len(self.intents)} uncovered intents; "
            f"{len(self.skipped)} intents skipped as overlapping the training labels)"
        )

    def describe_heldout(self) -> str:
        return (
            f"{len(self.heldout)} held-out generic negatives ({self.n_heldout_oos_rows} "
            f"out-of-scope rows + {len(self.heldout_intents)} intents never trained on)"
        )


def label_key(label: str) -> str:
    """Labels compared by name: case, spaces and dashes do not matter."""
    return label.strip().lower().replace(" ", "_").replace("-", "_")


def generic_negatives(
    user: Sequence[Example],
    *,
    embed: Embed,
    seed: int = 13,
    exclude: Sequence[str] = (),
    pool: Path | None = None,
) -> GenericNegatives:
    """Negatives for in-scope-only training data `user`. `embed` places intents (the build
    passes the stock base encoder, `source.base_encoder_embed`); `exclude` names CLINC150
    intents that must not be used at all (an experiment holding out a domain does this)."""
    rng = random.Random(seed)
    rows = load_examples(pool or clinc150_path())
    by_intent: dict[str, list[Example]] = defaultdict(list)
    for row in rows:
        by_intent[row.label].append(row)
    oos_rows = by_intent.pop(OOS_LABEL, [])
    user_labels = {label_key(e.label) for e in user if e.label != OOS_LABEL}
    excluded = sorted(k for k in by_intent if label_key(k) in {label_key(x) for x in exclude})
    candidates = sorted(k for k in by_intent if k not in excluded)

    skipped = {k: 1.0 for k in candidates if label_key(k) in user_labels}
    rest = [k for k in candidates if k not in skipped]
    if rest:
        similarity = _best_similarity(user, {k: by_intent[k] for k in rest}, embed)
        skipped |= {k: round(s, 3) for k, s in similarity.items() if s >= OVERLAP_SIMILARITY}
    usable = [k for k in rest if k not in skipped]

    rng.shuffle(usable)
    n_held_intents = round(len(usable) * HELDOUT_INTENT_FRACTION)
    heldout_intents, intents = sorted(usable[:n_held_intents]), sorted(usable[n_held_intents:])
    oos_rows = oos_rows[:]
    rng.shuffle(oos_rows)
    n_held_oos = round(len(oos_rows) * HELDOUT_OOS_FRACTION)
    heldout = oos_rows[:n_held_oos]
    for k in heldout_intents:
        heldout.extend(rng.sample(by_intent[k], min(HELDOUT_ROWS_PER_INTENT, len(by_intent[k]))))

    train = oos_rows[n_held_oos:]
    n_in_scope = sum(e.label != OOS_LABEL for e in user)
    budget = min(MAX_NEGATIVES, max(MIN_NEGATIVES, round(n_in_scope * NEGATIVES_PER_IN_SCOPE)))
    if intents:
        per_intent = max(1, math.ceil((budget - len(train)) / len(intents)))
        for k in intents:
            train.extend(rng.sample(by_intent[k], min(per_intent, len(by_intent[k]))))
    log.info("generic negatives: %d train, %d held out", len(train), len(heldout))
    return GenericNegatives(
        train=[Example(e.text, OOS_LABEL) for e in train],
        heldout=[Example(e.text, OOS_LABEL) for e in heldout],
        n_oos_rows=len(oos_rows) - n_held_oos,
        intents=intents,
        heldout_intents=heldout_intents,
        n_heldout_oos_rows=n_held_oos,
        skipped=dict(sorted(skipped.items())),
        excluded=excluded,
    )


def _centroids(groups: dict[str, list[str]], embed: Embed) -> tuple[list[str], np.ndarray]:
    names = sorted(groups)
    texts = [t for name in names for t in groups[name]]
    vectors = embed(texts)
    out = np.zeros((len(names), vectors.shape[1]), dtype=np.float32)
    start = 0
    for i, name in enumerate(names):
        n = len(groups[name])
        out[i] = vectors[start : start + n].mean(0)
        start += n
    out /= np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-9)
    return names, out


def _best_similarity(
    user: Sequence[Example], pool: dict[str, list[Example]], embed: Embed
) -> dict[str, float]:
    """For every pool intent, the cosine of its centroid to the nearest user-label centroid."""
    user_groups: dict[str, list[str]] = defaultdict(list)
    for e in user:
        if e.label != OOS_LABEL and len(user_groups[e.label]) < 4 * _CENTROID_ROWS:
            user_groups[e.label].append(e.text)
    _, user_c = _centroids(user_groups, embed)
    names, pool_c = _centroids(
        {k: [e.text for e in rows[:_CENTROID_ROWS]] for k, rows in pool.items()}, embed
    )
    best = (pool_c @ user_c.T).max(1)
    return {name: float(s) for name, s in zip(names, best, strict=True)}
