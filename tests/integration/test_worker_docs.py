"""docs/messaging.md examples run: every ```python block that is a full program
(contains ``asyncio.run(``) and the `aivos nats config` console example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.model import run_aivos

DOC = Path(__file__).resolve().parents[2] / "docs" / "messaging.md"
_BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
PROGRAMS = [b for b in _BLOCKS if "asyncio.run(" in b]


def test_doc_has_a_runnable_example() -> None:
    assert PROGRAMS


@pytest.mark.parametrize("program", PROGRAMS)
def test_doc_program_runs(program: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(program)
    root = str(DOC.parents[1])
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_doc_nats_config_example(tmp_path: Path) -> None:
    out = tmp_path / "nats"
    result = run_aivos(
        "nats",
        "config",
        "--out",
        str(out),
        "--site",
        "branch-1",
        "--hub-url",
        "nats-leaf://hub.example:7422",
    )
    assert result.returncode == 0, result.stderr
    assert "nats-leaf://hub.example:7422" in (out / "leaf-branch-1.conf").read_text()
    assert (out / "hub.conf").is_file()
