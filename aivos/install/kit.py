"""Read a site kit (what `aivos fleet enroll` writes) and re-home it to the installed paths.

A kit names its own files by the absolute paths it was written at (``leaf.conf`` names its
certificate and key, ``edge.toml`` its trusted keys and a data dir), and it is usually
installed somewhere else. The kit's original root is the parent of ``trusted_keys_dir``;
each of its paths is replaced by the installed one, and the result is checked by parsing
it again."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from aivos.install.errors import KitInvalid

__all__ = ["CREDENTIAL_SUFFIXES", "TRUSTED_KEY_SUFFIXES", "SiteKit", "load_kit"]

# the kinds of file a kit's two folders hold: what `load_kit` reads from them, and so what
# the installer owns (and removes when a new kit lacks it) in the installed folders
CREDENTIAL_SUFFIXES = (".crt", ".key")
TRUSTED_KEY_SUFFIXES = (".pub",)


@dataclass(frozen=True)
class SiteKit:
    root: Path
    site: str
    edge_toml: str
    leaf_conf: str
    origin: str  # the directory the kit was written to (as its files name it)
    credentials: dict[str, bytes]  # file name -> bytes (certificates and the key)
    trusted_keys: dict[str, bytes]

    @property
    def key_names(self) -> list[str]:
        return sorted(n for n in self.credentials if n.endswith(".key"))

    def edge_toml_for(self, config_dir: str, data_dir: str) -> str:
        text = self.edge_toml.replace(
            _quoted(f"{self.origin}/edge-data"), _quoted(data_dir)
        ).replace(_quoted(f"{self.origin}/trusted_keys"), _quoted(f"{config_dir}/trusted_keys"))
        parsed = tomllib.loads(text)
        if parsed.get("fleet", {}).get("trusted_keys_dir") != f"{config_dir}/trusted_keys":
            raise KitInvalid(self.root, "edge.toml: could not re-home fleet.trusted_keys_dir")
        return text

    def leaf_conf_for(self, config_dir: str) -> str:
        old = f"{self.origin}/credentials/"
        text = self.leaf_conf.replace(_quoted(old)[:-1], _quoted(f"{config_dir}/credentials/")[:-1])
        if self.origin in text:
            raise KitInvalid(self.root, f"leaf.conf: a path under {self.origin} is left")
        return text


def _quoted(value: str) -> str:
    return f'"{value}"'


def _credentials_problem(keys: list[str]) -> str:
    problem = "credentials/ needs exactly one .key, its .crt and ca.crt"
    if len(keys) > 1:  # written by a release that added each generation to the old kit
        found = ", ".join(sorted(keys))
        return f"{problem}; it holds {found} (write a fresh kit: `aivos fleet rotate`)"
    return problem


def _files(root: Path, folder: str, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    directory = root / folder
    if not directory.is_dir():
        raise KitInvalid(root, f"{folder}/ is missing")
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name.endswith(suffixes)
    }


def load_kit(root: Path) -> SiteKit:
    """The kit at `root`, checked: every file is there and the files agree."""
    root = Path(root)
    if not root.is_dir():
        raise KitInvalid(root, "not a directory")
    for name in ("edge.toml", "leaf.conf"):
        if not (root / name).is_file():
            raise KitInvalid(root, f"{name} is missing (is this a kit from `aivos fleet enroll`?)")
    edge_toml = (root / "edge.toml").read_text()
    try:
        settings = tomllib.loads(edge_toml)
    except tomllib.TOMLDecodeError as exc:
        raise KitInvalid(root, f"edge.toml is not valid TOML: {exc}") from exc
    site = settings.get("site_id")
    keys_dir = settings.get("fleet", {}).get("trusted_keys_dir")
    if not isinstance(site, str) or not isinstance(keys_dir, str):
        raise KitInvalid(root, "edge.toml needs site_id and fleet.trusted_keys_dir")
    credentials = _files(root, "credentials", CREDENTIAL_SUFFIXES)
    keys = [n for n in credentials if n.endswith(".key")]
    if len(keys) != 1 or "ca.crt" not in credentials:
        raise KitInvalid(root, _credentials_problem(keys))
    if keys[0].removesuffix(".key") + ".crt" not in credentials:
        raise KitInvalid(root, f"credentials/{keys[0]} has no certificate next to it")
    trusted = _files(root, "trusted_keys", TRUSTED_KEY_SUFFIXES)
    if not trusted:
        raise KitInvalid(root, "trusted_keys/ holds no .pub key")
    leaf_conf = (root / "leaf.conf").read_text()
    origin = str(Path(keys_dir).parent)
    if f"{origin}/credentials/{keys[0]}" not in leaf_conf:
        raise KitInvalid(root, f"leaf.conf does not use credentials/{keys[0]}")
    return SiteKit(root, site, edge_toml, leaf_conf, origin, credentials, trusted)
