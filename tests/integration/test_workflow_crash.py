"""SIGKILL in the middle of a side effect, then a restart: the run finishes and the fake
core-banking service receives the side effect exactly once (same idempotency key)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aivos.edge.workflows.demo.corebank import CoreBank
from tests.fixtures.wait import eventually_sync

ROOT = Path(__file__).resolve().parents[2]

WORKFLOW = """
name = "open_dispute"
deadline_s = 60

[[steps]]
id = "billing"
kind = "http"
connector = "corebank"
path = "/accounts/{inputs.account_id}/billing-check"

[[steps]]
id = "open"
kind = "http"
connector = "corebank"
method = "POST"
path = "/disputes"
body = { account_id = "{inputs.account_id}", amount = "{steps.billing.body.disputable_amount}" }
timeout_s = 60
retries = 0

[[steps]]
id = "answer"
kind = "respond"
template = "opened {steps.open.body.id}"
"""

# The engine process: `start` begins a run and waits for it; `resume` restarts the engine
# (which resumes unfinished runs) and waits for every run to finish. Prints JSON lines.
SCRIPT = """
import asyncio, json, sys
from aivos.edge.store import Store
from aivos.edge.workflows import WorkflowEngine, load_workflow_settings

async def main(mode, config, data_dir):
    store = Store.open(data_dir)
    engine = WorkflowEngine(store, load_workflow_settings(config))
    await engine.start()
    if mode == "start":
        wf = engine.workflow("open_dispute")
        r = await engine.start_run(wf, {"account_id": "ACC-1001"}, wait_s=0)
        print(json.dumps({"run_id": r.run_id}), flush=True)
        r = await engine.wait(r.run_id, 120)
    else:
        for run in engine.list_runs(limit=10):
            r = await engine.wait(run.id, 120)
            print(json.dumps({"run_id": r.run_id, "state": r.state, "response": r.response}), flush=True)
    await engine.stop()
    store.close()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
def bank() -> Iterator[CoreBank]:
    with CoreBank(token="tok") as b:
        yield b


def _engine(mode: str, config: Path, data_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode, str(config), str(data_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_during_side_effect_then_restart_is_exactly_once(
    tmp_path: Path, bank: CoreBank
) -> None:
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "open_dispute.toml").write_text(WORKFLOW)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[credentials.corebank]\nvalue = "Bearer tok"\n')
    secrets.chmod(0o600)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[workflows]\ndirectory = "{tmp_path / "wf"}"\nsecrets_file = "{secrets}"\n'
        f'[workflows.connectors.corebank]\nbase_url = "{bank.url}"\ncredential = "corebank"\n'
    )
    data_dir = tmp_path / "edge"
    # the first POST is recorded by the bank, which then stalls before answering
    bank.inject("POST", "/disputes", delay_after_s=30.0, times=1)

    first = _engine("start", config, data_dir)
    try:
        assert first.stdout is not None
        run_id = json.loads(first.stdout.readline())["run_id"]
        eventually_sync(lambda: len(bank.side_effects) == 1, what="the side effect at the bank")
        first.send_signal(signal.SIGKILL)  # mid-call: the result never reaches the store
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL

    second = _engine("resume", config, data_dir)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    results = {r["run_id"]: r for r in map(json.loads, out.splitlines())}
    assert results[run_id]["state"] == "succeeded"
    assert results[run_id]["response"] == "opened DIS-00001"
    # sent twice (before and after the crash) with one key; received once
    posts = [r for r in bank.requests if r["method"] == "POST"]
    assert len(posts) == 2
    assert len({p["key"] for p in posts}) == 1
    assert bank.side_effects == [("disputes", posts[0]["key"])]
    # the billing step finished before the crash and was not repeated
    assert bank.count("GET", "/accounts/ACC-1001/billing-check") == 1
