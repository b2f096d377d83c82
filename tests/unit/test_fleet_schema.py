"""Fleet wire schemas, config merge, bundle signatures, registry state rule (no NATS)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import msgspec
import pytest

from aivos.cloud.fleet.registry import STALE_FACTOR, SqliteRegistry, site_state
from aivos.cloud.fleet.rollout import plan_waves
from aivos.cloud.fleet.tokens import hash_password, verify_password
from aivos.shared.bundle import GoldenQuery, Manifest, TrainingSummary, write_manifest
from aivos.shared.errors import BundleTampered, ConfigError, DataError
from aivos.shared.fleet import (
    SIGNATURE_NAME,
    canonical_manifest_bytes,
    decode_heartbeat,
    effective_config,
    encode,
    generate_signing_key,
    load_private_key,
    load_public_key,
    merge_config,
    sign_bundle,
    verify_bundle_signature,
)
from tests.fixtures.fleet import heartbeat


def fake_bundle(root: Path, version: str = "v-test") -> Path:
    """A structurally valid bundle with random model bytes (enough for signing/publishing)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(bytes(range(256)) * 64 + version.encode())
    (root / "tokenizer.json").write_text(json.dumps({"version": version}))
    files = {
        n: hashlib.sha256((root / n).read_bytes()).hexdigest()
        for n in ("model.onnx", "tokenizer.json")
    }
    manifest = Manifest(
        format_version=1,
        bundle_version=version,
        labels=["balance", "oos"],
        threshold=0.5,
        embedding_model_id="test",
        embedding_dim=4,
        max_length=16,
        quantization="none",
        training=TrainingSummary("t", "v", 1, 1, 2, 1, False, 0.1),
        metrics={},
        files=files,
        created_at="2026-01-01T00:00:00Z",
        golden=[GoldenQuery("what is my balance", "balance")],
    )
    write_manifest(root, manifest)
    return root


_hb = heartbeat


def test_heartbeat_round_trip_and_unknown_fields_rejected() -> None:
    hb = _hb(bundle_status="canary_failed", bundle_message="low accuracy")
    assert decode_heartbeat(encode(hb)) == hb
    raw = msgspec.json.decode(encode(hb))
    raw["surprise"] = 1
    with pytest.raises(DataError):
        decode_heartbeat(msgspec.json.encode(raw))
    raw.pop("surprise")
    raw["site_id"] = "Bad.Site"
    with pytest.raises(ConfigError):
        decode_heartbeat(msgspec.json.encode(raw))


def test_merge_is_deep_and_site_wins() -> None:
    defaults = {"router": {"intents": {"a": "local", "b": "escalate"}}, "thresholds": {"x": 0.5}}
    site = {"router": {"intents": {"b": "refuse"}}, "bundle_version": "v2"}
    assert merge_config(defaults, site) == {
        "router": {"intents": {"a": "local", "b": "refuse"}},
        "thresholds": {"x": 0.5},
        "bundle_version": "v2",
    }
    cfg = effective_config(
        json.dumps({**defaults, "version": 7}).encode(), json.dumps({**site, "version": 4}).encode()
    )
    assert (
        cfg.version == 7 and cfg.bundle_version == "v2" and cfg.router["intents"]["b"] == "refuse"
    )
    assert effective_config(None, None).version == 0
    with pytest.raises(ConfigError):
        effective_config(None, b'{"colour": "red"}')


def test_signature_verifies_and_detects_tampering(tmp_path: Path) -> None:
    priv_path, pub_path = generate_signing_key(tmp_path / "keys")
    assert priv_path.stat().st_mode & 0o777 == 0o600
    bundle = fake_bundle(tmp_path / "b")
    sig = sign_bundle(bundle, load_private_key(priv_path))
    trusted = [load_public_key(pub_path)]
    assert verify_bundle_signature(bundle, trusted).bundle_version == "v-test"
    assert sig.bundle_version == "v-test"

    # re-formatting the manifest keeps the canonical bytes, so the signature still holds
    manifest = bundle / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()), indent=4))
    verify_bundle_signature(bundle, trusted)

    # another key is not trusted
    other_priv, other_pub = generate_signing_key(tmp_path / "other")
    with pytest.raises(BundleTampered, match="untrusted key"):
        verify_bundle_signature(bundle, [load_public_key(other_pub)])

    # a changed manifest breaks the signature
    doc = json.loads(manifest.read_text())
    doc["threshold"] = 0.1
    manifest.write_text(json.dumps(doc))
    with pytest.raises(BundleTampered, match="signature does not match"):
        verify_bundle_signature(bundle, trusted)
    manifest.write_bytes(canonical_manifest_bytes(json.dumps({**doc, "threshold": 0.5}).encode()))
    verify_bundle_signature(bundle, trusted)

    # a changed model file breaks its sha256
    (bundle / "model.onnx").write_bytes(b"evil")
    with pytest.raises(BundleTampered, match="sha256"):
        verify_bundle_signature(bundle, trusted)

    (bundle / SIGNATURE_NAME).unlink()
    with pytest.raises(BundleTampered, match="not signed"):
        verify_bundle_signature(bundle, trusted)


def test_state_rule_never_online_from_stale_data() -> None:
    now = 1000.0
    assert site_state(None, 10, now) == ("offline", None)
    assert site_state(now - STALE_FACTOR * 10, 10, now)[0] == "online"
    state, age = site_state(now - STALE_FACTOR * 10 - 0.1, 10, now)
    assert state == "offline" and age == pytest.approx(30.1)


def test_registry_history_is_bounded_and_sites_autoregister(tmp_path: Path) -> None:
    reg = SqliteRegistry.open(tmp_path)
    t0 = time.time() - 1000
    reg.ingest_heartbeats([(_hb(p99_ms=float(i)), t0 + i) for i in range(800)])
    history = reg.history("site-a")
    assert len(history) == 720
    assert history[-1].p99_ms == 799.0 and history[0].p99_ms == 80.0
    site = reg.site("site-a")
    assert site.registered_by == "auto" and site.state == "offline"
    assert reg.register_site("site-b") is True and reg.register_site("site-b") is False
    assert [s.site_id for s in reg.sites()] == ["site-a", "site-b"]
    reg.close()


def test_waves_and_passwords() -> None:
    assert plan_waves(["c", "a", "b", "d"], 25) == [["a"], ["b", "c", "d"]]
    assert plan_waves(["a"], 10) == [["a"]]
    with pytest.raises(ConfigError):
        plan_waves([], 10)
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong", stored)
