"""Errors of the installer: a bad site kit, a bad offline bundle, a step that failed."""

from __future__ import annotations

from pathlib import Path

from aivos.shared.errors import AivosError

__all__ = ["InstallError", "KitInvalid", "OfflineBundleInvalid"]


class InstallError(AivosError):
    """An install step could not be done (nothing after it was attempted)."""

    code = "install_failed"


class KitInvalid(InstallError):
    """The site kit at `kit` is incomplete or inconsistent; `message` says what is wrong."""

    code = "kit_invalid"

    def __init__(self, kit: Path, message: str) -> None:
        self.kit = kit
        super().__init__(f"site kit {kit}: {message}")


class OfflineBundleInvalid(InstallError):
    """The offline bundle `path` is unreadable, incomplete or fails its sha256 check."""

    code = "offline_bundle_invalid"

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(f"offline bundle {path}: {message}")
