"""Pending approvals are visible: `aivos approvals list|approve|reject` against a real agent
(`aivos edge serve`) whose webhook-started workflow waits for an operator, and the fleet
console shows the site's pending count, carried by the agent's own heartbeat."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from aivos.edge.agent import Agent
from aivos.edge.fleet.heartbeat import build_heartbeat
from aivos.edge.fleet.status import FleetStatus
from aivos.edge.workflows.signatures import signed_headers
from aivos.shared.natsconf.server import NatsServer
from aivos.shared.subjects import heartbeat_subject
from tests.fixtures.agent_proc import AgentProcess, aivos_cli, create_token
from tests.fixtures.edge import make_edge_settings
from tests.fixtures.wait import eventually, eventually_sync
from tests.integration.test_console_browser import _missing, _wait, browser, console_url

__all__ = ["browser", "console_url"]  # the console test's fixtures, used here too

pytestmark = pytest.mark.slow

SECRET = "whsec-approvals-test"

REFUND = """
name = "refund_review"
[trigger]
events = ["shop.refund"]

[[steps]]
id = "check"
kind = "approve"
message = "Refund {inputs.amount} on order {inputs.order}?"
timeout_s = 3600

[[steps]]
id = "answer"
kind = "respond"
template = "refund of {inputs.amount} done"
"""


def _site(tmp_path: Path) -> Path:
    """A workflow directory, its secrets file and an agent config naming both."""
    flows = tmp_path / "workflows"
    flows.mkdir()
    (flows / "refund.toml").write_text(REFUND)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[webhooks.shop]\nsecret = "{SECRET}"\n')
    secrets.chmod(0o600)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[workflows]\ndirectory = "{flows}"\nsecrets_file = "{secrets}"\ndefault_wait_s = 0\n'
    )
    return config


def _refund(url: str, order: str, amount: str) -> str:
    body = json.dumps({"order": order, "amount": amount}).encode()
    resp = httpx.post(
        f"{url}/v1/events/shop",
        content=body,
        headers={**signed_headers(SECRET, "refund", body), "Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 202, resp.text
    return str(resp.json()["runs"][0]["run_id"])


def _cli(agent: AgentProcess, token: str, *args: str) -> Any:
    # a wide terminal: the table's text is asserted unwrapped
    return subprocess.run(
        [sys.executable, "-m", "aivos", "approvals", *args, "--url", agent.url, "--token", token],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )


@pytest.fixture
def agent(tmp_path: Path, small_bundle: Path) -> Iterator[AgentProcess]:
    config = _site(tmp_path)
    proc = AgentProcess(
        tmp_path / "edge", small_bundle, log=tmp_path / "agent.log", config=config
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_cli_lists_approves_and_rejects_waiting_runs(agent: AgentProcess, tmp_path: Path) -> None:
    operator = create_token(agent.data_dir, "operator", "ops")
    client = create_token(agent.data_dir, "client", "app")
    empty = _cli(agent, operator, "list")
    assert empty.returncode == 0, empty.stderr
    assert "no runs are waiting for approval" in empty.stdout

    first = _refund(agent.url, "A-1", "40 EUR")
    second = _refund(agent.url, "B-2", "900 EUR")

    def both_waiting() -> list[dict[str, Any]] | None:
        done = _cli(agent, operator, "list", "--json")
        assert done.returncode == 0, done.stderr
        pending: list[dict[str, Any]] = json.loads(done.stdout)
        return pending if len(pending) == 2 else None

    pending = eventually_sync(both_waiting, timeout=60, what="two runs waiting for approval")
    assert [p["run_id"] for p in pending] == [first, second]  # oldest first
    assert pending[0]["workflow"] == "refund_review"
    assert pending[0]["message"] == "Refund 40 EUR on order A-1?"
    assert pending[1]["step"] == "check" and pending[1]["decide_by"]

    table = _cli(agent, operator, "list")
    assert "2 waiting for approval" in table.stdout
    assert first in table.stdout and "Refund 900 EUR on order B-2?" in table.stdout

    # a client token may not decide; the run keeps waiting
    refused = _cli(agent, client, "approve", first)
    assert refused.returncode == 1
    assert "403" in refused.stderr

    approved = _cli(agent, operator, "approve", first, "--note", "receipt checked")
    assert approved.returncode == 0, approved.stderr
    assert f"approved run {first} (refund_review)" in approved.stdout
    rejected = _cli(agent, operator, "reject", second)
    assert rejected.returncode == 0, rejected.stderr
    assert f"rejected run {second}" in rejected.stdout

    # deciding twice is a conflict, said in words
    again = _cli(agent, operator, "reject", second)
    assert again.returncode == 1 and "409" in again.stderr

    def state(run_id: str) -> str:
        resp = httpx.get(
            f"{agent.url}/v1/runs/{run_id}",
            headers={"Authorization": f"Bearer {operator}"},
            timeout=10,
        )
        return str(resp.json()["run"]["state"])

    eventually_sync(lambda: state(first) == "succeeded", timeout=30, what="approved run done")
    assert state(second) == "rejected"
    assert "no runs are waiting" in _cli(agent, operator, "list").stdout


def test_cli_without_token_or_agent_says_what_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, "AIVOS_HOME": str(tmp_path / "home")}
    env.pop("AIVOS_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-m", "aivos", "approvals", "list", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert "no token" in done.stderr
    unreachable = aivos_cli(
        "approvals", "list", "--url", "http://127.0.0.1:9", "--token", "t", "--timeout", "5"
    )
    assert unreachable.returncode == 1
    assert "cannot reach the edge agent at http://127.0.0.1:9" in unreachable.stderr


class _Loop:
    """An event loop in a thread: the agent runs there while Selenium calls block."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.skipif(_missing, reason="headless Chromium not installed")
def test_console_shows_pending_approvals_from_the_sites_heartbeat(
    tmp_path: Path,
    small_bundle: Path,
    nats_hub: NatsServer,
    console_url: str,
    browser: Any,
) -> None:
    from selenium.webdriver.common.by import By

    config = _site(tmp_path)
    settings = make_edge_settings(
        tmp_path / "edge",
        small_bundle,
        site_id="branch-approvals",
        **{"workflows.directory": str(tmp_path / "workflows")},
        **{"workflows.secrets_file": str(tmp_path / "secrets.toml")},
    )
    assert config.exists()
    loop = _Loop()
    agent = Agent(settings)
    try:
        loop.run(agent.start())

        async def two_waiting() -> None:
            workflow = agent.workflows.workflow("refund_review")
            for order in ("A-1", "B-2"):
                await agent.workflows.start_run(
                    workflow, {"order": order, "amount": "5 EUR"}, wait_s=0
                )
            await eventually(
                lambda: len(agent.workflows.list_runs(state="waiting_approval")) == 2,
                timeout=30,
                what="two runs waiting",
            )

        loop.run(two_waiting())

        async def beat() -> None:
            hb = await build_heartbeat(agent, FleetStatus(), 0.5, 60.0)
            assert hb.approvals_pending == 2 and hb.approval_oldest_s >= 0
            nc = await nats.connect(nats_hub.url)
            try:
                await nc.publish(heartbeat_subject(agent.site_id), _encode(hb))
                await nc.flush()
            finally:
                await nc.close()

        browser.get(console_url + "/")
        _wait(browser, lambda d: "/login" in d.current_url)
        browser.find_element(By.ID, "username").send_keys("alice")
        browser.find_element(By.ID, "password").send_keys("correct horse")
        browser.find_element(By.ID, "login").click()
        _wait(browser, lambda d: d.find_elements(By.ID, "sites"))

        def shown(d: Any) -> bool:
            loop.run(beat())  # the site beats until the console has ingested one
            d.get(console_url + "/")
            rows = d.find_elements(By.CSS_SELECTOR, 'tr[data-site="branch-approvals"]')
            return bool(rows) and "2 waiting" in rows[0].text

        _wait(browser, shown, timeout=60)
        assert browser.find_element(By.ID, "count-approvals").text == "2"
        browser.find_element(By.LINK_TEXT, "branch-approvals").click()
        _wait(browser, lambda d: d.find_elements(By.ID, "approvals"))
        assert "2 waiting" in browser.find_element(By.ID, "approvals").text
    finally:
        loop.run(agent.stop())
        loop.close()


def _encode(hb: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(hb)
