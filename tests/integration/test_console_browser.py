"""End-to-end in headless Chromium (Selenium): log in, view the fleet and a site, start a
rollout and abort it. The console runs as `aivos cloud console` against a real hub, with
simulated sites heartbeating over NATS. Screenshots go to the test's tmp dir (and to
docs/img/ when AIVOS_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from aivos.cloud.fleet.registry import SqliteRegistry
from aivos.cloud.fleet.sim import SimSite
from aivos.shared.natsconf.connect import connect_nats
from aivos.shared.natsconf.server import NatsServer, free_port
from tests.fixtures.wait import eventually_sync

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
_missing = not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists())

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        _missing,
        reason="headless Chromium not installed (apt-get install chromium chromium-driver)",
    ),
]

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def _aivos(*args: str, **kw: Any) -> Any:
    return subprocess.run(
        [sys.executable, "-c", "from aivos.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


class _Sims:
    """Simulated sites heartbeating from a background thread (Selenium calls block)."""

    def __init__(self, url: str, ids: list[str], interval_s: float) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sites: list[SimSite] = []
        self.nc: Any = None
        asyncio.run_coroutine_threadsafe(self._start(url, ids, interval_s), self.loop).result(30)

    async def _start(self, url: str, ids: list[str], interval_s: float) -> None:
        self.nc = await connect_nats(url, name="browser-sims")
        for i, site_id in enumerate(ids):
            site = SimSite(self.nc, site_id, interval_s=interval_s, seed=i)
            await site.start(watch_config=True)
            self.sites.append(site)

    def stop_site(self, site_id: str) -> None:
        site = next(s for s in self.sites if s.site_id == site_id)
        asyncio.run_coroutine_threadsafe(site.stop(), self.loop).result(10)

    def close(self) -> None:
        async def _close() -> None:
            for s in self.sites:
                await s.stop()
            await self.nc.close()

        asyncio.run_coroutine_threadsafe(_close(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextlib.contextmanager
def _console(tmp_path: Path, hub_url: str, data: Path) -> Iterator[str]:
    """`aivos cloud console` on `data` (an operator alice / "correct horse" added)."""
    added = _aivos(
        "fleet", "operator", "add", "alice", "--password", "correct horse", "--data-dir", str(data)
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    log = (tmp_path / "console.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from aivos.cli import main; main()",
            "cloud",
            "console",
            "--nats",
            hub_url,
            "--data-dir",
            str(data),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "console.log").read_text()
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200

        eventually_sync(
            healthy, timeout=60, interval=0.2, what="the console", ignore=(httpx.HTTPError,)
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


@pytest.fixture
def console_url(tmp_path: Path, nats_hub: NatsServer) -> Iterator[str]:
    data = tmp_path / "cloud"
    assert _aivos("fleet", "add", "branch-preregistered", "--data-dir", str(data)).returncode == 0
    with _console(tmp_path, nats_hub.url, data) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1360,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, predicate: Any, timeout: float = 30.0) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # a form post navigates: an element found just before the new page loads goes stale
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(
        predicate
    )


def test_operator_logs_in_views_fleet_and_site_starts_and_aborts_rollout(
    console_url: str, nats_hub: NatsServer, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(name: str) -> None:
        path = shots / f"console-{name}.png"
        browser.save_screenshot(str(path))
        if os.environ.get("AIVOS_UPDATE_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS_IMG / path.name)

    ids = [f"branch-{n:02d}" for n in range(1, 7)]
    sims = _Sims(nats_hub.url, ids, interval_s=0.5)
    try:
        browser.get(console_url + "/")
        _wait(browser, lambda d: "/login" in d.current_url)
        browser.find_element(By.ID, "username").send_keys("alice")
        browser.find_element(By.ID, "password").send_keys("wrong")
        browser.find_element(By.ID, "login").click()
        _wait(browser, lambda d: d.find_elements(By.ID, "error"))
        browser.find_element(By.ID, "username").send_keys("alice")
        browser.find_element(By.ID, "password").send_keys("correct horse")
        shot("login")
        browser.find_element(By.ID, "login").click()
        _wait(browser, lambda d: d.find_elements(By.ID, "sites"))

        # every simulated site shows up online; the pre-registered one is offline
        def all_online(d: Any) -> bool:
            d.get(console_url + "/")
            return d.find_element(By.ID, "count-online").text == str(len(ids))

        _wait(browser, all_online)
        rows = browser.find_elements(By.CSS_SELECTOR, "#sites tbody tr")
        assert {r.get_attribute("data-site") for r in rows} == {*ids, "branch-preregistered"}
        pre = browser.find_element(By.CSS_SELECTOR, 'tr[data-site="branch-preregistered"]')
        assert "offline" in pre.text and "never" in pre.text

        # cut one site: it turns offline with its age
        sims.stop_site("branch-06")

        def site_offline(d: Any) -> bool:
            d.get(console_url + "/?sort=last_seen&dir=desc")
            row = d.find_element(By.CSS_SELECTOR, 'tr[data-site="branch-06"]')
            return "offline" in row.text

        _wait(browser, site_offline)
        shot("fleet")

        # site detail with charts
        browser.find_element(By.LINK_TEXT, "branch-01").click()
        _wait(browser, lambda d: d.find_elements(By.ID, "site-state"))
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.chart polyline")) >= 4)
        assert browser.find_element(By.ID, "site-state").text == "online"
        assert browser.find_element(By.ID, "bundle-running").text == "v1"
        shot("site")

        # start a rollout of v2 to two sites (canary 50%), with a long soak
        browser.find_element(By.LINK_TEXT, "Rollouts").click()
        browser.find_element(By.ID, "bundle-version").send_keys("v2")
        browser.find_element(By.ID, "rollout-sites").send_keys("branch-01,branch-02")
        canary = browser.find_element(By.ID, "canary")
        canary.clear()
        canary.send_keys("50")
        soak = browser.find_element(By.ID, "soak")
        soak.clear()
        soak.send_keys("3600")
        browser.find_element(By.ID, "start-rollout").click()
        _wait(browser, lambda d: d.find_elements(By.ID, "rollout-state"))
        assert browser.find_element(By.ID, "rollout-state").text == "running"
        rollout_url = browser.current_url.split("?")[0]

        def canary_healthy(d: Any) -> bool:
            d.get(rollout_url)
            return "1/1 healthy" in d.find_element(By.CSS_SELECTOR, ".wave-card").text

        _wait(browser, canary_healthy)
        shot("rollout")

        browser.find_element(By.ID, "action-abort").click()
        _wait(browser, lambda d: d.find_element(By.ID, "rollout-state").text == "aborted")
        assert "abort" in browser.find_element(By.ID, "flash").text
        assert not browser.find_elements(By.ID, "action-abort")

        # the abort is in the operator log
        browser.find_element(By.LINK_TEXT, "Operator log").click()
        log_text = browser.find_element(By.ID, "actions").text
        assert "rollout.abort" in log_text and "rollout.start" in log_text and "alice" in log_text

        browser.find_element(By.ID, "logout").click()
        _wait(browser, lambda d: "/login" in d.current_url)
    finally:
        sims.close()


def _login(browser: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url + "/")
    _wait(browser, lambda d: "/login" in d.current_url)
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("correct horse")
    browser.find_element(By.ID, "login").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "sites"))


def test_fleet_overview_pages_problems_first_and_searches(
    tmp_path: Path, nats_hub: NatsServer, browser: Any
) -> None:
    """250 sites: pages of 100, offline and degraded sites on the first page, counts and the
    approvals tile over the whole fleet, a search by site id."""
    from selenium.webdriver.common.by import By

    data = tmp_path / "cloud"
    now = time.time()
    beats = []
    for i in range(250):
        hb = SimSite(None, f"site-{i:03d}", interval_s=3600.0, seed=i).heartbeat()  # type: ignore[arg-type]
        if i in (7, 140):
            hb = msgspec.structs.replace(hb, bundle_status="canary_failed")
        if i % 50 == 0:
            hb = msgspec.structs.replace(hb, approvals_pending=2, approval_oldest_s=60.0)
        beats.append((hb, now - 4 * 3600 if i in (42, 199) else now))  # 2 offline
    with SqliteRegistry.open(data) as registry:
        registry.ingest_heartbeats(beats)

    with _console(tmp_path, nats_hub.url, data) as url:
        _login(browser, url)

        def rows() -> list[str]:
            cells = browser.find_elements(By.CSS_SELECTOR, "#sites tbody tr")
            return [r.get_attribute("data-site") for r in cells]

        first = rows()
        assert len(first) == 100
        assert first[:4] == ["site-042", "site-199", "site-007", "site-140"]  # problems first
        assert first[4:6] == ["site-000", "site-001"]
        assert browser.find_element(By.ID, "count-total").text == "250"
        assert browser.find_element(By.ID, "count-online").text == "248"
        assert browser.find_element(By.ID, "count-degraded").text == "2"
        assert browser.find_element(By.ID, "count-approvals").text == "10"  # 5 sites x 2
        assert "page 1 of 3" in browser.find_element(By.CSS_SELECTOR, ".pager").text

        seen = set(first)
        for page in (2, 3):
            browser.find_element(By.CSS_SELECTOR, ".pager a[rel=next]").click()
            _wait(
                browser,
                lambda d, p=page: (
                    f"page {p} of 3" in d.find_element(By.CSS_SELECTOR, ".pager").text
                ),
            )
            seen |= set(rows())
        assert len(rows()) == 50 and len(seen) == 250
        assert not browser.find_elements(By.CSS_SELECTOR, ".pager a[rel=next]")

        search = browser.find_element(By.ID, "filter-q")
        search.clear()
        search.send_keys("site-14")
        search.submit()
        _wait(browser, lambda d: "q=site-14" in d.current_url)
        assert rows() == ["site-140", *(f"site-14{i}" for i in range(1, 10))]
        assert not browser.find_elements(By.CSS_SELECTOR, ".pager")  # one page
        assert browser.find_element(By.ID, "count-total").text == "250"  # the whole fleet
