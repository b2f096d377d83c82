"""The operator CLI as docs/fleet.md uses it, against a real hub and a running fleet tier
(`aivos cloud fleet` as a process) with simulated sites: keygen, fleet add/sites, config set
(TOML, defaults and per site), operator-token create, rollout start/list/abort/rollback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aivos.cloud.fleet.registry import SqliteRegistry
from aivos.cloud.fleet.sim import SimSite
from aivos.shared.fleet import DEFAULTS_KEY
from aivos.shared.natsconf.connect import connect_nats
from aivos.shared.natsconf.server import NatsServer
from aivos.shared.subjects import CONFIG_BUCKET, HUB_DOMAIN
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


def aivos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from aivos.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def run(*args: str) -> subprocess.CompletedProcess[str]:
    """`aivos` in a thread: simulated sites share the event loop and must keep beating."""
    return await asyncio.to_thread(aivos, *args)


@pytest.fixture
def fleet_proc(tmp_path: Path, nats_hub: NatsServer) -> Iterator[Path]:
    data = tmp_path / "cloud"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from aivos.cli import main; main()",
            "cloud",
            "fleet",
            "--nats",
            nats_hub.url,
            "--data-dir",
            str(data),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "fleet.log").open("wb"),
    )
    try:
        yield data
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


async def test_operator_cli_end_to_end(
    fleet_proc: Path, nats_hub: NatsServer, tmp_path: Path
) -> None:
    data = str(fleet_proc)
    keys = tmp_path / "keys"
    assert aivos("fleet", "keygen", "--out", str(keys)).returncode == 0
    assert (keys / "bundle_signing.key").is_file() and (keys / "bundle_signing.pub").is_file()
    assert aivos("fleet", "keygen", "--out", str(keys)).returncode == 1  # never overwritten

    assert aivos("fleet", "add", "cli-b", "--data-dir", data).returncode == 0
    token = aivos("fleet", "operator-token", "create", "--data-dir", data)
    assert token.returncode == 0 and token.stdout.strip().splitlines()[-1].startswith("aop_")

    nc = await connect_nats(nats_hub.url, name="cli-sims")
    sites = [SimSite(nc, name, interval_s=0.3) for name in ("cli-a", "cli-b")]
    try:
        for s in sites:
            await s.start()

        async def listed() -> list[dict[str, Any]]:
            # in a thread: the simulated sites share this event loop and must keep beating
            out = await asyncio.to_thread(aivos, "fleet", "sites", "--data-dir", data, "--json")
            return json.loads(out.stdout) if out.returncode == 0 else []

        async def both_online() -> bool:
            return sum(r["state"] == "online" for r in await listed()) == 2

        await eventually(both_online)
        rows = {r["site_id"]: r for r in await listed()}
        assert rows["cli-b"]["registered_by"] == "operator"
        assert rows["cli-a"]["registered_by"] == "auto"

        # fleet defaults, then a per-site override (TOML files)
        defaults = tmp_path / "defaults.toml"
        defaults.write_text("heartbeat_interval_s = 0.25\n[thresholds]\nbilling = 0.6\n")
        override = tmp_path / "cli-a.toml"
        override.write_text("[thresholds]\nbilling = 0.8\n")
        out = await run(
            "fleet", "config", "set", str(defaults), "--nats", nats_hub.url, "--data-dir", data
        )
        assert out.returncode == 0, out.stderr
        out = await run(
            "fleet",
            "config",
            "set",
            str(override),
            "--site",
            "cli-a",
            "--nats",
            nats_hub.url,
            "--data-dir",
            data,
        )
        assert out.returncode == 0, out.stderr
        await eventually(
            lambda: sites[0].config is not None and sites[0].config.thresholds == {"billing": 0.8}
        )
        await eventually(
            lambda: sites[1].config is not None and sites[1].config.thresholds == {"billing": 0.6}
        )
        assert sites[1].interval_s == 0.25  # defaults apply where the site has no override
        bad = tmp_path / "bad.toml"
        bad.write_text("colour = 'red'\n")
        out = await run(
            "fleet", "config", "set", str(bad), "--nats", nats_hub.url, "--data-dir", data
        )
        assert out.returncode == 1 and "colour" in out.stderr

        # rollout to one site, then all; abort + rollback
        out = await run(
            "rollout",
            "start",
            "--bundle",
            "v9",
            "--sites",
            "cli-a",
            "--canary",
            "100%",
            "--soak",
            "0.2",
            "--data-dir",
            data,
        )
        assert out.returncode == 0, out.stderr
        first = out.stdout.strip().splitlines()[-1]

        async def state_of(rid: str) -> str:
            out = await asyncio.to_thread(aivos, "rollout", "list", "--data-dir", data, "--json")
            return str(next(r["state"] for r in json.loads(out.stdout) if r["id"] == rid))

        async def completed() -> bool:
            return await state_of(first) == "completed"

        await eventually(completed, timeout=30)
        assert sites[0].bundle_version == "v9" and sites[1].bundle_version == "v1"

        # then to all (cli-a, the canary of this one, already runs it)
        out = await run(
            "rollout",
            "start",
            "--bundle",
            "v9",
            "--all",
            "--canary",
            "50%",
            "--soak",
            "0.2",
            "--data-dir",
            data,
        )
        assert out.returncode == 0, out.stderr
        second = out.stdout.strip().splitlines()[-1]

        async def second_done() -> bool:
            return await state_of(second) == "completed"

        await eventually(second_done, timeout=30)
        assert [s.bundle_version for s in sites] == ["v9", "v9"]

        # a third one is aborted during its canary, then rolled back
        out = await run(
            "rollout",
            "start",
            "--bundle",
            "v10",
            "--all",
            "--canary",
            "50%",
            "--soak",
            "3600",
            "--data-dir",
            data,
        )
        assert out.returncode == 0, out.stderr
        third = out.stdout.strip().splitlines()[-1]
        await eventually(lambda: sites[0].bundle_version == "v10")
        assert (await run("rollout", "abort", third, "--data-dir", data)).returncode == 0
        assert await state_of(third) == "aborted"
        assert sites[1].bundle_version == "v9"  # wave 2 never started
        out = await run("rollout", "rollback", third, "--nats", nats_hub.url, "--data-dir", data)
        assert out.returncode == 0, out.stderr
        await eventually(lambda: sites[0].bundle_version == "v9")
        assert await state_of(third) == "rolled_back"
    finally:
        for s in sites:
            await s.stop()
        kv = await nc.jetstream(domain=HUB_DOMAIN).key_value(CONFIG_BUCKET)
        await kv.delete(DEFAULTS_KEY)  # other tests share this hub
        await nc.close()
        await asyncio.sleep(0)

    reg = SqliteRegistry.open(fleet_proc)
    actions = {a.action for a in reg.actions(limit=100)}
    reg.close()
    assert {
        "site.add",
        "config.set",
        "rollout.start",
        "rollout.abort",
        "rollout.rollback",
    } <= actions
