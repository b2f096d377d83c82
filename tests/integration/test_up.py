"""`aivos up` starts the whole appliance; `aivos ask` gets a local and a generated answer."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from aivos.cloud.models.up_pools import DEFAULT_CATALOGUE
from tests.fixtures.ctrl_c import sigint_default, stop
from tests.fixtures.wait import eventually_sync

pytestmark = pytest.mark.slow


def _read_lines(proc: subprocess.Popen[str], wanted: set[str], timeout_s: float) -> dict[str, str]:
    """`NAME: VALUE` lines of `aivos up`, read by a thread (no select on a buffered pipe)."""
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    found: dict[str, str] = {}

    def all_printed() -> bool:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert proc.poll() is None, "aivos up exited early"
        else:
            name, sep, value = line.strip().partition(": ")
            if sep:
                found[name] = value
        return wanted <= found.keys()

    eventually_sync(
        all_printed,
        timeout=timeout_s,
        interval=0,
        what=lambda: f"the lines of aivos up; printed only {sorted(found)}",
    )
    return found


def _worker_logs(data_dir: Path) -> str:
    """The tail of each pool worker's log (`up` writes them to DATA_DIR/logs)."""
    tails = []
    for log in sorted((data_dir / "logs").glob("*-pool-*.log")):
        lines = log.read_text(errors="replace").splitlines()[-5:]
        tails.append(f"{log.name}:\n" + "\n".join(lines))
    return "\n".join(tails) or "no worker log"


def test_up_runs_the_appliance_and_ask_gets_answers(tmp_path: Path, small_bundle: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(small_bundle, home / "bundles" / "default")
    # the operator's catalogue, which `up` keeps: its default with one llama.cpp thread. On a
    # 2-core box busy with other work, the default 2 threads wait on each other at every
    # step (decoding fell to 0.7-2.6 tokens/s against 13-16 with one thread, load 6-12),
    # and the answer missed even this test's budget (the same before the pools process)
    catalogue = DEFAULT_CATALOGUE.replace(
        'version = "135m-instruct"\n', 'version = "135m-instruct"\nthreads = 1\n'
    )
    assert catalogue != DEFAULT_CATALOGUE
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "catalogue.toml").write_text(catalogue)
    # the generated answer must fit the escalation budget, whatever the box's speed: a
    # generous budget, and a short answer (the default 128 tokens at the 0.7-2.6 tokens/s
    # seen on a loaded 2-core box would outlast any budget an interactive question gets)
    env = {
        **os.environ,
        "AIVOS_HOME": str(home),
        "AIVOS_UPLINK__ESCALATION_BUDGET_MS": "45000",
        "AIVOS_UPLINK__MAX_TOKENS": "16",
    }
    cmd = [
        sys.executable,
        "-m",
        "aivos",
        "up",
        "--data-dir",
        str(tmp_path / "up"),
        "--port",
        "0",
    ]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=sigint_default,  # Ctrl-C works in a background test run too
    )
    try:
        lines = _read_lines(proc, {"edge", "token", "console", "operator-token"}, 240)
        ask = [sys.executable, "-m", "aivos", "ask", "--json"]
        # answered on site: `up` loads the example knowledge base, which covers lost cards
        # (a question the site has no document for escalates while a generator is reachable)
        local = subprocess.run(
            [*ask, "I lost my credit card, what should I do?"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert local.returncode == 0, local.stderr
        body = json.loads(local.stdout)
        # (the test bundle has no lost-card intent: the site's own document answers it)
        assert (body["decision"], body["answered_by"]) == ("local", "local"), body
        assert any(p["source"].endswith("cards.md") for p in body["passages"]), body
        generated = subprocess.run(
            [*ask, "who painted the mona lisa"], env=env, capture_output=True, text=True, timeout=60
        )
        body = json.loads(generated.stdout)
        assert body["decision"] == "escalate"
        # not answered in time: the workers' logs say how far generation got
        assert body["answered_by"] == "cloud", (body, _worker_logs(tmp_path / "up"))
        assert body["answer"]
        # the pools process started its worker as the entry says
        logs = [p.read_text() for p in (tmp_path / "up" / "logs").glob("*-pool-*.log")]
        assert any("loaded (1 threads)" in text for text in logs), logs
        sites = httpx.get(
            f"{lines['console']}/api/sites",
            headers={"Authorization": f"Bearer {lines['operator-token']}"},
            timeout=10,
        )
        assert sites.status_code == 200
        # the audit records of both questions reach the cloud store that `up` runs
        stats_cmd = [
            sys.executable,
            "-m",
            "aivos",
            "cloud",
            "stats",
            "--data-dir",
            str(tmp_path / "up"),
            "--json",
        ]

        def synced() -> dict[str, Any] | None:
            run = subprocess.run(stats_cmd, env=env, capture_output=True, text=True, timeout=60)
            stats: dict[str, Any] = json.loads(run.stdout)
            return stats if stats["sites"].get("site-1", {}).get("audit", 0) >= 2 else None

        # each look is a CLI process (seconds on a busy box); the outbox drains in batches
        stats = eventually_sync(
            synced, timeout=180, interval=0.5, what="both audit records in the cloud store"
        )
        assert stats["sites"]["site-1"]["audit"] >= 2
    finally:
        # `up` stops in stages, each SIGKILLed after 15 s, the pools after 40 s (aivos.up)
        stop(proc, signal.SIGINT, timeout=90)
    assert proc.returncode == 0
