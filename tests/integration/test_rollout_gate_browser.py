"""The rollout form's quality gate in headless Chromium (Selenium): an operator starts a
rollout of a bundle that lost held-out accuracy and is refused with the gate's reasons; the
same form with a bundle that passes starts the rollout, whose page shows the gate's report.
The console runs as `aivos cloud console`; its `bundles/` and `gate/` folders hold real
bundles and the held-out set."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from aivos.shared.bundle import load_bundle_manifest
from tests.integration.test_console_browser import _aivos, _missing, _wait, browser
from tests.integration.test_review_browser import console
from tests.integration.test_rollout_gate_cli import bundle_variant

__all__ = ["browser", "console"]  # fixtures shared with the other browser tests

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_missing, reason="headless Chromium not installed"),
]


def test_rollout_form_runs_the_quality_gate(
    console: tuple[str, Path], browser: Any, small_bundle: Path, small_clinc: Path
) -> None:
    from selenium.webdriver.common.by import By

    url, data = console
    base = load_bundle_manifest(small_bundle).bundle_version  # $AIVOS_HOME/bundles/default
    bundle_variant(small_bundle, data / "bundles" / "dropped", "v-dropped", threshold=0.99)
    (data / "gate").mkdir()
    shutil.copy(small_clinc, data / "gate" / "small.json")
    added = _aivos("fleet", "add", "gate-a", "--data-dir", str(data))
    assert added.returncode == 0, added.stderr

    browser.get(url + "/rollouts")
    _wait(browser, lambda d: "/login" in d.current_url)
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("correct horse")
    browser.find_element(By.ID, "login").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "rollout-form"))
    # the form suggests what the console can gate: its bundles and its gate data
    options = {
        o.get_attribute("value")
        for o in browser.find_elements(By.CSS_SELECTOR, "#built-bundles option")
    }
    assert {base, "v-dropped"} <= options
    data_options = browser.find_elements(By.CSS_SELECTOR, "#gate-data option")
    assert "small.json" in {o.get_attribute("value") for o in data_options}

    def start(bundle: str) -> None:
        browser.find_element(By.ID, "bundle-version").send_keys(bundle)
        browser.find_element(By.ID, "rollout-sites").send_keys("gate-a")
        browser.find_element(By.ID, "gate-heldout").send_keys("small.json#test")
        browser.find_element(By.ID, "gate-baseline").send_keys(base)
        browser.find_element(By.ID, "start-rollout").click()

    # a bundle that lost held-out accuracy: refused, with the reason, nothing started
    start("v-dropped")
    _wait(browser, lambda d: d.find_elements(By.ID, "error"))
    error = browser.find_element(By.ID, "error").text
    assert "failed the quality gate" in error and "in-scope accuracy" in error, error
    assert "rows lost" in error
    assert "v-dropped" in browser.find_element(By.ID, "refused").text
    assert "No rollouts yet." in browser.find_element(By.ID, "rollouts").text

    # the fleet's own bundle against itself passes: the rollout starts, its page shows the gate
    start(base)
    _wait(browser, lambda d: d.find_elements(By.ID, "rollout-state"))
    assert browser.find_element(By.ID, "rollout-state").text == "running"
    assert browser.find_element(By.ID, "gate-summary").text.startswith("passed")
    report = browser.find_element(By.ID, "gate-report").text
    assert "in scope accuracy" in report and "oos recall" in report
