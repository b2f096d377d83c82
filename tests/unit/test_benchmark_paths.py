"""Every benchmark runs from any directory (`cd /tmp && python /path/to/benchmarks/X.py`):
none names a file of the repository relative to the working directory (a default output
``Path("benchmarks/results/x.json")``, a data file, ``-m benchmarks.x`` in a child's argv).
They resolve such paths from ``Path(__file__)`` instead."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_DIRS = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
SCRIPTS = [pytest.param(p, id=p.name) for p in sorted((ROOT / "benchmarks").glob("*.py"))]


def _names_repo_path(node: ast.expr) -> bool:
    if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
        return False
    first, sep, _rest = node.value.partition("/")
    return bool(sep) and first in TOP_DIRS


def _runs_repo_module(elts: list[ast.expr]) -> bool:
    """``[..., "-m", "benchmarks.x", ...]``: the module is only found from the repo root."""
    for flag, module in zip(elts, elts[1:], strict=False):
        if (
            isinstance(flag, ast.Constant)
            and flag.value == "-m"
            and isinstance(module, ast.Constant)
            and isinstance(module.value, str)
            and module.value.partition(".")[0] in TOP_DIRS - {"aivos"}
        ):
            return True
    return False


def cwd_relative_paths(source: str) -> list[int]:
    """Lines that name a repository path or module relative to the working directory."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            values = [*node.args[:1]] if name in {"Path", "open"} else []
            values += [k.value for k in node.keywords if k.arg == "default"]
            if any(_names_repo_path(v) for v in values):
                lines.append(node.lineno)
        elif isinstance(node, ast.List | ast.Tuple) and _runs_repo_module(node.elts):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_check_finds_each_kind_of_cwd_relative_path() -> None:
    source = (
        'ap.add_argument("--out", type=Path, default=Path("benchmarks/results/x.json"))\n'
        'open("shared/data/clinc150/data_full.json")\n'
        'ap.add_argument("--data", default="benchmarks/data/set.jsonl")\n'
        'argv = [sys.executable, "-m", "benchmarks.quick_bundle"]\n'
        'ok = [Path(__file__).parent / "results/x.json", Path("/tmp/x"), "-m", "aivos"]\n'
    )
    assert cwd_relative_paths(source) == [1, 2, 3, 4]


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_names_no_path_relative_to_the_working_directory(script: Path) -> None:
    assert cwd_relative_paths(script.read_text()) == []
