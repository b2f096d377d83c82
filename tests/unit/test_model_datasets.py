"""Labelled data loading: every format, every bad input names its file and line/field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aivos.shared.datasets import Example, check_trainable, load_examples
from aivos.shared.errors import DataError
from aivos.shared.paths import clinc150_path


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_ignores_extra_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "d.csv", "id,text,label,note\n1,hello there,greet,x\n2,bye now,leave,y\n"
    )
    assert load_examples(path) == [Example("hello there", "greet"), Example("bye now", "leave")]


def test_jsonl(tmp_path: Path) -> None:
    rows = [{"text": "hi", "label": "greet", "extra": 1}, {"text": "where is it", "label": "oos"}]
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_examples(path) == [Example("hi", "greet"), Example("where is it", "oos")]


def test_clinc_splits() -> None:
    train = load_examples(clinc150_path())
    val = load_examples(f"{clinc150_path()}#val")
    test = load_examples(f"{clinc150_path()}#test")
    assert (len(train), len(val), len(test)) == (15100, 3100, 5500)
    assert sum(e.label == "oos" for e in test) == 1000


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "text,intent\nhello,greet\n")
    with pytest.raises(DataError, match=r"d\.csv:1.*missing column 'label'"):
        load_examples(path)


def test_jsonl_missing_field_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2.*'label'"):
        load_examples(path)


def test_empty_label_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "text,label\nhello,greet\nbye,  \n")
    with pytest.raises(DataError, match=r"d\.csv:3.*'label' is empty"):
        load_examples(path)


def test_empty_text_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"text": "   ", "label": "x"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:1.*'text' is empty"):
        load_examples(path)


def test_unknown_format(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.parquet", "x")
    with pytest.raises(DataError, match=r"d\.parquet.*unknown data format"):
        load_examples(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "nope.csv")


def test_bad_split_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_examples(f"{clinc150_path()}#dev")
    path = _write(tmp_path / "d.csv", "text,label\na,b\n")
    with pytest.raises(DataError, match="only valid for CLINC150"):
        load_examples(f"{path}#test")


def test_clinc_bad_row_names_index(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", json.dumps({"train": [["ok", "a"], ["", "a"]]}))
    with pytest.raises(DataError, match=r"c\.json: train\[1\].*'text' is empty"):
        load_examples(path)


def test_class_with_one_example_is_rejected() -> None:
    examples = [Example("a", "x"), Example("b", "x"), Example("c", "y")]
    with pytest.raises(DataError, match=r"train\.csv: label 'y'.*1 example"):
        check_trainable(examples, "train.csv")


def test_single_class_is_rejected() -> None:
    with pytest.raises(DataError, match="at least 2 in-scope labels"):
        check_trainable([Example("a", "x"), Example("b", "x")], "t.csv")
