"""The README's example session runs as written (with a small real bundle as the default)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from aivos.shared.natsconf.server import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _session_block() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- readme-session -->\s*```bash\n(.*?)```", text, re.S)
    assert match, "README has no example session block"
    return match.group(1)


def test_readme_session_runs(tmp_path: Path, small_bundle: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(small_bundle, home / "bundles" / "default")
    env = {
        **os.environ,
        "AIVOS_HOME": str(home),
        "DATA": str(tmp_path / "edge"),
        "PORT": str(free_port()),
        "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}",
    }
    script = "set -euo pipefail\n" + _session_block()
    done = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the two curl JSON answers are in the output: the document and the inference
    objects = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert any(o.get("source") == "notes.md" for o in objects)
    infer = next(o for o in objects if "decision" in o)
    assert infer["decision"] in ("local", "escalate", "refuse")
    assert "audit chain intact" in done.stdout + done.stderr
