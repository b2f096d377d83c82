"""The first session a new user has, as the README tells it: `aivos up`, then the example
documents answer, the printed tokens and console login work, `/schema` needs no internet,
bad requests say what is expected, and Ctrl-C stops everything without a traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.ctrl_c import sigint_default, stop
from tests.integration.test_up import _read_lines

pytestmark = pytest.mark.slow

_LINES = {
    *("edge", "token", "console", "operator-token"),
    *("edge-data-dir", "edge-operator-token", "console-login"),
}


def _ask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "aivos", "ask", "--json", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _check_edge(lines: dict[str, str], env: dict[str, str]) -> None:
    edge, client = lines["edge"], {"Authorization": f"Bearer {lines['token']}"}
    operator = {"Authorization": f"Bearer {lines['edge-operator-token']}"}
    # the example knowledge base went into the empty index
    found = httpx.get(f"{edge}/v1/knowledge/search", params={"q": "opening hours"}, headers=client)
    assert found.status_code == 200, found.text
    assert found.json()["passages"][0]["source"] == "kb/branch.md"
    # the README session's document upload works with the printed operator token
    note = {"source": "notes.md", "text": "The branch car park is behind the building."}
    assert httpx.post(f"{edge}/v1/knowledge", json=note, headers=client).status_code == 403
    assert httpx.post(f"{edge}/v1/knowledge", json=note, headers=operator).status_code == 201
    assert Path(lines["edge-data-dir"], "aivos.db").is_file()

    # /schema is a page with no external assets (an offline box shows it whole)
    page = httpx.get(f"{edge}/schema")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/infer" in page.text and "InferRequest" in page.text
    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page.text)

    # bad requests say what is expected
    wrong = httpx.post(f"{edge}/v1/infer", json={"txt": "hi"}, headers=client).json()
    assert wrong["error"]["message"].startswith("unknown field 'txt'; required: text")
    cut = httpx.post(
        f"{edge}/v1/infer",
        content=b'{"text": "hi"',
        headers={**client, "content-type": "application/json"},
    ).json()
    assert cut["error"]["code"] == "invalid_json"
    assert cut["error"]["message"].startswith("the body is not valid JSON")
    assert "required: text" in cut["error"]["message"]

    # `aivos ask --meta` sends metadata: the edge checks it (at most 32 keys)
    one = _ask(env, "--meta", "account_id=ACC-1001", "what is the balance of my checking account")
    assert one.returncode == 0, one.stdout + one.stderr
    too_many = [a for n in range(33) for a in ("--meta", f"k{n}=v")]
    refused = _ask(env, *too_many, "what is my balance")
    assert refused.returncode == 1
    assert "field 'metadata'" in json.loads(refused.stdout)["error"]["message"]
    malformed = _ask(env, "--meta", "no-equals-sign", "hi")
    assert malformed.returncode == 2 and "expected key=value" in malformed.stderr


def _check_console_login(lines: dict[str, str]) -> None:
    user, password = lines["console-login"].split(" ", 1)
    with httpx.Client(base_url=lines["console"], follow_redirects=False) as console:
        form = console.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        done = console.post(
            "/login",
            data={"csrf": csrf.group(1), "next": "/", "username": user, "password": password},
        )
        assert done.status_code == 303 and done.headers["location"] == "/"
        assert console.get("/").status_code == 200  # the session cookie signs in


def _logs(up_dir: Path) -> dict[str, str]:
    return {p.stem: p.read_text(errors="replace") for p in (up_dir / "logs").glob("*.log")}


def test_first_session_as_the_readme_says(tmp_path: Path, small_bundle: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(small_bundle, home / "bundles" / "default")
    env: dict[str, Any] = {**os.environ, "AIVOS_HOME": str(home)}
    up_dir = tmp_path / "up"
    cmd = [sys.executable, "-m", "aivos", "up", "--data-dir", str(up_dir), "--port", "0"]
    with (tmp_path / "up.stderr").open("w") as err:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            preexec_fn=sigint_default,  # Ctrl-C works in a background test run too
        )
        try:
            lines = _read_lines(proc, _LINES, 300)
            assert lines["edge-data-dir"] == str(up_dir / "edge")
            _check_edge(lines, env)
            _check_console_login(lines)
        finally:
            stop(proc, signal.SIGINT, timeout=120)  # Ctrl-C
    stderr = (tmp_path / "up.stderr").read_text()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    logs = _logs(up_dir)
    # the worker pools (one per catalogue entry, one supervisor) behind the model router
    assert {"edge", "console", "ingest", "router", "pools", "leaf", "hub"} <= logs.keys()
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name}.log:\n{text[-3000:]}"
    # the ingest stopped on its SIGTERM by itself (it logs its totals on the way out)
    assert "ingest stopped: received" in logs["ingest"]
