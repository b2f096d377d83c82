"""Rollout time: from setting a site's desired bundle version in KV to the site serving it.

Starts a real hub nats-server (JetStream, loopback), a real edge agent on the default
bundle with an `EdgeFleetClient`, publishes a signed copy of the default bundle under a
new version to the ``aivos_models`` object store, then for each round puts
``{"bundle_version": V}`` on the site's key and measures until `agent.model.version == V`.
The breakdown (download, verify, load, canary, swap) is the agent's own `InstallTimings`.
Rounds alternate between two new versions, so every round downloads (no local copy:
superseded bundle dirs are removed before the next round).

    python benchmarks/rollout_time.py [--bundle DIR] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import nats

from aivos.edge.agent import Agent
from aivos.edge.fleet import EdgeFleetClient, FleetOptions, GuardOptions
from aivos.edge.settings import load_edge_settings
from aivos.shared.bundle import MANIFEST_NAME
from aivos.shared.fleet import (
    SIGNATURE_NAME,
    bundle_object_name,
    generate_signing_key,
    load_private_key,
    sign_bundle,
)
from aivos.shared.natsconf import start_local_hub
from aivos.shared.paths import default_bundle_dir
from aivos.shared.subjects import CONFIG_BUCKET, MODELS_BUCKET


def _variant(src: Path, dest: Path, version: str, key_path: Path) -> Path:
    shutil.copytree(src, dest)
    (dest / SIGNATURE_NAME).unlink(missing_ok=True)
    manifest = json.loads((dest / MANIFEST_NAME).read_bytes())
    manifest["bundle_version"] = version
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    sign_bundle(dest, load_private_key(key_path))
    return dest


async def _main(bundle: Path, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    hub = start_local_hub(work)
    try:
        priv, pub = generate_signing_key(work / "keys")
        data = work / "edge"
        (data / "fleet" / "trusted_keys").mkdir(parents=True)
        shutil.copy(pub, data / "fleet" / "trusted_keys" / "cloud.pub")
        nc = await nats.connect(hub.url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=CONFIG_BUCKET)
        models = await js.create_object_store(MODELS_BUCKET)
        versions = []
        for tag in ("a", "b"):
            version = f"bench-{tag}-{uuid.uuid4().hex[:6]}"
            v = _variant(bundle, work / version, version, priv)
            manifest = json.loads((v / MANIFEST_NAME).read_bytes())
            for name in (SIGNATURE_NAME, MANIFEST_NAME, *manifest["files"]):
                with (v / name).open("rb") as fh:
                    await models.put(bundle_object_name(version, name), fh)
            versions.append(version)
        size = sum(p.stat().st_size for p in (work / versions[0]).iterdir())
        settings = load_edge_settings(
            None,
            **{
                "data_dir": str(data),
                "model.bundle": str(bundle),
                "uplink.nats_url": hub.url,
                "site_id": "bench",
            },
        )
        agent = Agent(settings)
        await agent.start()
        client = EdgeFleetClient(
            agent, FleetOptions(heartbeat_interval_s=10, guard=GuardOptions(enabled=False))
        )
        await client.start()
        await asyncio.wait_for(client.config.watching.wait(), 30)
        rows = []
        for i in range(rounds):
            version = versions[i % 2]
            stale = data / "bundles" / version
            shutil.rmtree(stale, ignore_errors=True)  # force a download every round
            t0 = time.perf_counter()
            await kv.put(
                "bench", json.dumps({"version": i + 1, "bundle_version": version}).encode()
            )
            while agent.model.version != version:
                await asyncio.sleep(0.002)
            wall = time.perf_counter() - t0
            t = client.bundles.last_install
            assert t is not None and t.version == version
            rows.append((wall, t))
            print(
                f"round {i + 1}: {wall * 1000:7.1f} ms  (download {t.download_s * 1000:.1f}, "
                f"verify {t.verify_s * 1000:.1f}, load {t.load_s * 1000:.1f}, "
                f"canary {t.canary_s * 1000:.1f}, swap {t.swap_s * 1000:.1f}; "
                f"{t.bytes / 2**20:.1f} MiB)"
            )
        walls = [w for w, _ in rows]
        med = statistics.median
        print(f"\nbundle {bundle} ({size / 2**20:.1f} MiB), {rounds} rounds, loopback hub")
        print(
            f"KV put -> serving: median {med(walls) * 1000:.1f} ms, max {max(walls) * 1000:.1f} ms"
        )
        for field in ("download_s", "verify_s", "load_s", "canary_s", "swap_s"):
            print(
                f"  {field[:-2]:9s} median {med(getattr(t, field) for _, t in rows) * 1000:8.1f} ms"
            )
        await client.stop()
        await agent.stop()
        await nc.close()
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=default_bundle_dir())
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(_main(args.bundle, args.rounds))


if __name__ == "__main__":
    main()
