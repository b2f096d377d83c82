"""Fleet wire schemas shared by the edge agent and the cloud fleet tier.

What travels, and where
=======================

==========================  ======================================  ==========================
What                        Subject / KV key / object               Who publishes / consumes
==========================  ======================================  ==========================
heartbeat (`Heartbeat`)     ``aivos.hb.<site>``                     edge -> fleet registry
config report               ``aivos.cfg.<site>.report``             edge -> fleet registry
(`ConfigReport`)
bundle report               ``aivos.mdl.<site>.report``             edge -> fleet registry
(`BundleReport`)
desired config              KV ``aivos_config`` key ``_defaults``   console -> edge (watch)
                            and key ``<site>`` (partial JSON)
model bundles               object store ``aivos_models``,          ``models publish`` -> edge
                            objects ``<version>/<file name>``
==========================  ======================================  ==========================

Remote config: merge rule and versions
--------------------------------------
The KV bucket holds JSON objects that are *partial* `SiteConfig` documents: the fleet-wide
``_defaults`` key and one key per site. The edge watches both keys and computes its
effective config with `effective_config` = ``merge_config(defaults, site)``: a **deep merge
where the site wins** — for every key present in both, two objects are merged recursively,
any other value (including lists and ``null``) is replaced by the site's. The result is
decoded into `SiteConfig` (unknown keys are rejected).

Every put by the cloud stamps ``version`` with one more than the highest version present in
the bucket, so ``version`` of the effective config = ``max(defaults.version, site.version)``
strictly increases whenever either key changes. That number is what the edge reports in
`ConfigReport.version` and `Heartbeat.config_version_applied`.

Bundle signatures
-----------------
A published bundle carries ``signature.json`` (`BundleSignature`): an Ed25519 signature by
the cloud's signing key over the **canonical manifest bytes** — ``manifest.json`` parsed and
re-encoded as JSON with sorted keys, no whitespace, UTF-8 (`canonical_manifest_bytes`).
Because the manifest lists the sha256 of every file, one signature covers the whole bundle:
`verify_bundle_signature` checks the signature with one of the trusted public keys and then
every file's sha256 (`shared.bundle.load_bundle_manifest`). Keys are PEM files made by
``aivos fleet keygen --out DIR`` (`generate_signing_key`); the key id is the first 16 hex
digits of the sha256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aivos.shared.bundle import MANIFEST_NAME, Manifest, load_bundle_manifest
from aivos.shared.errors import BundleTampered, ConfigError, DataError
from aivos.shared.subjects import PREFIX, validate_site

__all__ = [
    "DEFAULTS_KEY",
    "SIGNATURE_NAME",
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "LinkState",
    "BundleStatus",
    "Decisions",
    "Heartbeat",
    "SiteConfig",
    "ConfigReport",
    "BundleReport",
    "BundleSignature",
    "config_report_subject",
    "config_report_all",
    "bundle_report_subject",
    "bundle_report_all",
    "bundle_object_name",
    "validate_bundle_version",
    "now_ms",
    "encode",
    "decode_heartbeat",
    "decode_config_report",
    "decode_bundle_report",
    "decode_partial_config",
    "merge_config",
    "effective_config",
    "canonical_manifest_bytes",
    "key_id",
    "generate_signing_key",
    "load_private_key",
    "load_public_key",
    "sign_bundle",
    "verify_bundle_signature",
]

DEFAULTS_KEY = "_defaults"
SIGNATURE_NAME = "signature.json"
PRIVATE_KEY_NAME = "bundle_signing.key"
PUBLIC_KEY_NAME = "bundle_signing.pub"

LinkState = Literal["up", "down", "connecting", "unknown"]
# "ok": the desired bundle is live and healthy; "pending": download/verify/canary in progress;
# "verify_failed": signature or sha256 mismatch; "canary_failed": golden queries below the
# bundle's minimum accuracy (old bundle kept); "rolled_back": swapped, then a live-health
# guard was breached and the previous bundle restored; "error": anything else (see message).
BundleStatus = Literal["ok", "pending", "verify_failed", "canary_failed", "rolled_back", "error"]


class Decisions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Router decisions counted over the heartbeat's stats window."""

    local: int = 0
    escalate: int = 0
    refuse: int = 0


class Heartbeat(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One site's health, published every ``heartbeat_interval_s`` on ``aivos.hb.<site>``."""

    site_id: str
    agent_version: str
    bundle_version: str
    provider: str
    link_state: str
    outbox_depth: int
    job_backlog: int
    request_rate: float
    decisions: Decisions
    p50_ms: float
    p99_ms: float
    cpu_percent: float
    mem_percent: float
    disk_percent: float
    config_version_applied: int = 0
    config_error: str | None = None
    sent_at_unix_ms: int = 0
    # rollout status of the *desired* bundle (`bundle_target`); see `BundleStatus`
    bundle_status: str = "ok"
    bundle_message: str = ""
    bundle_target: str | None = None
    error_rate: float = 0.0
    interval_s: float = 10.0
    # workflow runs waiting for an operator's approval, and how long (seconds, at
    # `sent_at_unix_ms`) the oldest of them has waited; 0 when none waits
    approvals_pending: int = 0
    approval_oldest_s: float = 0.0

    @property
    def escalation_rate(self) -> float:
        total = self.decisions.local + self.decisions.escalate + self.decisions.refuse
        return self.decisions.escalate / total if total else 0.0


class SiteConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A site's effective desired config (defaults deep-merged with the site's override).

    ``router`` is a router policy table and ``residency`` a residency policy table, both as
    plain dicts in the edge's TOML/JSON shape: the edge validates them (an invalid one is
    rejected and reported). ``thresholds`` overrides per-intent or global thresholds.
    ``bundle_version`` None means "keep what you run".
    """

    version: int = 0
    router: dict[str, Any] = {}
    thresholds: dict[str, float] = {}
    residency: dict[str, Any] = {}
    bundle_version: str | None = None
    heartbeat_interval_s: float = 10.0


class ConfigReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The edge's answer to a config change, on ``aivos.cfg.<site>.report``."""

    site: str
    version: int
    status: Literal["applied", "rejected"]
    error: str | None = None
    sent_at_unix_ms: int = 0


class BundleReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A bundle install event (pending, ok, canary_failed, ...) on ``aivos.mdl.<site>.report``."""

    site: str
    bundle_version: str
    status: str
    message: str = ""
    previous_version: str | None = None
    canary_accuracy: float | None = None
    sent_at_unix_ms: int = 0


class BundleSignature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Contents of ``signature.json`` in a published bundle."""

    algorithm: Literal["ed25519"]
    key_id: str
    bundle_version: str
    manifest_sha256: str
    signature: str  # base64 of the 64-byte Ed25519 signature over the canonical manifest


# ----- subjects and object names -------------------------------------------------------------


def config_report_subject(site: str) -> str:
    """Config reports of one site: ``aivos.cfg.<site>.report``."""
    return f"{PREFIX}.cfg.{validate_site(site)}.report"


def config_report_all() -> str:
    return f"{PREFIX}.cfg.*.report"


def bundle_report_subject(site: str) -> str:
    """Bundle install reports of one site: ``aivos.mdl.<site>.report``."""
    return f"{PREFIX}.mdl.{validate_site(site)}.report"


def bundle_report_all() -> str:
    return f"{PREFIX}.mdl.*.report"


def validate_bundle_version(version: str) -> str:
    if (
        not version
        or len(version) > 128
        or version.startswith(".")
        or any(c in version for c in "/\\ \t\n*>")
    ):
        raise ConfigError("bundle_version", f"invalid bundle version {version!r}")
    return version


def bundle_object_name(version: str, file_name: str) -> str:
    """Object name of one bundle file in ``aivos_models``: ``<version>/<file name>``.

    The edge fetches ``signature.json`` and ``manifest.json`` first, verifies them, then
    streams each listed file to disk and checks its sha256."""
    if Path(file_name).name != file_name:
        raise ConfigError("file_name", f"{file_name!r} is not a plain file name")
    return f"{validate_bundle_version(version)}/{file_name}"


# ----- encoding ------------------------------------------------------------------------------

_hb_decoder = msgspec.json.Decoder(Heartbeat)
_cfg_report_decoder = msgspec.json.Decoder(ConfigReport)
_bundle_report_decoder = msgspec.json.Decoder(BundleReport)
_sig_decoder = msgspec.json.Decoder(BundleSignature)
_config_decoder = msgspec.json.Decoder(SiteConfig)
_encoder = msgspec.json.Encoder()


def now_ms() -> int:
    return int(time.time() * 1000)


def encode(obj: msgspec.Struct) -> bytes:
    return _encoder.encode(obj)


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes, what: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise DataError(what, str(exc)) from exc


def decode_heartbeat(data: bytes) -> Heartbeat:
    hb: Heartbeat = _decode(_hb_decoder, data, "heartbeat")
    validate_site(hb.site_id)
    return hb


def decode_config_report(data: bytes) -> ConfigReport:
    report: ConfigReport = _decode(_cfg_report_decoder, data, "config report")
    validate_site(report.site)
    return report


def decode_bundle_report(data: bytes) -> BundleReport:
    report: BundleReport = _decode(_bundle_report_decoder, data, "bundle report")
    validate_site(report.site)
    return report


# ----- remote config -------------------------------------------------------------------------


def decode_partial_config(data: bytes | None, what: str = "config") -> dict[str, Any]:
    """A KV value (partial SiteConfig JSON object) as a dict; empty/absent -> {}."""
    if not data:
        return {}
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ConfigError(what, f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(what, "must be a JSON object")
    return value


def merge_config(defaults: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge, override wins: objects merge recursively, any other value is replaced."""
    merged: dict[str, Any] = dict(defaults)
    for key, value in override.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_config(base, value)
        else:
            merged[key] = value
    return merged


def effective_config(defaults: bytes | None, site: bytes | None) -> SiteConfig:
    """The effective `SiteConfig` from the raw ``_defaults`` and ``<site>`` KV values.

    ``version`` is the max of both versions. Raises ConfigError when the merge is invalid."""
    d = decode_partial_config(defaults, DEFAULTS_KEY)
    s = decode_partial_config(site, "site")
    merged = merge_config(d, s)
    merged["version"] = max(int(d.get("version", 0) or 0), int(s.get("version", 0) or 0))
    try:
        return _config_decoder.decode(json.dumps(merged).encode())
    except msgspec.DecodeError as exc:
        raise ConfigError("config", str(exc)) from exc


# ----- signing -------------------------------------------------------------------------------


def canonical_manifest_bytes(manifest_json: bytes) -> bytes:
    """``manifest.json`` re-encoded with sorted keys, no whitespace, UTF-8."""
    try:
        value = json.loads(manifest_json)
    except ValueError as exc:
        raise BundleTampered(MANIFEST_NAME, f"manifest is not valid JSON: {exc}") from exc
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def generate_signing_key(out_dir: str | Path, name: str | None = None) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair (PEM; private key mode 0600); return (private, public).

    `name` gives ``<name>.key``/``<name>.pub`` (default: the bundle key's names)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    if name is not None:
        priv_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    if priv_path.exists():
        raise ConfigError(str(priv_path), "a signing key already exists; refusing to overwrite")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv_path, pub_path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(str(path), f"cannot load the signing key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(str(path), "not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), f"cannot load the public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(str(path), "not an Ed25519 public key")
    return key


def sign_bundle(bundle_dir: str | Path, private_key: Ed25519PrivateKey) -> BundleSignature:
    """Verify the bundle's hashes, then write ``signature.json`` beside its manifest."""
    root = Path(bundle_dir)
    manifest = load_bundle_manifest(root)
    canonical = canonical_manifest_bytes((root / MANIFEST_NAME).read_bytes())
    signature = BundleSignature(
        algorithm="ed25519",
        key_id=key_id(private_key.public_key()),
        bundle_version=manifest.bundle_version,
        manifest_sha256=hashlib.sha256(canonical).hexdigest(),
        signature=base64.b64encode(private_key.sign(canonical)).decode(),
    )
    (root / SIGNATURE_NAME).write_bytes(msgspec.json.format(encode(signature)))
    return signature


def verify_bundle_signature(
    bundle_dir: str | Path, public_keys: Iterable[Ed25519PublicKey]
) -> Manifest:
    """Check ``signature.json`` against a trusted key, then every file's sha256.

    Returns the verified manifest; raises BundleTampered on any mismatch (unsigned bundle,
    unknown key, bad signature, version mismatch, changed file)."""
    root = Path(bundle_dir)
    sig_path, manifest_path = root / SIGNATURE_NAME, root / MANIFEST_NAME
    if not sig_path.is_file():
        raise BundleTampered(str(sig_path), "bundle is not signed")
    try:
        sig: BundleSignature = _sig_decoder.decode(sig_path.read_bytes())
        raw_sig = base64.b64decode(sig.signature, validate=True)
    except (msgspec.DecodeError, ValueError) as exc:
        raise BundleTampered(str(sig_path), f"invalid signature file: {exc}") from exc
    keys = {key_id(k): k for k in public_keys}
    key = keys.get(sig.key_id)
    if key is None:
        raise BundleTampered(str(sig_path), f"signed by an untrusted key {sig.key_id}")
    if not manifest_path.is_file():
        raise BundleTampered(str(manifest_path), "bundle has no manifest")
    canonical = canonical_manifest_bytes(manifest_path.read_bytes())
    try:
        key.verify(raw_sig, canonical)
    except InvalidSignature as exc:
        raise BundleTampered(str(manifest_path), "signature does not match the manifest") from exc
    manifest = load_bundle_manifest(root)
    if manifest.bundle_version != sig.bundle_version:
        raise BundleTampered(str(sig_path), "signature is for another bundle version")
    return manifest
