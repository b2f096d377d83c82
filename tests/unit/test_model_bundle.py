"""Bundle manifests: verification of hashes and atomic writes (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aivos.shared.bundle import (
    FORMAT_VERSION,
    Manifest,
    TrainingSummary,
    load_bundle_manifest,
    sha256_file,
    staged_bundle,
    write_manifest,
)
from aivos.shared.errors import BundleTampered, ModelNotFound


def _make(target: Path) -> Manifest:
    with staged_bundle(target) as staging:
        (staging / "model.onnx").write_bytes(b"onnx-bytes")
        (staging / "tokenizer.json").write_text("{}")
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            bundle_version="v1",
            labels=["a", "b", "oos"],
            threshold=0.5,
            embedding_model_id="m",
            embedding_dim=4,
            max_length=8,
            quantization="int8-dynamic-per-channel",
            training=TrainingSummary("t", "v", 4, 2, 3, 1, True, 1.0),
            metrics={},
            files={n: sha256_file(staging / n) for n in ("model.onnx", "tokenizer.json")},
            created_at="2026-01-01T00:00:00+00:00",
        )
        write_manifest(staging, manifest)
    return manifest


def test_roundtrip(tmp_path: Path) -> None:
    written = _make(tmp_path / "b")
    assert load_bundle_manifest(tmp_path / "b") == written
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_changed_byte_is_tampering(tmp_path: Path) -> None:
    _make(tmp_path / "b")
    (tmp_path / "b" / "model.onnx").write_bytes(b"onnx-bytez")
    with pytest.raises(BundleTampered, match=r"model\.onnx: sha256"):
        load_bundle_manifest(tmp_path / "b")


def test_missing_file(tmp_path: Path) -> None:
    _make(tmp_path / "b")
    (tmp_path / "b" / "tokenizer.json").unlink()
    with pytest.raises(ModelNotFound, match=r"tokenizer\.json: file listed"):
        load_bundle_manifest(tmp_path / "b")


def test_missing_manifest_and_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_bundle_manifest(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no manifest"):
        load_bundle_manifest(tmp_path / "empty")


def test_manifest_with_unknown_field_is_refused(tmp_path: Path) -> None:
    _make(tmp_path / "b")
    path = tmp_path / "b" / "manifest.json"
    path.write_text(path.read_text().replace('"threshold"', '"extra":1,"threshold"'))
    with pytest.raises(BundleTampered, match="invalid manifest"):
        load_bundle_manifest(tmp_path / "b")


def test_failed_write_leaves_previous_bundle(tmp_path: Path) -> None:
    first = _make(tmp_path / "b")
    with pytest.raises(RuntimeError), staged_bundle(tmp_path / "b") as staging:
        (staging / "model.onnx").write_bytes(b"half")
        raise RuntimeError("boom")
    assert load_bundle_manifest(tmp_path / "b") == first
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_replace_existing_bundle(tmp_path: Path) -> None:
    _make(tmp_path / "b")
    _make(tmp_path / "b")
    assert load_bundle_manifest(tmp_path / "b").bundle_version == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
