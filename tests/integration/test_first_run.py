"""The first run: a quick bundle (frozen encoder + trained head, built without torch) served at
once, the full bundle built in the background and swapped in (restarting the edge with
--edge-only, rolled out through the fleet with the hub), builds cached by their inputs, and a
stop during the background build that leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from aivos.shared.bundle import load_bundle_manifest
from tests.fixtures.ctrl_c import sigint_default, stop
from tests.fixtures.wait import eventually_sync
from tests.integration.test_up import _read_lines

pytestmark = pytest.mark.slow

QUICK = [sys.executable, "-m", "aivos.cloud.modelbuild.quick"]
# the quick build in an interpreter where the torch stack cannot be imported (a None entry in
# sys.modules makes `import torch` raise ImportError): what scripts/up has before phase 2
QUICK_WITHOUT_TORCH = [
    sys.executable,
    "-c",
    "import sys\n"
    "for name in ('torch', 'transformers', 'optimum', 'sentence_transformers', 'safetensors'):\n"
    "    sys.modules[name] = None\n"
    "from aivos.cloud.modelbuild.quick import main\n"
    "main()",
]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "AIVOS_HOME": str(home), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def quick_home(tmp_path_factory: pytest.TempPathFactory, small_clinc: Path) -> Path:
    """A home whose build cache holds the quick bundle of `small_clinc`, built without torch."""
    home = tmp_path_factory.mktemp("quick-home")
    out = home / "first"
    run = subprocess.run(
        [*QUICK_WITHOUT_TORCH, "--out", str(out), "--data", str(small_clinc)],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "building the quick bundle" in run.stderr
    return home


def test_quick_bundle_is_labelled_and_reused_from_the_cache(
    quick_home: Path, small_clinc: Path, tmp_path: Path
) -> None:
    first = load_bundle_manifest(quick_home / "first")
    assert first.bundle_version.startswith("intent-quick-")
    assert (first.training.epochs, first.training.fine_tuned_encoder) == (0, False)
    assert first.labels and first.golden  # a real bundle: calibrated, with its canary
    assert first.quantization == "int8-dynamic-per-channel"
    assert first.metrics["val_in_scope_accuracy"] >= 0.9  # 8 intents: the frozen encoder does
    again = subprocess.run(
        [*QUICK, "--out", str(tmp_path / "again"), "--data", str(small_clinc)],
        env=_env(quick_home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    assert "reusing the cached quick build" in again.stderr
    assert load_bundle_manifest(tmp_path / "again").bundle_version == first.bundle_version


def test_other_data_is_another_cache_key(small_clinc: Path, tmp_path: Path) -> None:
    from aivos.cloud.modelbuild.quick import build_key

    other = tmp_path / "other.json"
    other.write_text(small_clinc.read_text().replace("balance", "balanse", 1))
    assert build_key("quick", small_clinc) == build_key("quick", small_clinc)
    assert build_key("quick", small_clinc) != build_key("quick", other)
    assert build_key("quick", small_clinc) != build_key("full", small_clinc)


def _up(
    home: Path, data_dir: Path, small_clinc: Path, edge_only: bool = True
) -> subprocess.Popen[str]:
    cmd = [
        *(sys.executable, "-m", "aivos", "up", "--port", "0"),
        *(("--edge-only",) if edge_only else ()),
        *("--data-dir", str(data_dir), "--train-data", str(small_clinc)),
    ]
    return subprocess.Popen(
        cmd,
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=sigint_default,  # Ctrl-C works in a background test run too
    )


def _served(edge: str) -> str | None:
    try:
        version: str | None = httpx.get(f"{edge}/readyz", timeout=5).json()["model_version"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return version


# liveness bounds for a loaded 2-core box: two real builds run inside these tests
@pytest.mark.timeout(2400)
def test_empty_home_answers_from_the_quick_bundle_then_serves_the_full_one(
    tmp_path: Path, small_clinc: Path
) -> None:
    home = tmp_path / "home"
    proc = _up(home, tmp_path / "up", small_clinc)
    try:
        lines = _read_lines(proc, {"edge", "token", "model"}, 600)
        assert "quick" in lines["model"]
        quick = load_bundle_manifest(home / "bundles" / "default").bundle_version
        assert quick.startswith("intent-quick-")
        ask = [sys.executable, "-m", "aivos", "ask", "--json"]
        local = subprocess.run(
            [*ask, "I lost my credit card, what should I do?"],
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert local.returncode == 0, local.stderr
        body = json.loads(local.stdout)
        assert (body["decision"], body["answered_by"]) == ("local", "local"), body
        assert body["model_version"] == quick

        # the full build runs in the background and the edge restarts on it
        def full_served() -> str | None:
            version = _served(lines["edge"])
            return version if version and not version.startswith("intent-quick-") else None

        full = eventually_sync(full_served, timeout=1800, interval=1, what="the full bundle")
        default = load_bundle_manifest(home / "bundles" / "default")
        assert default.bundle_version == full  # the next `up` starts with it
        assert default.training.fine_tuned_encoder and default.training.epochs > 0
        again = subprocess.run(
            [*ask, "I lost my credit card, what should I do?"],
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=60,
        )
        body = json.loads(again.stdout)
        assert body["model_version"] == full
        # the index was re-embedded for the fine-tuned encoder: the document still answers
        assert any(p["source"].endswith("cards.md") for p in body["passages"]), body
    finally:
        stop(proc, signal.SIGINT, timeout=120)
    assert proc.returncode == 0


def _cmdline(p: psutil.Process) -> list[str]:
    """A child may end between listing and asking (a one-off step): then it has none."""
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(1800)
def test_sigterm_during_the_background_build_stops_it_cleanly(
    tmp_path: Path, quick_home: Path, small_clinc: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(quick_home / "cache", home / "cache")  # the quick build: a cache hit
    proc = _up(home, tmp_path / "up", small_clinc)
    try:
        lines = _read_lines(proc, {"edge", "model"}, 600)
        assert "quick" in lines["model"]
        build_log = tmp_path / "up" / "logs" / "model-build.log"
        # a positive signal that the full build is training (not still importing)
        eventually_sync(
            lambda: "fine-tune" in build_log.read_text(errors="replace"),
            timeout=600,
            interval=0.5,
            what="the full build's training step in its log",
        )
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("--full" in _cmdline(p) for p in family)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert not [p for p in family if _alive(p)]
    builds = home / "cache" / "builds"
    assert not list(builds.glob(".build-*"))  # the interrupted build removed its files
    assert not list(builds.glob("full-*"))  # and cached nothing half-built
    assert load_bundle_manifest(home / "bundles" / "default").bundle_version.startswith(
        "intent-quick-"
    )


@pytest.mark.timeout(1200)
def test_with_the_hub_the_full_bundle_is_rolled_out_to_the_site(
    tmp_path: Path, quick_home: Path, small_clinc: Path, small_bundle: Path
) -> None:
    """The full `aivos up`: the quick bundle served first, the full one published and rolled
    out through the fleet (the edge checks its signature and canary, swaps it in without a
    restart and re-embeds its index). Both builds come from the cache to bound the test:
    the full entry is the session's fine-tuned `small_bundle` of the same data, filed under
    the key `aivos up --train-data small_clinc` asks for; the build itself is what the
    --edge-only test above exercises."""
    from aivos.cloud.modelbuild.quick import build_key

    home = tmp_path / "home"
    shutil.copytree(quick_home / "cache", home / "cache")
    full_entry = home / "cache" / "builds" / f"full-{build_key('full', small_clinc.resolve())}"
    shutil.copytree(small_bundle, full_entry)
    full = load_bundle_manifest(small_bundle).bundle_version
    env = {**_env(home), "AIVOS_UPLINK__ESCALATION_BUDGET_MS": "45000"}
    proc = _up(home, tmp_path / "up", small_clinc, edge_only=False)
    try:
        lines = _read_lines(proc, {"edge", "token", "console", "operator-token", "model"}, 600)
        assert "quick" in lines["model"]
        assert (_served(lines["edge"]) or "").startswith("intent-quick-")
        served = eventually_sync(
            lambda: _served(lines["edge"]) == full,
            timeout=600,
            interval=1,
            what=f"the edge serving the rolled-out full bundle {full}",
        )
        assert served
        assert load_bundle_manifest(home / "bundles" / "default").bundle_version == full
        ask = subprocess.run(
            [sys.executable, "-m", "aivos", "ask", "--json", "I lost my credit card"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ask.returncode == 0, ask.stderr
        body = json.loads(ask.stdout)
        assert body["model_version"] == full
        # the edge re-embedded its index for the fine-tuned encoder: the document still answers
        assert any(p["source"].endswith("cards.md") for p in body["passages"]), body
        # the console knows the rollout that carried it
        rollouts = httpx.get(
            f"{lines['console']}/api/rollouts",
            headers={"Authorization": f"Bearer {lines['operator-token']}"},
            timeout=10,
        )
        assert rollouts.status_code == 200, rollouts.text[:500]
        assert full in [r["bundle_version"] for r in rollouts.json()]
    finally:
        proc.send_signal(signal.SIGTERM)  # as Ctrl-C; SIGINT is ignored in a background job
        proc.wait(timeout=180)
    assert proc.returncode == 0
