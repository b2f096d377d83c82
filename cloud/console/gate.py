"""The quality gate of a rollout started from the console (form or ``POST /api/rollouts``).

The CLI takes paths (``--gate-bundle``, ``--gate-baseline``, ``--gate-heldout``,
``--gate-golden``); a web form must not read any file of the console's host, so the console
resolves names in two places it owns:

* bundles by **version**: the bundle directories under ``<console data dir>/bundles/`` and
  ``$AIVOS_HOME/bundles/`` (where ``aivos models build --out`` puts them), matched by their
  manifest's ``bundle_version``. The candidate is the version being rolled out; the
  baseline is the version given, else the one most of the target sites run now;
* held-out and golden sets by **file name** in ``<console data dir>/gate/`` (CSV, JSONL or
  CLINC150 JSON with ``#split``), or ``clinc150#test`` (``#val``, ``#train``) for the copy
  of CLINC150 the package ships.

A name with a path separator or ``..`` never reaches the file system.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from aivos.cloud.console.queries import bundle_counts
from aivos.cloud.fleet.quality_gate import DEFAULT_ALPHA, DEFAULT_TOLERANCE, BundleQualityGate
from aivos.cloud.fleet.registry import Registry
from aivos.shared.errors import Conflict, InvalidInput, NotFound
from aivos.shared.paths import aivos_home, clinc150_path

__all__ = [
    "CLINC150",
    "GATE_DIR",
    "DataName",
    "GateIn",
    "bundle_roots",
    "find_bundle",
    "gate_data_names",
    "local_bundles",
    "open_gate",
    "resolve_data",
]

GATE_DIR = "gate"  # held-out and golden files, under the console's data dir
CLINC150 = "clinc150"  # the packaged CLINC150 copy, named with a split: clinc150#test

# a file name in the gate directory, optionally with a CLINC150 split: no separator and no
# leading dot, so it never names anything outside the folder
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(#(train|val|test))?$"
DataName = Annotated[str, Meta(pattern=_NAME, max_length=134)]
_NAME_RE = re.compile(_NAME)
# what `shared.fleet.validate_bundle_version` accepts
Version = Annotated[
    str, Meta(min_length=1, max_length=128, pattern=r"^[^./\\ \t\n*>][^/\\ \t\n*>]*$")
]


class GateIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The quality gate of a rollout: the held-out set is required, the rest optional."""

    heldout: DataName
    baseline: Version | None = None  # None: what most of the target sites run now
    golden: DataName | None = None
    tolerance: Annotated[float, Meta(ge=0, lt=1)] = DEFAULT_TOLERANCE
    alpha: Annotated[float, Meta(gt=0, lt=1)] = DEFAULT_ALPHA


def bundle_roots(data_dir: Path) -> list[Path]:
    return [data_dir / "bundles", aivos_home() / "bundles"]


def _bundle_dirs(roots: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found += sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())
    return found


class _Named(msgspec.Struct):
    bundle_version: str


def _version(bundle: Path) -> str | None:
    """The version a bundle's manifest names, read without hashing its files (the rollouts
    page lists them on every load); the gate verifies the bundle it uses in full."""
    try:
        return msgspec.json.decode(
            (bundle / "manifest.json").read_bytes(), type=_Named
        ).bundle_version
    except (OSError, msgspec.DecodeError):
        return None  # not a readable bundle: not a candidate for any version


def local_bundles(roots: Sequence[Path]) -> list[str]:
    """The versions of the bundles the console can gate (for the form's suggestions)."""
    return sorted({v for p in _bundle_dirs(roots) if (v := _version(p)) is not None})


def find_bundle(version: str, roots: Sequence[Path]) -> Path:
    for bundle in _bundle_dirs(roots):
        if _version(bundle) == version:
            return bundle
    where = " or ".join(str(r) for r in roots)
    raise NotFound(f"no bundle {version} in {where}: build or copy it there to gate it")


def gate_data_names(data_dir: Path) -> list[str]:
    """The held-out / golden names the form suggests."""
    folder = data_dir / GATE_DIR
    names = [f"{CLINC150}#test", f"{CLINC150}#val"]
    if folder.is_dir():
        names += sorted(
            p.name
            for p in folder.iterdir()
            if p.is_file() and p.suffix in (".csv", ".jsonl", ".json")
        )
    return names


def resolve_data(name: str, data_dir: Path) -> str:
    """A held-out / golden name as the data spec `load_examples` reads."""
    if not _NAME_RE.match(name):  # no separator, no leading dot: never outside the folder
        raise InvalidInput("gate", f"{name!r} is not a file name of the gate directory")
    file, _, split = name.partition("#")
    if file == CLINC150 and split:
        return f"{clinc150_path()}#{split}"
    path = data_dir / GATE_DIR / file
    if not path.is_file():
        raise NotFound(f"no gate data {file!r} in {data_dir / GATE_DIR}")
    return f"{path}#{split}" if split else str(path)


def _baseline(registry: Registry, sites: Sequence[str] | None, candidate: str) -> str:
    counts = [(v, n) for v, n in bundle_counts(registry, sites) if v != candidate]
    if not counts:
        raise Conflict(
            "the target sites run no other bundle: name the baseline bundle to gate against"
        )
    return counts[0][0]


def open_gate(
    registry: Registry,
    data_dir: Path,
    gate: GateIn,
    bundle_version: str,
    sites: Sequence[str] | None,
) -> BundleQualityGate:
    """The gate of `bundle_version` on `sites` (None: the fleet); runs in a worker thread
    (it reads the held-out set)."""
    roots = bundle_roots(data_dir)
    baseline = gate.baseline or _baseline(registry, sites, bundle_version)
    return BundleQualityGate(
        find_bundle(bundle_version, roots),
        find_bundle(baseline, roots),
        resolve_data(gate.heldout, data_dir),
        resolve_data(gate.golden, data_dir) if gate.golden else None,
        gate.tolerance,
        gate.alpha,
    )
