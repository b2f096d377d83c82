"""`aivos up` stopping its children: the pools process gets longer than its own drain
bound (it SIGKILLs its workers after `DRAIN_GRACE_S`) before `up` SIGKILLs it, so it never
leaves workers behind; other services are SIGKILLed after 15 s. Real child processes,
with `up`'s 15 s shortened to half a second."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from aivos import up
from aivos.cloud.models.pool import DRAIN_GRACE_S
from aivos.cloud.models.up_pools import default_pool_commands
from tests.fixtures.wait import eventually_sync

# a service that takes 3 s to stop after SIGTERM (and says when its trap is set)
_SLOW_TO_STOP = "trap 'sleep 3; exit 0' TERM; echo ready; while :; do sleep 0.1; done"


def test_up_waits_for_the_pools_past_their_drain_and_kills_other_slow_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert up._stop_wait_s("pools") > DRAIN_GRACE_S
    # the name `up` stops with that wait is the one it starts the pools process under
    assert "pools" in [c.name for c in default_pool_commands(tmp_path / "cloud", "nats://x:1")]
    monkeypatch.setattr(up, "_STOP_WAIT_S", 0.5)
    app = up.Appliance(tmp_path, "site-1", 0, False, tmp_path / "cloud")
    # both in one stop stage, waited for in this order: the router's wait runs out first
    router = app._spawn_argv("router", ["sh", "-c", _SLOW_TO_STOP])
    pools = app._spawn_argv("pools", ["sh", "-c", _SLOW_TO_STOP])
    eventually_sync(
        lambda: all("ready" in c.log.read_text() for c in (pools, router)),
        timeout=60,
        what="both children's SIGTERM traps set",
    )
    app.stop()
    assert router.proc.returncode == -signal.SIGKILL  # past `up`'s wait: killed
    assert pools.proc.returncode == 0  # stopped on its own, within the pools' wait
