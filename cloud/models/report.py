"""Usage per model and quota state per site and intent, read from the routers' usage file:
what `aivos cloud models`, `aivos cloud costs` and the console's models page show.

Files live in the cloud data dir: ``model_usage.sqlite`` (written by the routers) and
``catalogue.toml`` (the catalogue `aivos up` serves; `cloud.models.up_pools`).
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from aivos.cloud.models.usage import (
    IntentRow,
    MinuteRow,
    UsageRow,
    read_intent_usage,
    read_minutes,
    read_usage,
    utc_day,
)
from aivos.cloud.worker.catalogue import Catalogue, load_catalogue
from aivos.shared.paths import default_cloud_dir

__all__ = [
    "ModelUsage",
    "QuotaState",
    "catalogue_path",
    "usage_path",
    "load_optional_catalogue",
    "models_report",
    "quota_states",
]


def usage_path(data_dir: Path | None) -> Path:
    return (data_dir or default_cloud_dir()) / "model_usage.sqlite"


def catalogue_path(data_dir: Path | None) -> Path:
    return (data_dir or default_cloud_dir()) / "catalogue.toml"


def load_optional_catalogue(data_dir: Path | None) -> Catalogue | None:
    """The data dir's catalogue, or None when there is none (a ConfigError if it is bad)."""
    path = catalogue_path(data_dir)
    return load_catalogue(path) if path.exists() else None


class ModelUsage(msgspec.Struct):
    """One model today (UTC): its answers, as primary and as fallback, tokens and cost."""

    name: str
    version: str = ""
    backend: str = ""
    classes: list[str] = []
    requests: int = 0
    fallback: int = 0
    share_primary: float | None = None  # None: no request yet
    share_fallback: float | None = None
    tokens: int = 0
    cost: float = 0.0
    p95_ms: float | None = None  # of the latest minute with answers
    minutes: list[MinuteRow] = []  # the last hour, for the chart


class QuotaState(msgspec.Struct):
    """One daily budget of a site (`intent` None) or of one intent of a site."""

    site: str
    intent: str | None
    what: str  # "requests" or "tokens"
    used: int
    limit: int
    exhausted: bool


def models_report(
    catalogue: Catalogue | None, path: Path, day: str | None = None, now: float | None = None
) -> list[ModelUsage]:
    """Every catalogue model (and any other model the file names), with today's usage."""
    rows = read_usage(path, day or utc_day())
    this_minute = int((time.time() if now is None else now) // 60)
    minutes = read_minutes(path, this_minute - 59)
    out: dict[str, ModelUsage] = {}
    if catalogue is not None:
        for name, entry in catalogue.models.items():
            classes = [
                c
                for c, cls in catalogue.classes.items()
                if name in (item.partition("@")[0] for item in cls.chain)
            ]
            out[name] = ModelUsage(name, entry.version, entry.backend, classes)
    for row in rows:
        m = out.setdefault(row.model, ModelUsage(row.model, row.version))
        m.requests += row.requests
        m.fallback += row.fallback
        m.tokens += row.tokens_in + row.tokens_out
        m.cost += row.cost
    for minute in minutes:
        if minute.model in out:
            out[minute.model].minutes.append(minute)
    for m in out.values():
        if m.requests:
            m.share_fallback = m.fallback / m.requests
            m.share_primary = 1.0 - m.share_fallback
        answered = [x for x in m.minutes if x.requests]
        if answered:
            m.p95_ms = answered[-1].p95_ms
    return list(out.values())


def quota_states(catalogue: Catalogue, path: Path, day: str | None = None) -> list[QuotaState]:
    """Each budget that applies today to a site with usage or a quota of its own."""
    day = day or utc_day()
    rows: list[UsageRow] = read_usage(path, day)
    intents: list[IntentRow] = read_intent_usage(path, day)
    sites: dict[str, list[int]] = {}
    for row in rows:
        used = sites.setdefault(row.site, [0, 0])
        used[0] += row.requests
        used[1] += row.tokens_in + row.tokens_out
    for site in catalogue.quotas:
        if site != "*":
            sites.setdefault(site, [0, 0])
    by_intent = {(r.site, r.intent): r.tokens_in + r.tokens_out for r in intents}
    out: list[QuotaState] = []
    for site in sorted(sites):
        requests, tokens = sites[site]
        quota = catalogue.quota(site)
        if quota.requests_per_day is not None:
            limit = quota.requests_per_day
            out.append(QuotaState(site, None, "requests", requests, limit, requests >= limit))
        if quota.tokens_per_day is not None:
            limit = quota.tokens_per_day
            out.append(QuotaState(site, None, "tokens", tokens, limit, tokens >= limit))
        for intent, limit in sorted(quota.intents.items()):
            used = by_intent.get((site, intent), 0)
            out.append(QuotaState(site, intent, "tokens", used, limit, used >= limit))
    return out
