"""The review page of hard examples in headless Chromium (Selenium): an operator logs in,
sees the synced candidates clustered by the bundle's embedding, labels one cluster as a new
intent and another as out of scope, and a malformed intent name is refused without storing
anything. The console runs as `aivos cloud console` (its default bundle clusters); the
cloud store holds candidates as the sync ingest writes them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aivos.cloud.ingest.candidates import CandidateStore
from aivos.cloud.ingest.store import CloudStore
from aivos.shared.natsconf.server import NatsServer, free_port
from aivos.shared.syncwire import SyncEnvelope
from tests.fixtures.wait import eventually_sync
from tests.integration.test_console_browser import DOCS_IMG, _aivos, _missing, _wait, browser

__all__ = ["browser"]  # the Chromium fixture, shared with the console's browser test

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_missing, reason="headless Chromium not installed"),
]

DISPUTES = [
    "I was charged twice for my card",
    "my card was billed two times for the same purchase",
    "the shop charged my card twice",
    "dispute a double charge on my card, email me at <EMAIL_1>",
]
OTHERS = ["who won the world cup in 1998", "how tall is mount everest"]


def _seed(data: Path) -> dict[str, str]:
    """Candidates as the ingest stores them; returns text -> request id."""
    ids = {t: f"req-{i}" for i, t in enumerate(DISPUTES + OTHERS)}
    store = CloudStore.open(data)
    try:
        store.upsert_many(
            [
                SyncEnvelope(
                    id=f"candidate-{rid}",
                    site="branch-a" if i % 2 else "branch-b",
                    data_class="hard_example",
                    kind="candidate",
                    seq=i + 1,
                    created_at="2026-01-01T00:00:00+00:00",
                    payload={
                        "request_id": rid,
                        "text": text,
                        "intent": "oos",
                        "confidence": 0.8,
                        "threshold": 0.59,
                        "decision": "escalate",
                        "reason": "out_of_scope",
                        "route_reason": "out_of_scope",
                        "answered_by": "cloud",
                        "answer": "Let me look into that.",
                        "model_version": "v1",
                    },
                )
                for i, (text, rid) in enumerate(ids.items())
            ]
        )
    finally:
        store.close()
    return ids


@pytest.fixture
def console(tmp_path: Path, nats_hub: NatsServer, small_bundle: Path) -> Iterator[tuple[str, Path]]:
    home = tmp_path / "home"
    (home / "bundles").mkdir(parents=True)
    shutil.copytree(small_bundle, home / "bundles" / "default")  # clusters the candidates
    data = tmp_path / "cloud"
    env = {**os.environ, "AIVOS_HOME": str(home)}
    added = _aivos(
        "fleet", "operator", "add", "alice", "--password", "correct horse", "--data-dir", str(data)
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    log = (tmp_path / "console.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from aivos.cli import main; main()", "cloud", "console",
         "--nats", nats_hub.url, "--data-dir", str(data), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "console.log").read_text()
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200

        eventually_sync(
            healthy, timeout=60, interval=0.2, what="the console", ignore=(httpx.HTTPError,)
        )
        yield url, data
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_operator_labels_clusters_of_hard_examples(
    console: tuple[str, Path], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    url, data = console
    ids = _seed(data)

    def shot(name: str) -> None:
        path = tmp_path / f"console-{name}.png"
        browser.save_screenshot(str(path))
        if os.environ.get("AIVOS_UPDATE_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS_IMG / path.name)

    browser.get(url + "/review")
    _wait(browser, lambda d: "/login" in d.current_url)
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("correct horse")
    browser.find_element(By.ID, "login").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "open-count"))
    assert "/review" in browser.current_url  # back where the login started
    assert browser.find_element(By.LINK_TEXT, "Review").get_attribute("class") == "active"

    def cluster_of(text: str) -> Any:
        for section in browser.find_elements(By.CSS_SELECTOR, "section.cluster"):
            if text in section.text:
                return section
        raise AssertionError(f"no cluster shows {text!r}")

    def texts_of(section: Any) -> set[str]:
        return {td.text for td in section.find_elements(By.CSS_SELECTOR, "td.text")}

    # the disputes cluster together (at least most of them), apart from unrelated requests
    assert browser.find_element(By.ID, "open-count").text.startswith("6 example(s)")
    disputes = cluster_of(DISPUTES[0])
    grouped = texts_of(disputes)
    assert grouped <= set(DISPUTES) and len(grouped) >= 3, grouped
    assert "Let me look into that." in disputes.text  # the cloud's answer is shown
    shot("review")

    # a malformed new intent name: refused, nothing labelled
    other = cluster_of(OTHERS[0])
    other.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="new_intent"]').click()
    other.find_element(By.CSS_SELECTOR, "input.new-name").send_keys("Bad Name!")
    other.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "error"))
    assert "lower_snake_case" in browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "open-count").text.startswith("6 example(s)")

    # the dispute cluster becomes a new intent
    disputes = cluster_of(DISPUTES[0])
    disputes.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="new_intent"]').click()
    disputes.find_element(By.CSS_SELECTOR, "input.new-name").send_keys("card_dispute")
    disputes.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "flash"))
    flash = browser.find_element(By.ID, "flash").text
    assert f"{len(grouped)} example(s) labelled card_dispute (new_intent)" in flash
    open_count = browser.find_element(By.ID, "open-count").text
    assert open_count.startswith(f"{6 - len(grouped)} example(s)")

    # one unrelated request is out of scope; the other one stays open
    other = cluster_of(OTHERS[0])
    out_of_scope = texts_of(other)
    assert OTHERS[1] not in out_of_scope
    other.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="oos"]').click()
    other.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    left = 6 - len(grouped) - len(out_of_scope)
    _wait(
        browser,
        lambda d: f"{left} example(s) to review" in d.find_element(By.ID, "open-count").text,
    )
    labelled = browser.find_element(By.ID, "labelled").text
    assert f"card_dispute new_intent {len(grouped)} alice" in labelled
    assert f"oos oos {len(out_of_scope)} alice" in labelled
    shot("review-labelled")

    store = CloudStore.open(data)
    try:
        reviewed = {r.request_id: r.label for r in CandidateStore(store).reviewed()}
        by = {c.labelled_by for c in CandidateStore(store).candidates(unlabelled=False)}
    finally:
        store.close()
    assert reviewed == {
        **{ids[t]: "card_dispute" for t in grouped},
        **{ids[t]: "oos" for t in out_of_scope},
    }
    assert by == {"alice"}

    browser.get(url + "/actions")
    log = browser.find_element(By.ID, "actions").text
    assert log.count("review.label") == 2
