"""Intent model bundles on disk: `manifest.json` + the files it lists with their sha256.

A bundle is a directory holding ``model.onnx``, ``tokenizer.json`` and ``manifest.json``.
`load_bundle_manifest` refuses a bundle that is incomplete or whose files do not match the
recorded hashes; `write_bundle` builds a bundle in a temp dir beside the target and renames
it into place, so a failure never leaves a half-written bundle behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec

from aivos.shared.errors import BundleError, BundleTampered, ModelNotFound

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "GoldenQuery",
    "OodCalibration",
    "TrainingSummary",
    "Manifest",
    "sha256_file",
    "load_bundle_manifest",
    "staged_bundle",
    "write_manifest",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_REQUIRED_FILES = ("model.onnx", "tokenizer.json")


class GoldenQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A validation query with its expected intent: a canary for a freshly installed bundle."""

    text: str
    intent: str


class TrainingSummary(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    train_source: str
    val_source: str
    n_train: int
    n_val: int
    n_labels: int
    epochs: int
    fine_tuned_encoder: bool
    seconds: float
    encoder_layers: int = 0  # transformer layers kept from the base model (0 = not recorded)


class OodCalibration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The embedding-distance out-of-scope score (shared/ood.py) a bundle serves with:
    the bundle file holding its class statistics, the score's name and its threshold, which
    replaces the manifest's MSP `threshold` on runtimes that know the score."""

    file: str  # listed in `files`, so its hash (and the signature) covers it
    score: str
    threshold: float


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format_version: int
    bundle_version: str
    labels: list[str]
    threshold: float
    embedding_model_id: str
    embedding_dim: int
    max_length: int
    quantization: str
    training: TrainingSummary
    metrics: dict[str, float]
    files: dict[str, str]
    created_at: str
    golden: list[GoldenQuery] = []
    canary_min_accuracy: float = 1.0
    oos_label: str = "oos"
    embedding_version: str = ""
    ood: OodCalibration | None = None  # None: out of scope by MSP against `threshold` alone


_decoder = msgspec.json.Decoder(Manifest)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle_manifest(bundle_dir: str | Path) -> Manifest:
    """Read and verify a bundle: the manifest decodes and every listed file has its sha256."""
    root = Path(bundle_dir)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ModelNotFound(str(root), "bundle directory does not exist")
    if not manifest_path.is_file():
        raise ModelNotFound(str(manifest_path), "bundle has no manifest")
    try:
        manifest = _decoder.decode(manifest_path.read_bytes())
    except msgspec.ValidationError as exc:
        raise BundleTampered(str(manifest_path), f"invalid manifest: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BundleTampered(str(manifest_path), f"manifest is not valid JSON: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            str(manifest_path), f"unsupported bundle format {manifest.format_version}"
        )
    for name in _REQUIRED_FILES:
        if name not in manifest.files:
            raise BundleTampered(str(manifest_path), f"manifest does not list {name}")
    if manifest.ood is not None and manifest.ood.file not in manifest.files:
        raise BundleTampered(str(manifest_path), f"manifest does not list {manifest.ood.file}")
    for name, expected in manifest.files.items():
        path = root / name
        if Path(name).name != name:
            raise BundleTampered(str(manifest_path), f"file name {name!r} is not a plain name")
        if not path.is_file():
            raise ModelNotFound(str(path), "file listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleTampered(str(path), "sha256 does not match the manifest")
    return manifest


def write_manifest(staging: Path, manifest: Manifest) -> None:
    """Write `manifest.json` into a staging dir (`files` must already hold the hashes)."""
    (staging / MANIFEST_NAME).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))


@contextlib.contextmanager
def staged_bundle(target: str | Path) -> Iterator[Path]:
    """Yield a temp dir beside `target`; on success it replaces `target` atomically.

    On any exception the temp dir is removed and `target` is left as it was.
    """
    final = Path(target).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield staging
        _replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_dir(staging: Path, final: Path) -> None:
    if final.exists() and not (final / MANIFEST_NAME).is_file() and any(final.iterdir()):
        raise BundleError(str(final), "exists and is not a bundle; refusing to replace it")
    old: Path | None = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    log.info("bundle written to %s", final)
