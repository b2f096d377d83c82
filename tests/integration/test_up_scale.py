"""`aivos up --hub-nodes 3 --cloud-db URL`: the appliance on a 3-node hub cluster with the
cloud stores in a real PostgreSQL; a local answer and an escalation work, the audit records
reach PostgreSQL, and stopping leaves no hub node running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ctrl_c import sigint_default, stop
from tests.fixtures.wait import eventually_sync
from tests.integration.test_up import _read_lines

pytestmark = pytest.mark.slow


def _port_open(url: str) -> bool:
    host, _, port = url.split("://", 1)[-1].rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def test_up_on_a_hub_cluster_and_postgres(
    tmp_path: Path, small_bundle: Path, postgres_url: str
) -> None:
    home = tmp_path / "home"
    shutil.copytree(small_bundle, home / "bundles" / "default")
    # the generated answer must fit the escalation budget, whatever the box's speed: a
    # generous budget (the 135M model on a loaded 2-core box may take a minute to answer)
    # and a short answer (the default 128 tokens at 0.7-2.6 tokens/s outlast it)
    env = {
        **os.environ,
        "AIVOS_HOME": str(home),
        "AIVOS_UPLINK__ESCALATION_BUDGET_MS": "150000",
        "AIVOS_UPLINK__MAX_TOKENS": "16",
    }
    env.pop("AIVOS_CLOUD_DB", None)
    up = [sys.executable, "-m", "aivos", "up", "--data-dir", str(tmp_path / "up"), "--port", "0"]
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        [*up, "--hub-nodes", "3", "--cloud-db", postgres_url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        text=True,
        preexec_fn=sigint_default,  # Ctrl-C works in a background test run too
    )
    hubs: list[str] = []
    try:
        try:
            lines = _read_lines(proc, {"edge", "token", "console", "operator-token", "hub"}, 300)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from exc
        hubs = lines["hub"].split(",")
        assert len(hubs) == 3 and all(_port_open(u) for u in hubs), lines["hub"]
        ask = [sys.executable, "-m", "aivos", "ask", "--json"]
        local = subprocess.run(
            [*ask, "I lost my credit card, what should I do?"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert local.returncode == 0, local.stderr
        body = json.loads(local.stdout)
        assert (body["decision"], body["answered_by"]) == ("local", "local"), body
        generated = subprocess.run(
            # the client waits as long as the budget (its own default is 60 s)
            [*ask, "--timeout", "170", "who painted the mona lisa"],
            env=env,
            capture_output=True,
            text=True,
            timeout=200,
        )
        body = json.loads(generated.stdout)
        assert (body["decision"], body["answered_by"]) == ("escalate", "cloud"), body
        assert body["answer"]

        # the ingest of `up` writes into PostgreSQL, not the SQLite file of the data dir
        stats_cmd = [sys.executable, "-m", "aivos", "cloud", "stats", "--json"]

        def synced() -> dict[str, Any] | None:
            run = subprocess.run(
                [*stats_cmd, "--db", postgres_url],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            stats: dict[str, Any] = json.loads(run.stdout)
            return stats if stats["sites"].get("site-1", {}).get("audit", 0) >= 2 else None

        # each look is a CLI process (seconds on a busy box); the outbox drains in batches
        eventually_sync(synced, timeout=180, interval=0.5, what="both audit records in PostgreSQL")
        assert not (tmp_path / "up" / "cloud.db").exists()
    finally:
        stop(proc, signal.SIGINT, timeout=90)
    assert proc.returncode == 0
    assert hubs and not any(_port_open(u) for u in hubs), "a hub node outlived `aivos up`"
