"""`aivos models publish`: the object store holds every bundle file and a valid signature;
a downloaded bundle verifies, and tampering (a file, the manifest, a foreign key) is caught."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aivos.shared.errors import BundleTampered
from aivos.shared.fleet import (
    SIGNATURE_NAME,
    bundle_object_name,
    generate_signing_key,
    load_public_key,
    verify_bundle_signature,
)
from aivos.shared.natsconf.connect import connect_nats
from aivos.shared.natsconf.server import NatsServer
from aivos.shared.subjects import HUB_DOMAIN, MODELS_BUCKET
from tests.unit.test_fleet_schema import fake_bundle

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _aivos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from aivos.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_publish_uploads_signed_bundle_and_tampering_is_detected(
    tmp_path: Path, nats_hub: NatsServer
) -> None:
    priv, pub = generate_signing_key(tmp_path / "keys")
    bundle = fake_bundle(tmp_path / "bundle", version="pub-1")
    result = _aivos("models", "publish", str(bundle), "--nats", nats_hub.url, "--key", str(priv))
    assert result.returncode == 0, result.stderr
    assert "pub-1" in result.stdout
    assert (bundle / SIGNATURE_NAME).is_file()

    nc = await connect_nats(nats_hub.url, name="test-download")
    try:
        store = await nc.jetstream(domain=HUB_DOMAIN).object_store(MODELS_BUCKET)
        down = tmp_path / "down"
        down.mkdir()
        for name in ("model.onnx", "tokenizer.json", "manifest.json", SIGNATURE_NAME):
            with (down / name).open("wb") as fh:
                await store.get(bundle_object_name("pub-1", name), writeinto=fh)
    finally:
        await nc.close()

    trusted = [load_public_key(pub)]
    assert verify_bundle_signature(down, trusted).bundle_version == "pub-1"
    for name in ("model.onnx", "tokenizer.json", "manifest.json", SIGNATURE_NAME):
        assert (down / name).read_bytes() == (bundle / name).read_bytes()

    # a foreign key's signature is refused
    _, other_pub = generate_signing_key(tmp_path / "other")
    with pytest.raises(BundleTampered):
        verify_bundle_signature(down, [load_public_key(other_pub)])

    # a flipped byte in the model
    tampered = tmp_path / "tampered-model"
    shutil.copytree(down, tampered)
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[100] ^= 0xFF
    (tampered / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleTampered, match="sha256"):
        verify_bundle_signature(tampered, trusted)

    # a manifest re-pointed at another model (hash updated, signature not)
    tampered = tmp_path / "tampered-manifest"
    shutil.copytree(down, tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    manifest["canary_min_accuracy"] = 0.0
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleTampered, match="signature"):
        verify_bundle_signature(tampered, trusted)


async def test_publish_without_a_key_fails_cleanly(tmp_path: Path, nats_hub: NatsServer) -> None:
    bundle = fake_bundle(tmp_path / "bundle", version="pub-2")
    result = _aivos(
        "models", "publish", str(bundle), "--nats", nats_hub.url, "--key", str(tmp_path / "nope")
    )
    assert result.returncode == 1
    assert "signing key" in result.stderr
