"""Where aivos keeps things on disk when the user does not say."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["aivos_home", "default_bundle_dir", "default_cloud_dir", "clinc150_path"]


def aivos_home() -> Path:
    """`$AIVOS_HOME`, else `~/.local/share/aivos`."""
    env = os.environ.get("AIVOS_HOME")
    return Path(env) if env else Path.home() / ".local" / "share" / "aivos"


def default_bundle_dir() -> Path:
    return aivos_home() / "bundles" / "default"


def default_cloud_dir() -> Path:
    """The cloud store and fleet registry of `aivos up` and the `aivos cloud` commands."""
    return aivos_home() / "cloud"


def clinc150_path() -> Path:
    """The CLINC150 copy shipped inside the package (CC BY 3.0, see its LICENSE)."""
    return Path(str(resources.files("aivos.shared") / "data" / "clinc150" / "data_full.json"))
