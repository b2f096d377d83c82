"""The catalogue as pushed config, over a real nats-server (JetStream KV): a router started
from its file picks up a pushed catalogue (new pinned version, new fallback order, a new
model) without a restart; a catalogue that does not validate is refused by `aivos cloud
models push` with the key at fault and nothing changes; a bad value written around the
command is skipped by the watch and the last good catalogue stays."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from aivos.cloud.models.catalogue_store import (
    CATALOGUE_BUCKET,
    CATALOGUE_KEY,
    CatalogueStore,
    CatalogueWatch,
)
from aivos.cloud.models.report import catalogue_path, usage_path
from aivos.cloud.models.router import ModelRouter
from aivos.cloud.models.usage import UsageLedger
from aivos.cloud.worker.catalogue import Catalogue, parse_catalogue
from aivos.cloud.worker.cli import catalogue_worker
from aivos.edge.uplink.generation import generate
from aivos.shared.messages import GenerateRequest
from aivos.shared.natsconf import NatsServer
from aivos.shared.subjects import GEN_ALL_CLASSES, HUB_DOMAIN
from tests.fixtures.nats import ScriptedBackend
from tests.fixtures.wait import eventually

V1 = """
[models.primary]
backend = "llamacpp"
version = "p-2"

[models.backup]
backend = "llamacpp"
version = "b-1"

[classes.small]
chain = ["primary@p-2", "backup"]
"""

# the primary's version bumped and re-pinned, the order swapped, a third model added
V2 = """
[models.primary]
backend = "llamacpp"
version = "p-3"
cost_per_1k_tokens = 2.0

[models.backup]
backend = "llamacpp"
version = "b-1"

[models.spare]
backend = "llamacpp"
version = "s-1"

[classes.small]
chain = ["backup", "primary@p-3", "spare"]

[quotas.b1]
requests_per_day = 1000
"""

# pins a version the catalogue does not have
BAD = V2.replace('"primary@p-3"', '"primary@p-9"')


def _req(rid: str) -> GenerateRequest:
    return GenerateRequest(request_id=rid, site="b1", prompt="one two", model_class="small")


@contextlib.asynccontextmanager
async def _workers(url: str, cat: Catalogue, *models: str) -> AsyncIterator[None]:
    nc = await nats.connect(url)
    workers = [
        catalogue_worker(cat, m, name=m, backend=ScriptedBackend([m]), stats_interval_s=None)
        for m in models
    ]
    try:
        for worker in workers:
            await worker.start(nc)
        yield
    finally:
        for worker in workers:
            await worker.drain(grace_s=2)
        await nc.close()


@contextlib.asynccontextmanager
async def _watched_router(
    url: str, cat: Catalogue
) -> AsyncIterator[tuple[ModelRouter, CatalogueWatch]]:
    nc = await nats.connect(url)
    router = ModelRouter(cat, ledger=UsageLedger(cat), accept_timeout_s=1.0)
    watch = CatalogueWatch(router.apply_catalogue, retry_s=0.2)
    await router.start(nc)
    watch.start(nc)
    try:
        yield router, watch
    finally:
        await watch.stop()
        await router.drain(grace_s=2)
        await nc.close()


def _push_cli(url: str, path: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "aivos", "cloud", "models", "push", "--nats", url]
    return subprocess.run(
        [*argv, "--catalogue", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_pushed_catalogue_reroutes_a_running_router(
    nats_hub_factory: Callable[[], NatsServer], tmp_path: Path
) -> None:
    hub = nats_hub_factory()
    v1, v2 = parse_catalogue(V1), parse_catalogue(V2)
    async with (
        _workers(hub.url, v2, "primary", "backup", "spare"),
        _watched_router(hub.url, v1) as (router, watch),
    ):
        edge = await nats.connect(hub.url)
        try:
            before = await generate(edge, _req("r1"), timeout_s=10)
            assert (before.model, before.fallback) == ("primary", False)
            assert router.subjects == (GEN_ALL_CLASSES,)

            (tmp_path / "v2.toml").write_text(V2)
            pushed = await asyncio.to_thread(_push_cli, hub.url, tmp_path / "v2.toml")
            assert pushed.returncode == 0, pushed.stderr
            assert json.loads(pushed.stdout)["version"] == 1
            await eventually(lambda: router.catalogue_version == 1, timeout=30)

            after = await generate(edge, _req("r2"), timeout_s=10)
        finally:
            await edge.close()
    # the new order: backup is the class's primary now, and the pin moved with the version
    assert (after.model, after.fallback, after.text) == ("backup", False, "backup")
    chain = router._chains["small"]
    assert [(link.model, link.entry.version) for link in chain] == [
        ("backup", "b-1"),
        ("primary", "p-3"),
        ("spare", "s-1"),
    ]
    assert "spare" in router.breakers  # a new model gets its breaker
    assert router.ledger.catalogue.models["primary"].cost_per_1k_tokens == 2.0
    assert len(router.subjects) == 2  # quotas: the default path now goes through routers
    assert watch.version == 1 and not watch.rejected


async def test_a_bad_catalogue_is_refused_and_the_old_one_stays(
    nats_hub_factory: Callable[[], NatsServer], tmp_path: Path
) -> None:
    hub = nats_hub_factory()
    v1 = parse_catalogue(V1)
    (tmp_path / "v1.toml").write_text(V1)
    (tmp_path / "bad.toml").write_text(BAD)
    async with _watched_router(hub.url, v1) as (router, watch):
        first = await asyncio.to_thread(_push_cli, hub.url, tmp_path / "v1.toml")
        assert first.returncode == 0, first.stderr
        await eventually(lambda: router.catalogue_version == 1, timeout=30)

        refused = await asyncio.to_thread(_push_cli, hub.url, tmp_path / "bad.toml")
        assert refused.returncode != 0
        assert "catalogue refused, nothing stored" in refused.stderr
        assert "classes.small.chain[1]" in refused.stderr  # the key at fault
        assert "primary@p-9" in refused.stderr

        nc = await nats.connect(hub.url)
        try:
            store = await CatalogueStore.open(nc.jetstream(domain=HUB_DOMAIN), create=False)
            current = await store.current()
            assert current is not None and current[1] == 1  # still the good one
            # written around the command (no validation): the watch skips it
            kv = await nc.jetstream(domain=HUB_DOMAIN).key_value(CATALOGUE_BUCKET)
            await kv.put(CATALOGUE_KEY, json.dumps({"version": 2, "toml": BAD}).encode())
            await eventually(lambda: bool(watch.rejected), timeout=30)
            with pytest.raises(Exception, match="primary@p-9"):
                await store.push(BAD, "bad.toml")  # the API refuses it too
        finally:
            await nc.close()
    assert router.catalogue_version == 1
    assert [link.model for link in router._chains["small"]] == ["primary", "backup"]
    assert "primary@p-9" in watch.rejected[0]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aivos", "cloud", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "160"},
    )


async def test_models_and_costs_show_the_pushed_catalogue_with_its_version(
    nats_hub_factory: Callable[[], NatsServer], tmp_path: Path
) -> None:
    """What the fleet runs, not the file: the pushed catalogue and its version once there is
    one, the data dir's file before (or without --nats), each saying which it shows."""
    hub = nats_hub_factory()
    data = tmp_path / "cloud"
    data.mkdir()
    catalogue_path(data).write_text(V1)  # the bootstrap file: no spare, no quotas
    ledger = UsageLedger(parse_catalogue(V2), usage_path(data))
    ledger.record("b1", "spare", "s-1", 10, 30, fallback=True, latency_ms=12.0)
    ledger.close()
    common = ("--data-dir", str(data), "--json")

    def models(*extra: str) -> dict[str, Any]:
        out = _cli("models", *extra, *common)
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    before = await asyncio.to_thread(models, "--nats", hub.url)
    assert before["catalogue"]["source"] == "file" and before["catalogue"]["version"] is None
    assert before["catalogue"]["note"] == "nothing pushed"
    assert [m["name"] for m in before["models"]] == ["primary", "backup"]

    (tmp_path / "v2.toml").write_text(V2)
    pushed = await asyncio.to_thread(_push_cli, hub.url, tmp_path / "v2.toml")
    assert pushed.returncode == 0, pushed.stderr

    # a worker of spare reporting its stats: the listing counts it
    nc = await nats.connect(hub.url)
    worker = catalogue_worker(
        parse_catalogue(V2), "spare", backend=ScriptedBackend(["x"]), stats_interval_s=0.2
    )
    await worker.start(nc)
    try:
        after = await asyncio.to_thread(models, "--nats", hub.url)
    finally:
        await worker.drain(grace_s=2)
        await nc.close()
    assert (after["catalogue"]["source"], after["catalogue"]["version"]) == ("pushed", 1)
    by_name = {m["name"]: m for m in after["models"]}
    assert (by_name["spare"]["workers"], by_name["spare"]["queue_depth"]) == (1, 0)
    assert (by_name["primary"]["workers"], by_name["primary"]["queue_depth"]) == (0, 0)
    assert list(by_name) == ["primary", "backup", "spare"]
    assert by_name["primary"]["version"] == "p-3"
    assert by_name["spare"]["requests_today"] == 1 and by_name["spare"]["share_fallback"] == 1.0
    assert by_name["spare"]["p95_ms"] == 12.0

    table = await asyncio.to_thread(_cli, "models", "--nats", hub.url, "--data-dir", str(data))
    assert table.returncode == 0, table.stderr
    assert "pushed catalogue v1" in table.stdout
    spare = next(line for line in table.stdout.splitlines() if "spare" in line)
    assert "s-1" in spare and "100%" in spare and "12" in spare

    costs = await asyncio.to_thread(_cli, "costs", "--nats", hub.url, *common)
    assert costs.returncode == 0, costs.stderr
    report = json.loads(costs.stdout)
    assert report["catalogue"]["source"] == "pushed"
    # the budgets are the pushed catalogue's (the file has none)
    assert [(q["site"], q["what"], q["limit"]) for q in report["quotas"]] == [
        ("b1", "requests", 1000)
    ]

    offline = await asyncio.to_thread(models)  # no --nats: the file, and why
    assert offline["models"][0]["workers"] is None  # nothing asked of the workers
    assert offline["catalogue"] == {
        "source": "file",
        "version": None,
        "path": str(catalogue_path(data)),
        "note": "no --nats given",
    }
