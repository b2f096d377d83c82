"""Unpack an offline bundle (`aivos offline-bundle`) and install its runtime without a
network: every file is checked against the manifest's sha256 first, then a virtualenv gets
``pip install --no-index --find-links wheels aivos``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from aivos.install.errors import InstallError, OfflineBundleInvalid

__all__ = ["unpack", "install_runtime"]


def unpack(archive: Path, staging: Path) -> dict[str, object]:
    """Extract `archive` into `staging` and check it; returns the manifest."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")  # no absolute paths, links out, devices
    except (OSError, tarfile.TarError) as exc:
        raise OfflineBundleInvalid(archive, f"cannot read it: {exc}") from exc
    try:
        manifest = json.loads((staging / "manifest.json").read_text())
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OfflineBundleInvalid(archive, "no valid manifest.json") from exc
    for name, expected in files.items():
        path = staging / name
        if not path.is_file():
            raise OfflineBundleInvalid(archive, f"{name} is listed but missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise OfflineBundleInvalid(archive, f"{name}: sha256 mismatch (damaged or altered)")
    listed = set(files) | {"manifest.json"}
    extra = [
        p.relative_to(staging).as_posix()
        for p in staging.rglob("*")
        if p.is_file() and p.relative_to(staging).as_posix() not in listed
    ]
    if extra:
        raise OfflineBundleInvalid(archive, f"files not in the manifest: {sorted(extra)[:5]}")
    return dict(manifest)


def install_runtime(staging: Path, venv: Path, progress: Callable[[str], None]) -> Path:
    """A virtualenv at `venv` (made if missing) with aivos from the bundle's wheels; returns
    its bin dir. pip never reaches for an index (``--no-index``)."""
    python = venv / "bin" / "python"
    if not python.is_file():
        progress(f"creating virtualenv {venv}")
        done = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise InstallError(f"python -m venv {venv} failed: {done.stderr.strip()}")
    argv = [str(python), "-m", "pip", "install", "--no-index", "--disable-pip-version-check"]
    argv += ["--find-links", str(staging / "wheels"), "aivos"]
    progress("pip install --no-index --find-links wheels aivos")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:  # pip's own lines are the progress (one per package)
        line = line.rstrip()
        if line.startswith(("Processing", "Installing", "Successfully", "Requirement already")):
            progress(f"  {line}")
        tail = [*tail[-20:], line]
    if proc.wait() != 0:
        raise InstallError("pip install from the bundle failed:\n" + "\n".join(tail))
    return venv / "bin"
