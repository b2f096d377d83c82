"""What the offline bundle's wheelhouse packs (aivos/install/wheelhouse.py)."""

from __future__ import annotations

from aivos.install.wheelhouse import runtime_distributions


def test_the_runtime_includes_what_requested_extras_need() -> None:
    # aivos requires symspellpy[editdistpy]; editdistpy is only an extra's requirement of
    # symspellpy, and a box installed from a wheelhouse without it fails pip's --no-index
    names = {d.metadata["Name"].lower() for d in runtime_distributions()}
    assert {"aivos", "symspellpy", "editdistpy", "onnxruntime"} <= names
    assert "torch" not in names  # the cloud extra's stack stays out of the edge runtime
