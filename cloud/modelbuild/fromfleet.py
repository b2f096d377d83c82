"""`aivos models build --from-fleet`: the base training data plus the hard examples that
operators labelled on the console's review page (cloud/console/review.py).

The reviewed examples are the sites' masked texts (``<PERSON_1>`` stays a placeholder)
with the operator's label: an existing intent, a new intent (the build adds the class) or
``oos``. A reviewed text that is also in the base data replaces the base row: the operator's
label is the newer truth. The merged rows are written as JSONL next to the bundle
(``OUT.fleet.jsonl``), so the manifest's ``train_source`` names a file that still exists
and the build can be repeated.

`aivos models build --from-site FILE` is the same merge for a site that keeps its hard
examples on site: FILE is what `aivos candidates export` wrote there (``{"text", "label"}``
JSONL of the labels its own operators gave), the merged rows go to ``OUT.site.jsonl``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import msgspec

from aivos.cloud.db import is_postgres_url
from aivos.cloud.ingest.candidates import CandidateStore, ReviewedExample
from aivos.cloud.ingest.store import CloudStore
from aivos.shared.datasets import Example, load_examples
from aivos.shared.errors import DataError

__all__ = [
    "FleetData",
    "open_review_store",
    "merge_reviewed",
    "fleet_training_data",
    "site_training_data",
]


class FleetData(msgspec.Struct, frozen=True):
    train: Path  # the merged JSONL
    val: str | None  # the base's validation split, if it has one
    n_base: int
    n_reviewed: int
    new_labels: list[str]  # classes the base data does not have
    per_label: dict[str, int]  # reviewed examples per label


def open_review_store(source: str | Path) -> CandidateStore:
    """The cloud store's review: a ``postgresql://`` URL, a ``cloud.db`` file or the cloud
    data directory that holds it."""
    text = str(source)
    if is_postgres_url(text):
        return CandidateStore(CloudStore.open(db=text))
    path = Path(text)
    if path.is_dir():
        path = path / CloudStore.FILENAME
    if not path.is_file():
        raise DataError(
            text, "no cloud store here (a postgresql:// URL, cloud.db or its directory)"
        )
    return CandidateStore(CloudStore(path))


def merge_reviewed(
    base: list[Example], reviewed: Sequence[ReviewedExample | Example]
) -> list[Example]:
    """`base` without the texts an operator labelled, then the reviewed rows."""
    relabelled = {r.text.strip().casefold() for r in reviewed}
    kept = [e for e in base if e.text.strip().casefold() not in relabelled]
    return kept + [Example(r.text, r.label) for r in reviewed]


def fleet_training_data(source: str | Path, base_spec: str | Path, out: Path) -> FleetData:
    """Write the merged training rows to ``OUT.fleet.jsonl``; DataError when nothing has
    been reviewed (a build would only repeat the base)."""
    store = open_review_store(source)
    try:
        reviewed = store.reviewed()
    finally:
        store.cloud.close()
    if not reviewed:
        raise DataError(str(source), "no reviewed examples yet: label clusters on /review first")
    return _write_merged(reviewed, base_spec, out.with_name(out.name + ".fleet.jsonl"))


def site_training_data(export: str | Path, base_spec: str | Path, out: Path) -> FleetData:
    """Write the base rows merged with a site's exported labels to ``OUT.site.jsonl``;
    DataError when the export has no rows."""
    reviewed = load_examples(export)
    if not reviewed:
        raise DataError(str(export), "no labelled examples: run `aivos candidates export` on site")
    return _write_merged(reviewed, base_spec, out.with_name(out.name + ".site.jsonl"))


def _write_merged(
    reviewed: Sequence[ReviewedExample | Example], base_spec: str | Path, dest: Path
) -> FleetData:
    base = load_examples(base_spec)
    merged = merge_reviewed(base, reviewed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    with dest.open("wb") as fh:
        for e in merged:
            fh.write(encoder.encode({"text": e.text, "label": e.label}) + b"\n")
    base_labels = {e.label for e in base}
    spec = str(base_spec)
    return FleetData(
        train=dest,
        val=f"{spec}#val" if spec.endswith(".json") and "#" not in spec else None,
        n_base=len(base),
        n_reviewed=len(reviewed),
        new_labels=sorted({r.label for r in reviewed} - base_labels),
        per_label=dict(sorted(Counter(r.label for r in reviewed).items())),
    )
