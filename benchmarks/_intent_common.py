"""Helpers shared by the intent benchmarks: the fp32 twin of a bundle, test data."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec

from aivos.shared.bundle import load_bundle_manifest, sha256_file, staged_bundle, write_manifest

__all__ = ["fp32_twin"]


def fp32_twin(bundle: Path, artifacts: Path, dest: Path) -> Path:
    """A bundle identical to `bundle` but carrying the fp32 folded graph from the build."""
    manifest = load_bundle_manifest(bundle)
    with staged_bundle(dest) as staging:
        shutil.copy2(artifacts / "model_fp32.onnx", staging / "model.onnx")
        for name in manifest.files:  # the tokenizer, the word list, ...: all but the graph
            if name != "model.onnx":
                shutil.copy2(bundle / name, staging / name)
        files = {n: sha256_file(staging / n) for n in manifest.files}
        write_manifest(
            staging,
            msgspec.structs.replace(
                manifest,
                files=files,
                quantization="none-fp32",
                bundle_version=manifest.bundle_version + "-fp32",
            ),
        )
    return dest
