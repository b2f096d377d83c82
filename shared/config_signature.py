"""Signed remote config: what the cloud writes under one key of the KV bucket ``aivos_config``.

    {"key": "<KV key>", "config": {<partial SiteConfig>},
     "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64>"}}

The signature is Ed25519, by the operator's config key (``DATA_DIR/keys/config_signing.key``,
made by `generate_signing_key(dir, CONFIG_KEY_NAME)`), over `signed_bytes`: a domain tag,
then the KV key and the config as canonical JSON (sorted keys, no whitespace, UTF-8).
Signing the KV key with the config stops a value signed for one site (or for the defaults)
from being replayed under another key. The config key is separate from the bundle key:
bundles are signed where they are built, config where the fleet is operated.

A site trusts the config keys ``config_signing*.pub`` in its trusted keys directory.
A plain (unsigned) partial `SiteConfig` object is still a valid KV value; whether a site
accepts one is the site's choice (`edge.fleet.options.FleetOptions.require_signed_config`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aivos.shared.errors import ConfigError
from aivos.shared.fleet import decode_partial_config, key_id, load_private_key, load_public_key

__all__ = [
    "CONFIG_KEY_NAME",
    "ConfigSignature",
    "SignedConfig",
    "ConfigSignatureError",
    "signed_bytes",
    "sign_config",
    "unwrap_config",
    "verify_config",
    "load_config_keys",
    "load_config_signing_key",
]

CONFIG_KEY_NAME = "config_signing"  # -> config_signing.key (private), config_signing.pub
_TAG = b"aivos-config-v1\n"
_ENVELOPE_FIELDS = {"key", "config", "signature"}


class ConfigSignature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    algorithm: Literal["ed25519"]
    key_id: str
    signature: str  # base64 of the 64-byte signature over `signed_bytes`


class SignedConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: str
    config: dict[str, Any]
    signature: ConfigSignature


class ConfigSignatureError(ConfigError):
    """A config value that is unsigned, signed by an untrusted key, or does not verify."""

    code = "config_signature"


_envelope = msgspec.json.Decoder(SignedConfig)


def signed_bytes(key: str, config: dict[str, Any]) -> bytes:
    body = {"key": key, "config": config}
    return (
        _TAG + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )


def sign_config(key: str, config: dict[str, Any], private_key: Ed25519PrivateKey) -> bytes:
    """The KV value for `key`: `config` wrapped with the signature."""
    signature = ConfigSignature(
        algorithm="ed25519",
        key_id=key_id(private_key.public_key()),
        signature=base64.b64encode(private_key.sign(signed_bytes(key, config))).decode(),
    )
    return msgspec.json.encode(SignedConfig(key=key, config=config, signature=signature))


def unwrap_config(value: bytes | None, key: str) -> tuple[dict[str, Any], SignedConfig | None]:
    """The partial config in a KV value, and its envelope when the value is signed (not
    verified: see `verify_config`). Empty/absent -> ``({}, None)``."""
    doc = decode_partial_config(value, key)
    if set(doc) != _ENVELOPE_FIELDS:
        return doc, None
    try:
        signed: SignedConfig = _envelope.decode(value or b"")
    except msgspec.DecodeError as exc:
        raise ConfigSignatureError(key, f"malformed signed config: {exc}") from exc
    return signed.config, signed


def verify_config(
    value: bytes | None, key: str, public_keys: Iterable[Ed25519PublicKey]
) -> dict[str, Any]:
    """The config in a signed KV value; raises `ConfigSignatureError` when the value is not
    signed, was signed for another key, by an untrusted key, or does not verify."""
    config, signed = unwrap_config(value, key)
    if signed is None:
        raise ConfigSignatureError(key, "config is not signed")
    if signed.key != key:
        raise ConfigSignatureError(key, f"config was signed for key {signed.key!r}")
    trusted = {key_id(k): k for k in public_keys}
    public = trusted.get(signed.signature.key_id)
    if public is None:
        raise ConfigSignatureError(key, f"signed by an untrusted key {signed.signature.key_id}")
    try:
        raw = base64.b64decode(signed.signature.signature, validate=True)
        public.verify(raw, signed_bytes(key, config))
    except (ValueError, InvalidSignature) as exc:
        raise ConfigSignatureError(key, "signature does not match the config") from exc
    return config


def load_config_keys(directory: Path) -> list[Ed25519PublicKey]:
    """The trusted config keys: every ``config_signing*.pub`` in `directory` (maybe none)."""
    return [load_public_key(p) for p in sorted(directory.glob(f"{CONFIG_KEY_NAME}*.pub"))]


def load_config_signing_key(data_dir: Path) -> Ed25519PrivateKey | None:
    """The operator's config key ``DATA_DIR/keys/config_signing.key``; None when absent."""
    path = Path(data_dir) / "keys" / f"{CONFIG_KEY_NAME}.key"
    return load_private_key(path) if path.is_file() else None
