"""The cloud commands on PostgreSQL (`--db URL` / ``$AIVOS_CLOUD_DB``) against a real server:
the fleet CLI writes and reads the registry there (no SQLite file appears in the data dir),
and `aivos cloud console --db` serves that registry and records heartbeats into it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import pytest

from aivos.cloud.fleet.registry import PostgresRegistry
from aivos.cloud.fleet.sim import SimSite
from aivos.shared.natsconf import NatsServer, free_port
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.slow


def aivos(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from aivos.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_fleet_commands_use_the_database(tmp_path: Path, postgres_url: str) -> None:
    data = tmp_path / "cloud"
    done = aivos("fleet", "add", "pg-1", "--data-dir", str(data), "--db", postgres_url)
    assert done.returncode == 0, done.stderr
    # the environment variable names the same database
    env = {"AIVOS_CLOUD_DB": postgres_url}
    done = aivos("fleet", "add", "pg-2", "--data-dir", str(data), env=env)
    assert done.returncode == 0, done.stderr
    done = aivos("fleet", "sites", "--data-dir", str(data), "--db", postgres_url, "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(s["site_id"] for s in json.loads(done.stdout)) == ["pg-1", "pg-2"]

    done = aivos(
        *("rollout", "start", "--bundle", "v2", "--all", "--canary", "50%"),
        *("--data-dir", str(data), "--db", postgres_url),
    )
    assert done.returncode == 0, done.stderr
    rollout_id = done.stdout.strip().splitlines()[-1]
    done = aivos("rollout", "pause", rollout_id, "--data-dir", str(data), env=env)
    assert done.returncode == 0, done.stderr
    done = aivos("rollout", "list", "--json", "--data-dir", str(data), env=env)
    assert [(r["id"], r["state"]) for r in json.loads(done.stdout)] == [(rollout_id, "paused")]

    registry = PostgresRegistry.open(postgres_url)
    try:
        assert {s.site_id for s in registry.sites()} == {"pg-1", "pg-2"}
        assert registry.rollout(rollout_id).state == "paused"
        assert {a.action for a in registry.actions()} >= {"site.add", "rollout.pause"}
    finally:
        registry.close()
    assert not (data / "fleet.db").exists()
    # without --db (and no env) the SQLite file in the data dir is used, as before
    done = aivos("fleet", "sites", "--data-dir", str(data), "--json", env={"AIVOS_CLOUD_DB": ""})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert (data / "fleet.db").exists()


@pytest.mark.asyncio(loop_scope="session")
async def test_console_serves_the_postgres_registry(
    tmp_path: Path, nats_hub: NatsServer, postgres_url: str
) -> None:
    data = tmp_path / "cloud"
    done = aivos("fleet", "operator-token", "create", "--data-dir", str(data), "--db", postgres_url)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", "from aivos.cli import main; main()", "cloud", "console"),
            *("--nats", nats_hub.url, "--data-dir", str(data), "--db", postgres_url),
            *("--port", str(port)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "console.log").open("wb"),
    )
    nc = await nats.connect(nats_hub.url)
    site = SimSite(nc, "pg-console-1", interval_s=0.5)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    assert proc.poll() is None, (tmp_path / "console.log").read_text()
                    return False

            await eventually(up, timeout=60, what="console up")
            await site.start(watch_config=False)
            headers = {"Authorization": f"Bearer {token}"}

            async def listed() -> list[str]:
                resp = await client.get("/api/sites", headers=headers)
                assert resp.status_code == 200, resp.text
                return [row["site_id"] for row in resp.json()]

            assert await eventually(listed, timeout=30, what="heartbeat in the console") == [
                "pg-console-1"
            ]
        registry = PostgresRegistry.open(postgres_url)
        try:
            assert [s.site_id for s in registry.sites()] == ["pg-console-1"]
            assert registry.history("pg-console-1")
        finally:
            registry.close()
        assert not (data / "fleet.db").exists()
    finally:
        await site.stop()
        await nc.close()
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
        assert proc.wait(20) in (0, -signal.SIGTERM)
