"""Bundles on the site's disk: the trusted signing keys, verified copies already present,
moving a verified download into place, and removing the bundles no longer needed; plus the
versions that failed here for good (``DATA_DIR/fleet/bundle_state.json``), never retried.

Blocking (file system, hashing): call from a worker thread, except `FailedVersions.remember`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aivos.edge.fleet.layout import ActivePointer, FleetPaths, atomic_write
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.errors import AivosError, BundleTampered
from aivos.shared.fleet import load_public_key, verify_bundle_signature

__all__ = ["BundleFiles", "FailedVersions", "Failure", "load_trusted_keys"]

log = logging.getLogger(__name__)


def load_trusted_keys(directory: Path) -> list[Ed25519PublicKey]:
    """Every ``*.pub`` (PEM Ed25519) in `directory`; none -> BundleTampered (nothing is trusted)."""
    keys = [load_public_key(p) for p in sorted(directory.glob("*.pub"))]
    if not keys:
        raise BundleTampered(str(directory), "no trusted bundle signing keys on this site")
    return keys


class BundleFiles:
    def __init__(self, paths: FleetPaths) -> None:
        self.paths = paths

    def local_copy(self, version: str, keys: list[Ed25519PublicKey]) -> Path | None:
        """A usable copy of `version` already on disk (e.g. the previous bundle)."""
        candidate = self.paths.bundle_dir(version)
        if candidate.is_dir():
            try:
                verify_bundle_signature(candidate, keys)
                return candidate
            except AivosError as exc:
                log.warning(
                    "local copy of bundle %s unusable (%s); fetching it again", version, exc
                )
                shutil.rmtree(candidate, ignore_errors=True)
        pointer = self.paths.read_active()
        if pointer is not None and pointer.previous:
            previous = Path(pointer.previous)
            try:  # it was live on this site before: its hashes are enough
                if load_bundle_manifest(previous).bundle_version == version:
                    return previous
            except AivosError:
                return None
        return None

    @staticmethod
    def move_into_place(staging: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)

    def discard(self, path: Path) -> None:
        """Remove a bundle dir we installed (never the configured bundle outside bundles/)."""
        if path.parent.resolve() == self.paths.bundles.resolve():
            active = self.paths.read_active()
            if active is None or Path(active.path).resolve() != path.resolve():
                shutil.rmtree(path, ignore_errors=True)

    def prune(self, pointer: ActivePointer) -> None:
        """Keep the active and the previous bundle; remove older installed ones."""
        keep = {Path(p).resolve() for p in (pointer.path, pointer.previous) if p}
        for child in self.paths.bundles.iterdir():
            if child.is_dir() and not child.name.startswith(".") and child.resolve() not in keep:
                shutil.rmtree(child, ignore_errors=True)


class Failure(msgspec.Struct):
    status: str
    message: str


class _State(msgspec.Struct):
    failed: dict[str, Failure] = {}


class FailedVersions:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._state = self._load()

    def get(self, version: str) -> Failure | None:
        return self._state.failed.get(version)

    async def remember(self, version: str, status: str, message: str) -> None:
        self._state.failed[version] = Failure(status, message)
        await asyncio.to_thread(atomic_write, self.path, msgspec.json.encode(self._state))

    def _load(self) -> _State:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=_State)
        except FileNotFoundError:
            return _State()
        except (msgspec.DecodeError, OSError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return _State()
