"""The first run's two bundles, and a build cache keyed by what goes into a build.

`aivos up` with no bundle serves a **quick** bundle first (the base encoder frozen, only the
intent head trained on its embeddings: the `--epochs 0` recipe, without noisy copies, built
without torch by `frozen_build`, so it needs only the light install + onnx) and
builds the **full** bundle in the background (exactly `aivos models build`, or `aivos intents
train --data D --val D#val` for other data), which then replaces it. A quick bundle is
labelled in its manifest: its version starts with ``intent-quick-`` and its training summary
says ``fine_tuned_encoder: false, epochs: 0``.

Builds are cached under ``$AIVOS_HOME/cache/builds/<key>``, the key a sha256 of the recipe,
the training data's bytes, the base model id and the source of this package (a changed
pipeline builds again): a second first run, or a home whose default bundle was replaced,
copies the bundle instead of training it.

    python -m aivos.cloud.modelbuild.quick --out DIR [--full] [--data FILE]
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console

from aivos.cloud.modelbuild.source import BASE_MODEL_ID
from aivos.shared.bundle import MANIFEST_NAME, Manifest, load_bundle_manifest, staged_bundle
from aivos.shared.paths import aivos_home, clinc150_path

__all__ = ["QUICK_PREFIX", "build_key", "cached_build", "is_quick"]

QUICK_PREFIX = "intent-quick-"
_PIPELINE_DIR = Path(__file__).resolve().parent


def is_quick(manifest: Manifest) -> bool:
    return manifest.bundle_version.startswith(QUICK_PREFIX)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_key(recipe: str, data: Path) -> str:
    """The cache key of building `recipe` ("quick" or "full") on `data`."""
    code = hashlib.sha256()
    for source in sorted(_PIPELINE_DIR.glob("*.py")):
        code.update(source.name.encode() + b"\0" + source.read_bytes())
    inputs = {
        "recipe": recipe,
        "data": _sha256(data),
        "base_model": BASE_MODEL_ID,
        "pipeline": code.hexdigest(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]


def _build_quick(data: Path, out: Path, console: Console) -> None:
    """The frozen-encoder recipe without torch (`frozen_build`): what `build_bundle(...,
    epochs=0)` makes, from onnx + onnxruntime + numpy, so it runs before torch is installed."""
    from aivos.cloud.modelbuild.frozen_build import build_frozen_bundle

    # the label is the version: anyone can tell a quick bundle apart
    build_frozen_bundle(data, out, version_prefix=QUICK_PREFIX, console=console)


def _build_full(data: Path, out: Path) -> None:
    """The normal build, through the CLI commands themselves (their defaults are the recipe)."""
    from aivos.cloud.modelbuild.cli import build_cmd, train_cmd

    if data == clinc150_path().resolve():
        build_cmd.main(["--out", str(out)], standalone_mode=False)
    else:
        train_cmd.main(
            ["--data", str(data), "--val", f"{data}#val", "--out", str(out)],
            standalone_mode=False,
        )


def cached_build(recipe: str, out: Path, data: Path, console: Console) -> Manifest:
    """Write the `recipe` bundle for `data` to `out` (atomically), from the cache when an
    identical build is there, else built and then cached."""
    cache = aivos_home() / "cache" / "builds"
    key = build_key(recipe, data)
    cached = cache / f"{recipe}-{key}"
    if (cached / MANIFEST_NAME).is_file():
        console.print(f"reusing the cached {recipe} build {cached.name}")
    else:
        cache.mkdir(parents=True, exist_ok=True)
        console.print(f"building the {recipe} bundle (cache key {key})")
        # built beside the cache entry and renamed into place: a stopped build leaves none
        with tempfile.TemporaryDirectory(prefix=".build-", dir=cache) as tmp:
            built = Path(tmp) / "bundle"
            if recipe == "quick":
                _build_quick(data, built, console)
            else:
                _build_full(data, built)
            load_bundle_manifest(built)  # complete and consistent before it is cached
            built.rename(cached)
    with staged_bundle(out) as staging:
        shutil.copytree(cached, staging, dirs_exist_ok=True)
    return load_bundle_manifest(out)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds the build: its temporary directories are removed on the way out
    sys.exit(128 + signum)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle directory.")
@click.option("--full", is_flag=True, help="The full fine-tuned bundle instead of the quick one.")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Training data in the CLINC150 layout (default: the shipped CLINC150).",
)
def main(out: Path, full: bool, data: Path | None) -> None:
    """Build (or reuse from the cache) the first run's quick or full intent bundle."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    console = Console(stderr=True)
    recipe = "full" if full else "quick"
    manifest = cached_build(recipe, out, (data or clinc150_path()).resolve(), console)
    click.echo(f"{recipe} bundle {manifest.bundle_version} -> {out}")


if __name__ == "__main__":
    main()
