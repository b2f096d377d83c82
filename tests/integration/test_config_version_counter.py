"""Config versions come from one counter key (compare-and-set), not from reading every
site's config on each put: concurrent puts never share a version, and a bucket written
before the counter existed continues from its highest stored version."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from aivos.cloud.fleet.config import VERSION_KEY, ConfigStore
from aivos.shared.natsconf import start_local_hub
from aivos.shared.subjects import config_key


@pytest.mark.asyncio
async def test_versions_are_unique_and_continue_an_old_bucket(tmp_path: Path) -> None:
    hub = start_local_hub(tmp_path / "hub")
    nc = await nats.connect(hub.url)
    try:
        store = await ConfigStore.open(nc.jetstream())
        # configs as a release before the counter wrote them: versions only in the values
        for site, version in (("a", 3), ("b", 7)):
            doc = {"version": version, "router": {"default": "refuse"}}
            await store.kv.put(config_key(site), json.dumps(doc).encode())
        assert await store.put("c", {"router": {"default": "refuse"}}) == 8
        # ten puts at once (console replicas, the rollout controller): ten versions
        versions = await asyncio.gather(
            *(store.put(f"s{i}", {"router": {"default": "refuse"}}) for i in range(10))
        )
        assert sorted(versions) == list(range(9, 19))
        assert int((await store.kv.get(VERSION_KEY)).value or b"0") == 18
        # and the counter is not mistaken for a config by the scan or the effective view
        assert (await store.effective("s0")).version == versions[0]
        # written around the counter (an older release): a put still goes past what counts
        doc = {"version": 50, "router": {"default": "refuse"}}
        await store.kv.put(config_key("s1"), json.dumps(doc).encode())
        assert await store.put("s1", {"router": {"default": "refuse"}}) == 51
        assert await store.put("s2", {"router": {"default": "refuse"}}) == 52
        await store.kv.put(config_key("s3"), json.dumps({**doc, "version": 90}).encode())
        assert await store.put(None, {"router": {"default": "refuse"}}) == 91
    finally:
        await nc.close()
        hub.stop()
