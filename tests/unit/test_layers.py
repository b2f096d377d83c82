"""The bottom tier names nothing above it, not even in a string (import-linter, run by
.ci/run, checks real imports; this catches `importlib.import_module("aivos.edge...")`)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_shared_names_no_upper_tier() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "shared").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "aivos.edge" in line or "aivos.cloud" in line or "aivos.cli" in line
    ]
    assert offenders == []


def test_edge_and_cloud_name_each_other_nowhere() -> None:
    pairs = {"edge": "aivos.cloud", "cloud": "aivos.edge"}
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for tier, other in pairs.items()
        for path in sorted((ROOT / tier).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if other in line
    ]
    assert offenders == []
