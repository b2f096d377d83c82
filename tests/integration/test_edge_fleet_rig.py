"""Shared rig of the edge fleet integration tests (no tests here).

The cloud side is played with plain nats-py calls following `shared.fleet`'s contract:
config as partial `SiteConfig` JSON in KV ``aivos_config`` (keys ``_defaults``/``<site>``),
bundles as one object per file ``<version>/<name>`` in ``aivos_models``, signed with
`shared.fleet.sign_bundle`. The site is a real `Agent` (real bundle, SQLite, usearch)
connected to a real hub nats-server, with an `EdgeFleetClient`."""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NATSClient
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from aivos.edge.agent import Agent
from aivos.edge.fleet import EdgeFleetClient, FleetOptions, GuardOptions
from aivos.edge.settings import EdgeSettings
from aivos.shared.bundle import MANIFEST_NAME
from aivos.shared.fleet import (
    SIGNATURE_NAME,
    bundle_object_name,
    generate_signing_key,
    load_private_key,
    sign_bundle,
)
from aivos.shared.subjects import CONFIG_BUCKET, MODELS_BUCKET
from tests.fixtures.edge import make_edge_settings

__all__ = [
    "Cloud",
    "fast_options",
    "make_variant",
    "new_site",
    "running_site",
    "signing_key",
    "site_settings",
]

# Prompts and audit stay on site: the tests exercise fleet traffic only, and an
# escalation (no worker here) answers at once with a local fallback.
LOCAL_RESIDENCY = {
    "region": "default",
    "classes": {
        "escalation_prompt": "local-only",
        "audit": "local-only",
        "memory": "local-only",
        "telemetry": "allow",
    },
}


def new_site() -> str:
    return f"site-{uuid.uuid4().hex[:8]}"


def signing_key(tmp: Path) -> tuple[Ed25519PrivateKey, Path]:
    priv, pub = generate_signing_key(tmp / "keys")
    return load_private_key(priv), pub


def make_variant(
    src: Path,
    dest: Path,
    version: str,
    key: Ed25519PrivateKey | None,
    *,
    threshold: float | None = None,
    wrong_golden: bool = False,
) -> Path:
    """Copy bundle `src` to `dest` as `version` (optionally changed), then sign it."""
    shutil.copytree(src, dest)
    (dest / SIGNATURE_NAME).unlink(missing_ok=True)
    manifest = json.loads((dest / MANIFEST_NAME).read_bytes())
    manifest["bundle_version"] = version
    if threshold is not None:  # the served threshold: the out-of-scope score's, if any
        manifest["threshold"] = threshold
        if manifest.get("ood"):
            manifest["ood"]["threshold"] = threshold
    if wrong_golden:
        labels = [lb for lb in manifest["labels"] if lb != manifest.get("oos_label", "oos")]
        for g in manifest["golden"]:
            g["intent"] = labels[(labels.index(g["intent"]) + 1) % len(labels)]
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    if key is not None:
        sign_bundle(dest, key)
    return dest


class Cloud:
    """The cloud's view: a connection to the hub, the config KV and the model store."""

    def __init__(self, nc: NATSClient, kv: KeyValue, models: ObjectStore) -> None:
        self.nc = nc
        self.kv = kv
        self.models = models

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[Cloud]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=CONFIG_BUCKET, history=5)
        models = await js.create_object_store(MODELS_BUCKET)
        try:
            yield cls(nc, kv, models)
        finally:
            await nc.close()

    async def put_config(self, key: str, config: dict[str, Any]) -> None:
        await self.kv.put(key, json.dumps(config).encode())

    async def put_raw(self, key: str, value: bytes) -> None:
        await self.kv.put(key, value)

    async def publish(self, bundle: Path) -> str:
        manifest = json.loads((bundle / MANIFEST_NAME).read_bytes())
        version = str(manifest["bundle_version"])
        for name in (SIGNATURE_NAME, MANIFEST_NAME, *manifest["files"]):
            with (bundle / name).open("rb") as fh:
                await self.models.put(bundle_object_name(version, name), fh)
        return version


def fast_options(**guard: Any) -> FleetOptions:
    guard_opts = GuardOptions(**guard) if guard else GuardOptions(enabled=False)
    return FleetOptions(heartbeat_interval_s=0.2, retry_s=0.2, guard=guard_opts)


def site_settings(
    data_dir: Path,
    bundle: Path,
    site: str,
    url: str | None,
    *,
    trusted: Path | None = None,
    **overrides: Any,
) -> EdgeSettings:
    """Settings of a test site; `trusted` (a public key PEM) is installed as a trusted key."""
    if trusted is not None:
        keys = data_dir / "fleet" / "trusted_keys"
        keys.mkdir(parents=True, exist_ok=True)
        shutil.copy(trusted, keys / "cloud.pub")
    return make_edge_settings(
        data_dir,
        bundle,
        site_id=site,
        **{
            "uplink.nats_url": url,
            "residency": LOCAL_RESIDENCY,
            "fleet": msgspec.to_builtins(fast_options()),
            **overrides,
        },
    )


@contextlib.asynccontextmanager
async def running_site(
    data_dir: Path,
    bundle: Path,
    site: str,
    url: str | None,
    *,
    trusted: Path | None = None,
    options: FleetOptions | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[Agent, EdgeFleetClient]]:
    fleet = msgspec.to_builtins(options or fast_options())
    agent = Agent(
        site_settings(data_dir, bundle, site, url, trusted=trusted, fleet=fleet, **overrides)
    )
    await agent.start()
    if agent.fleet is None:  # offline site (no uplink URL): run the client by hand
        agent.fleet = EdgeFleetClient(agent, options or fast_options())
        await agent.fleet.start()
    try:
        yield agent, agent.fleet
    finally:
        await agent.stop()
