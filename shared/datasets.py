"""Labelled intent data: CSV, JSONL or the CLINC150 JSON layout, read into `Example`s.

Formats are chosen by file suffix:

* ``.csv``  -- a header row containing ``text`` and ``label`` (other columns ignored);
* ``.jsonl`` -- one JSON object per line with ``text`` and ``label`` keys;
* ``.json`` -- the CLINC150 layout (keys ``train``/``val``/``test`` and ``oos_*``; rows are
  ``[text, label]``; ``oos_*`` rows are labelled ``oos``). ``PATH`` alone means the training
  split (``train`` + ``oos_train``); ``PATH#val`` and ``PATH#test`` select the other splits.

The label ``oos`` marks out-of-scope examples. Every problem raises `DataError` naming the
file and the line (or field) at fault.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import msgspec

from aivos.shared.errors import DataError

__all__ = ["OOS_LABEL", "Example", "load_examples", "clinc_split", "check_trainable"]

OOS_LABEL = "oos"
_CLINC_SPLITS = ("train", "val", "test")


class Example(msgspec.Struct, frozen=True):
    text: str
    label: str


def clinc_split(path: Path, split: str) -> str:
    """The `PATH#split` spelling that `load_examples` understands."""
    return f"{path}#{split}"


def load_examples(spec: str | Path) -> list[Example]:
    """Read labelled examples from `spec` (a path, optionally with a `#split` suffix for JSON)."""
    path, split = _parse_spec(str(spec))
    if not path.is_file():
        raise DataError(str(path), "no such file")
    suffix = path.suffix.lower()
    if split is not None and suffix != ".json":
        raise DataError(str(spec), "a '#split' suffix is only valid for CLINC150 JSON files")
    if suffix == ".csv":
        return _load_csv(path)
    if suffix == ".jsonl":
        return _load_jsonl(path)
    if suffix == ".json":
        return _load_clinc(path, split or "train")
    raise DataError(
        str(path), f"unknown data format {suffix or '(no suffix)'!r}; use .csv, .jsonl or .json"
    )


def check_trainable(examples: list[Example], source: str) -> None:
    """Training data needs >= 2 in-scope classes and >= 2 examples per class."""
    counts = Counter(e.label for e in examples)
    in_scope = [label for label in counts if label != OOS_LABEL]
    if len(in_scope) < 2:
        raise DataError(source, f"need at least 2 in-scope labels, found {len(in_scope)}")
    for label, n in sorted(counts.items()):
        if n < 2:
            raise DataError(
                f"{source}: label {label!r}", f"class has {n} example(s); need at least 2"
            )


def _parse_spec(spec: str) -> tuple[Path, str | None]:
    if "#" in spec:
        raw, split = spec.rsplit("#", 1)
        if split not in _CLINC_SPLITS:
            raise DataError(spec, f"unknown split {split!r}; use one of {', '.join(_CLINC_SPLITS)}")
        return Path(raw), split
    return Path(spec), None


def _example(source: str, text: object, label: object) -> Example:
    if not isinstance(text, str) or not text.strip():
        raise DataError(source, "field 'text' is empty")
    if not isinstance(label, str) or not label.strip():
        raise DataError(source, "field 'label' is empty")
    return Example(text=text.strip(), label=label.strip())


def _load_csv(path: Path) -> list[Example]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        for column in ("text", "label"):
            if column not in fields:
                raise DataError(f"{path}:1", f"missing column {column!r} in header {fields}")
        out = [
            _example(f"{path}:{reader.line_num}", row.get("text"), row.get("label"))
            for row in reader
        ]
    if not out:
        raise DataError(str(path), "no examples")
    return out


def _load_jsonl(path: Path) -> list[Example]:
    out: list[Example] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            source = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(source, f"invalid JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise DataError(source, "expected a JSON object")
            for key in ("text", "label"):
                if key not in row:
                    raise DataError(source, f"missing field {key!r}")
            out.append(_example(source, row["text"], row["label"]))
    if not out:
        raise DataError(str(path), "no examples")
    return out


def _load_clinc(path: Path, split: str) -> list[Example]:
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}", f"invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise DataError(str(path), "expected the CLINC150 layout (an object of splits)")
    out: list[Example] = []
    for key, oos in ((split, False), (f"oos_{split}", True)):
        if key not in data:
            if oos:
                continue
            raise DataError(str(path), f"missing split {key!r}")
        rows = data[key]
        if not isinstance(rows, list):
            raise DataError(f"{path}: {key}", "expected a list of [text, label] rows")
        for i, row in enumerate(rows):
            source = f"{path}: {key}[{i}]"
            if not isinstance(row, list) or len(row) != 2:
                raise DataError(source, "expected a [text, label] row")
            out.append(_example(source, row[0], OOS_LABEL if oos else row[1]))
    if not out:
        raise DataError(str(path), f"split {split!r} has no examples")
    return out
