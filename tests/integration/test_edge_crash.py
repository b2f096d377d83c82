"""SIGKILL the agent at random moments under load; acknowledged requests must survive."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from aivos.shared.natsconf.server import free_port
from tests.fixtures.wait import eventually_sync

pytestmark = pytest.mark.slow

QUERIES = [
    "what is my checking account balance",
    "please freeze my account",
    "transfer 100 dollars to my savings",
    "what's the weather like tomorrow",
    "how do you say thank you in french",
    "who won the world cup in 1998",
]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aivos", *args], capture_output=True, text=True, timeout=120
    )


def _start(data_dir: Path, bundle: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aivos",
            "edge",
            "serve",
            "--data-dir",
            str(data_dir),
            "--bundle",
            str(bundle),
            "--port",
            str(port),
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "AIVOS_LIMITS__RATE_PER_SECOND": "100000"},
    )

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-2000:]
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200

    try:
        eventually_sync(ready, timeout=60, what="the agent ready", ignore=(httpx.HTTPError,))
    except AssertionError:
        proc.kill()
        raise
    return proc


def _fire(url: str, token: str, acked: list[str], stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
        while not stop.is_set():
            body = {"text": rng.choice(QUERIES), "session_id": f"s{seed}"}
            try:
                resp = client.post(f"{url}/v1/infer", json=body)
            except httpx.HTTPError:
                continue  # the agent died mid-request: not acknowledged
            if resp.status_code == 200:
                acked.append(resp.json()["request_id"])


def test_sigkill_loses_no_acknowledged_request(tmp_path: Path, small_bundle: Path) -> None:
    data_dir = tmp_path / "edge"
    created = _cli(
        "tokens", "create", "--data-dir", str(data_dir), "--scope", "client", "--name", "load"
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "agent.log"
    rng = random.Random(7)
    acked: list[str] = []
    for round_no in range(20):
        proc = _start(data_dir, small_bundle, port, log)
        stop = threading.Event()
        threads = [
            threading.Thread(target=_fire, args=(url, token, acked, stop, round_no * 10 + i))
            for i in range(4)
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.2, 1.0))  # the kill lands at a random moment of the load
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for t in threads:
            t.join()

    assert len(acked) >= 20, "the load generator should have been acknowledged many times"
    with sqlite3.connect(data_dir / "aivos.db") as conn:
        audited = {row[0] for row in conn.execute("SELECT id FROM audit")}
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    missing = [rid for rid in acked if rid not in audited]
    assert missing == [], f"{len(missing)} acknowledged requests have no audit row"
    verified = _cli("audit", "verify", "--data-dir", str(data_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr
