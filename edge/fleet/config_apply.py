"""Turning an effective remote config (a merged `SiteConfig` mapping) into what the agent
applies: a router policy, a residency policy, a heartbeat period and a desired bundle.

Everything is validated before anything changes; any problem raises `ConfigError` naming
the key. An absent ``router`` or ``residency`` means "the site's own (start-up) policy", so
removing an override from the KV bucket reverts the site to its local configuration.

``thresholds`` maps an intent to its out-of-scope threshold (it wins over the router
table's per-intent ``threshold``); the key ``"*"`` sets every intent of the bundle first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from aivos.edge.router import IntentRule, RouterPolicy
from aivos.shared.config import decode_config
from aivos.shared.errors import ConfigError
from aivos.shared.fleet import SiteConfig, validate_bundle_version
from aivos.shared.residency import ResidencyPolicy

__all__ = ["ResolvedConfig", "resolve_config", "MIN_HEARTBEAT_S", "MAX_HEARTBEAT_S"]

MIN_HEARTBEAT_S = 0.05
MAX_HEARTBEAT_S = 3600.0


class ResolvedConfig(msgspec.Struct, frozen=True):
    version: int
    router: RouterPolicy
    residency: ResidencyPolicy
    heartbeat_interval_s: float | None  # None: not set remotely, keep the local period
    bundle_version: str | None  # None: keep what runs
    raw: dict[str, Any]


def resolve_config(
    merged: Mapping[str, Any],
    *,
    labels: list[str],
    oos_label: str,
    base_router: RouterPolicy,
    base_residency: ResidencyPolicy,
) -> ResolvedConfig:
    try:
        cfg = msgspec.convert(dict(merged), SiteConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError("config", str(exc)) from exc
    router = decode_config(cfg.router, RouterPolicy, "router") if cfg.router else base_router
    router = _with_thresholds(router, cfg.thresholds, labels, oos_label)
    router.validate_against(labels)
    residency = (
        ResidencyPolicy.from_mapping(cfg.residency, "residency")
        if cfg.residency
        else base_residency
    )
    interval: float | None = None
    if "heartbeat_interval_s" in merged:
        interval = float(cfg.heartbeat_interval_s)
        if not MIN_HEARTBEAT_S <= interval <= MAX_HEARTBEAT_S:
            raise ConfigError(
                "heartbeat_interval_s", f"must be within [{MIN_HEARTBEAT_S}, {MAX_HEARTBEAT_S}]"
            )
    bundle = validate_bundle_version(cfg.bundle_version) if cfg.bundle_version else None
    return ResolvedConfig(cfg.version, router, residency, interval, bundle, dict(merged))


def _with_thresholds(
    router: RouterPolicy, thresholds: dict[str, float], labels: list[str], oos_label: str
) -> RouterPolicy:
    if not thresholds:
        return router
    for name, value in thresholds.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"thresholds.{name}", "must be within [0, 1]")
        if name != "*" and name not in labels:
            raise ConfigError(f"thresholds.{name}", "unknown intent for this model bundle")
    intents = dict(router.intents)
    ordered = sorted(thresholds.items(), key=lambda kv: kv[0] != "*")  # "*" first
    for name, value in ordered:
        targets = [lb for lb in labels if lb != oos_label] if name == "*" else [name]
        for target in targets:
            rule = intents.get(target, IntentRule())
            intents[target] = msgspec.structs.replace(rule, threshold=float(value))
    return msgspec.structs.replace(router, intents=intents)
