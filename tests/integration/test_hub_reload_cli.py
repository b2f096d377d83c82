"""`aivos nats reload --data-dir D`: the operator's reload of the fleet hub takes the locks
the fleet commands take around their own reload (``identities.lock``, then ``pki/``), so it
never lands between the writes of a users file or of a node's key and certificate.

A real secured hub (nats-server, `secure_hub_config`) and the real CLI in a process of its
own. A reload is seen in the hub's ``/varz`` (``config_load_time`` moves). No timing: the
test holds a lock itself, as an enrolment or a certificate rotation in progress would,
reads the command's "waiting for ..." line as the sign that it is blocked, checks that
the hub did not reload, then releases the lock."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from aivos.cloud.fleet.enroll import secure_hub_config
from aivos.shared.natsconf import NatsServer, free_port
from tests.fixtures.locks import held, start_aivos
from tests.fixtures.wait import eventually_sync


def start_hub(data_dir: Path) -> NatsServer:
    conf = secure_hub_config(
        data_dir, port=free_port(), leaf_port=free_port(), monitor_port=free_port()
    )
    return NatsServer(conf, data_dir / "nats").start()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, NatsServer]]:
    data_dir = tmp_path_factory.mktemp("reload") / "cloud"
    server = start_hub(data_dir)
    try:
        yield data_dir, server
    finally:
        server.stop()


def loaded_at(server: NatsServer) -> str:
    """When the hub last (re)loaded its config, as its ``/varz`` says."""
    url = f"http://{server.conf.host}:{server.conf.monitor_port}/varz"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(json.loads(resp.read())["config_load_time"])


def reload_cmd(data_dir: Path) -> subprocess.Popen[str]:
    return start_aivos("nats", "reload", "--data-dir", str(data_dir))


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=120)
    except BaseException:
        proc.kill()
        raise


def reloaded_since(server: NatsServer, before: str) -> str:
    def moved() -> str | None:
        now = loaded_at(server)
        return now if now != before else None

    return eventually_sync(moved, timeout=30, what="the hub's config_load_time to move (a reload)")


def test_reload_signals_the_running_hub_and_it_reloads(hub: tuple[Path, NatsServer]) -> None:
    data_dir, server = hub
    before = loaded_at(server)
    out, err = finish(reload_cmd(data_dir))
    assert (out, err) == (
        f"reloaded the hub under {data_dir}: SIGHUP sent to pid {server.pid}\n",
        "",
    )
    reloaded_since(server, before)
    assert server.running  # reloaded, not restarted


@pytest.mark.parametrize("lock", ["pki", "nats/identities.lock"])
def test_reload_waits_while_a_writer_holds_a_lock_and_signals_after_release(
    hub: tuple[Path, NatsServer], lock: str
) -> None:
    """``pki/`` is held by `aivos nats rotate-cert` from the key write to the certificate
    write; ``identities.lock`` by `aivos fleet enroll/rotate/revoke` while they rewrite
    users.conf. A hand-sent SIGHUP in that window reloads half a change."""
    data_dir, server = hub
    path = data_dir / lock
    before = loaded_at(server)
    with held(path):
        proc = reload_cmd(data_dir)
        try:
            assert proc.stderr is not None
            said = any(f"waiting for {path}" in line for line in proc.stderr)
            assert said, f"`aivos nats reload` did not wait for {path}: {finish(proc)}"
            # blocked in the lock: nothing was signalled yet
            assert proc.poll() is None
            assert loaded_at(server) == before
        except BaseException:
            proc.kill()
            raise
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert out == f"reloaded the hub under {data_dir}: SIGHUP sent to pid {server.pid}\n"
    reloaded_since(server, before)


@pytest.mark.parametrize("state", ["never started", "stopped"])
def test_reload_without_a_running_hub_fails_and_says_so(tmp_path: Path, state: str) -> None:
    data_dir = tmp_path / "cloud"
    if state == "stopped":
        start_hub(data_dir).stop()
    else:
        secure_hub_config(data_dir)
    proc = reload_cmd(data_dir)
    out, err = finish(proc)
    assert proc.returncode == 1
    assert out == ""
    assert f"no hub node is running under {data_dir}" in err
    assert "nothing was reloaded" in err and "Start the hub" in err
