"""Where the fleet client keeps its files under the agent's data dir, and the durable
"active bundle" pointer that lets a restarted agent load the bundle the fleet installed.

    DATA_DIR/fleet/applied_config.json     last applied remote config (re-applied offline)
    DATA_DIR/fleet/bundle_state.json       bundle versions that failed here (not retried)
    DATA_DIR/fleet/trusted_keys/*.pub      Ed25519 public keys allowed to sign bundles
    DATA_DIR/bundles/<version>/            installed bundles (the active one + the previous)
    DATA_DIR/bundles/ACTIVE                {"path": ..., "version": ..., "previous": ...}

Every file is written to a temp file beside it and renamed, so a crash leaves the old
content or the new, never a torn file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from aivos.shared.atomicfile import write_atomic

__all__ = ["ActivePointer", "FleetPaths", "active_bundle_dir", "atomic_write"]

log = logging.getLogger(__name__)


class ActivePointer(msgspec.Struct, frozen=True):
    path: str
    version: str
    previous: str | None = None  # bundle dir to roll back to


class FleetPaths:
    def __init__(self, data_path: Path, trusted_keys_dir: str | None = None) -> None:
        self.data = Path(data_path)
        self.fleet = self.data / "fleet"
        self.applied_config = self.fleet / "applied_config.json"
        self.bundle_state = self.fleet / "bundle_state.json"
        self.trusted_keys = (
            Path(trusted_keys_dir) if trusted_keys_dir else self.fleet / "trusted_keys"
        )
        self.bundles = self.data / "bundles"
        self.active = self.bundles / "ACTIVE"
        self.downloads = self.fleet / "downloads"

    def bundle_dir(self, version: str) -> Path:
        return self.bundles / version

    def read_active(self) -> ActivePointer | None:
        try:
            return msgspec.json.decode(self.active.read_bytes(), type=ActivePointer)
        except FileNotFoundError:
            return None
        except (msgspec.DecodeError, OSError) as exc:
            log.warning("ignoring unreadable active-bundle pointer: %s", exc)
            return None

    def write_active(self, pointer: ActivePointer) -> None:
        atomic_write(self.active, msgspec.json.encode(pointer))


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` durably (its folder made first): `write_atomic`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def active_bundle_dir(data_path: Path) -> Path | None:
    """The bundle the fleet made active on this site, if any (for `Agent.start`)."""
    pointer = FleetPaths(data_path).read_active()
    if pointer is None:
        return None
    path = Path(pointer.path)
    if not (path / "manifest.json").is_file():
        log.warning("active bundle %s is missing; using the configured bundle", path)
        return None
    return path
