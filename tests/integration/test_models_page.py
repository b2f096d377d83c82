"""The console's models page in headless Chromium: a real router (scripted workers over a
real nats-server) writes the usage file in the cloud data dir; the page lists each
catalogue model with its answers as primary and as fallback, tokens, cost, p95 and a chart,
and flags the site whose budget is used up. It shows the catalogue the fleet runs: the data
dir's file until one is pushed, then the pushed one with its version."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from aivos.cloud.models.catalogue_store import CatalogueStore
from aivos.cloud.models.report import catalogue_path, usage_path
from aivos.cloud.models.router import ModelRouter
from aivos.cloud.models.usage import UsageLedger
from aivos.cloud.worker.catalogue import parse_catalogue
from aivos.cloud.worker.cli import catalogue_worker
from aivos.edge.uplink.generation import SiteQuotaExceeded, generate
from aivos.shared.messages import GenerateRequest
from aivos.shared.natsconf.server import NatsServer, free_port
from aivos.shared.subjects import HUB_DOMAIN
from tests.fixtures.nats import ScriptedBackend
from tests.fixtures.wait import eventually_sync
from tests.integration.test_console_browser import _aivos, _missing, _wait, browser

__all__ = ["browser"]  # the fixture, shared with test_console_browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_missing, reason="headless Chromium not installed"),
]

CATALOGUE = """
[models.fast]
backend = "llamacpp"
version = "f-3"
cost_per_1k_tokens = 2.0
[models.spare]
backend = "llamacpp"
version = "s-1"
cost_per_1k_tokens = 0.5
[classes.small]
chain = ["fast", "spare"]
[quotas.stingy]
requests_per_day = 1
"""


async def _traffic(url: str, data_dir: Path) -> None:
    """3 answers by `fast`, then `fast` goes away: 2 by `spare` as a fallback; `stingy`
    uses up its one request."""
    cat = parse_catalogue(CATALOGUE)
    cloud = await nats.connect(url)
    workers = {}
    for model in ("fast", "spare"):
        workers[model] = catalogue_worker(
            cat, model, backend=ScriptedBackend(["a", "b"]), stats_interval_s=None
        )
        await workers[model].start(cloud)
    ledger = UsageLedger(cat, usage_path(data_dir))
    router = ModelRouter(cat, ledger=ledger, accept_timeout_s=1.0)
    await router.start(cloud)
    edge = await nats.connect(url)

    def req(rid: str, site: str = "b1") -> GenerateRequest:
        return GenerateRequest(request_id=rid, site=site, prompt="hello there", model_class="small")

    try:
        for i in range(3):
            assert (await generate(edge, req(f"p{i}"), timeout_s=10)).model == "fast"
        await workers["fast"].drain(grace_s=2)
        for i in range(2):
            assert (await generate(edge, req(f"f{i}"), timeout_s=10)).fallback
        await generate(edge, req("s1", "stingy"), timeout_s=10)
        with pytest.raises(SiteQuotaExceeded):
            await generate(edge, req("s2", "stingy"), timeout_s=10)
    finally:
        await edge.close()
        await router.drain(grace_s=2)
        await workers["spare"].drain(grace_s=2)
        ledger.close()
        await cloud.close()
    catalogue_path(data_dir).write_text(CATALOGUE)


# pushed while the console runs: fast's version bumped, a model new to the fleet
PUSHED = (
    CATALOGUE.replace('version = "f-3"', 'version = "f-4"')
    + """
[models.third]
backend = "llamacpp"
version = "t-1"
"""
)


async def _push(url: str, text: str) -> int:
    nc = await nats.connect(url)
    try:
        store = await CatalogueStore.open(nc.jetstream(domain=HUB_DOMAIN))
        return await store.push(text)
    finally:
        await nc.close()


@pytest.fixture
def console(
    tmp_path: Path, nats_hub_factory: Callable[[], NatsServer]
) -> Iterator[tuple[str, str]]:
    """(the console's URL, its hub's URL)."""
    # a hub of its own: the catalogue pushed here must not reach other tests' routers
    nats_hub = nats_hub_factory()
    data = tmp_path / "cloud"
    data.mkdir()
    asyncio.run(_traffic(nats_hub.url, data))
    added = _aivos(
        "fleet", "operator", "add", "alice", "--password", "correct horse", "--data-dir", str(data)
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    log = (tmp_path / "console.log").open("wb")
    argv = ["cloud", "console", "--nats", nats_hub.url, "--data-dir", str(data)]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from aivos.cli import main; main()", *argv, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "console.log").read_text()
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200

        eventually_sync(healthy, timeout=60, interval=0.2, ignore=(httpx.HTTPError,))
        yield url, nats_hub.url
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_models_page_shows_usage_shares_cost_charts_and_used_up_budgets(
    console: tuple[str, str], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    url, hub_url = console
    browser.get(url + "/models")
    _wait(browser, lambda d: "/login" in d.current_url)
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("correct horse")
    browser.find_element(By.ID, "login").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "models"))

    def cell(model: str, name: str) -> str:
        row = browser.find_element(By.CSS_SELECTOR, f'#models tr[data-model="{model}"]')
        return str(row.find_element(By.CLASS_NAME, name).text)

    # fast: 3 answers, as primary; spare: 2 from b1 + 1 from stingy, all as fallback
    assert (cell("fast", "requests"), cell("fast", "primary")) == ("3", "100%")
    assert (cell("spare", "requests"), cell("spare", "fallback")) == ("3", "100%")
    # prompt "hello there" = 2 tokens in (chars / 4) + 2 chunks out, per answer
    assert cell("fast", "tokens") == "12" and cell("fast", "cost") == "0.0240"
    assert cell("spare", "tokens") == "12" and cell("spare", "cost") == "0.0060"
    assert cell("fast", "p95").endswith("ms")
    assert browser.find_element(By.ID, "total-cost").text == "0.0300"
    flagged = browser.find_elements(By.CSS_SELECTOR, "#budgets-exhausted tr.exhausted")
    assert [r.get_attribute("data-site") for r in flagged] == ["stingy"]
    # a chart per model: answers as primary and as fallback, p95 and cost, per minute
    for model in ("fast", "spare"):
        lines = browser.find_elements(By.CSS_SELECTOR, f"#chart-{model} svg.chart polyline")
        assert len(lines) == 4
    legends = browser.find_elements(By.CSS_SELECTOR, "#chart-spare svg.chart text.legend")
    assert [t.text for t in legends] == ["primary", "fallback", "p95 ms", "cost x1000"]

    # the file until a catalogue is pushed, and the page says so
    source = browser.find_element(By.ID, "catalogue-source")
    assert source.get_attribute("data-source") == "file"
    assert "catalogue.toml (nothing pushed)" in source.text
    assert not browser.find_elements(By.CSS_SELECTOR, '#models tr[data-model="third"]')

    assert asyncio.run(_push(hub_url, PUSHED)) == 1
    browser.get(url + "/models")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#models tr[data-model="third"]'))
    source = browser.find_element(By.ID, "catalogue-source")
    assert (source.get_attribute("data-source"), source.get_attribute("data-version")) == (
        "pushed",
        "1",
    )
    assert "pushed catalogue v1" in source.text
    assert cell("third", "requests") == "0"
    row = browser.find_element(By.CSS_SELECTOR, '#models tr[data-model="fast"]')
    assert "f-4" in row.text  # the version the fleet runs now
    assert cell("fast", "requests") == "3"  # today's usage stays
