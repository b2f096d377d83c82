"""Usage per model and quota state per site and intent, read from the routers' usage file:
what `aivos cloud models`, `aivos cloud costs` and the console's models page show.

Files live in the cloud data dir: ``model_usage.sqlite`` (written by the routers) and
``catalogue.toml`` (the bootstrap catalogue `aivos up` serves; `cloud.models.up_pools`).

The catalogue they show is the one the fleet runs (`fleet_catalogue`): the pushed one
(KV bucket ``aivos_catalogue``, `cloud.models.catalogue_store`) with its version when
there is one, else the file; `ShownCatalogue.describe` says which, and why the file when
a hub was asked but could not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aivos.cloud.models.catalogue_store import read_pushed
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
from aivos.cloud.worker.stats import WorkerStats, decode_stats
from aivos.shared.errors import ConfigError
from aivos.shared.paths import default_cloud_dir
from aivos.shared.subjects import POOL_STATS

__all__ = [
    "PoolState",
    "pool_states",
    "ShownCatalogue",
    "fleet_catalogue",
    "ModelUsage",
    "QuotaState",
    "catalogue_path",
    "usage_path",
    "models_report",
    "quota_states",
]


def usage_path(data_dir: Path | None) -> Path:
    return (data_dir or default_cloud_dir()) / "model_usage.sqlite"


def catalogue_path(data_dir: Path | None) -> Path:
    return (data_dir or default_cloud_dir()) / "catalogue.toml"


class ShownCatalogue(msgspec.Struct):
    """The catalogue a report shows, and where it comes from."""

    catalogue: Catalogue | None
    source: str  # "pushed", "file" or "none"
    version: int | None = None  # the pushed version
    path: str | None = None  # the file
    note: str = ""  # why not the pushed one, when a hub was asked

    def describe(self) -> str:
        if self.source == "pushed":
            return f"pushed catalogue v{self.version} (KV aivos_catalogue)"
        what = f"catalogue file {self.path}" if self.source == "file" else "no catalogue"
        return f"{what} ({self.note})" if self.note else what

    def summary(self) -> dict[str, object]:
        """The JSON reports' ``catalogue`` object."""
        return {
            "source": self.source,
            "version": self.version,
            "path": self.path,
            "note": self.note,
        }


async def fleet_catalogue(
    nc: NATS | None, file: Path | None, *, no_hub: str = "no hub asked", timeout_s: float = 5.0
) -> ShownCatalogue:
    """The pushed catalogue when `nc` can read one, else `file` (when it exists); `no_hub`
    is the note when `nc` is None. A bad file raises ConfigError."""
    note = no_hub
    if nc is not None:
        try:
            pushed = await asyncio.wait_for(read_pushed(nc), timeout_s)
        except ConfigError as exc:
            note = f"the pushed catalogue does not validate: {exc}"
        except Exception as exc:  # timeout, no permission, link down
            note = f"hub did not answer: {type(exc).__name__} {exc}".strip()
        else:
            if pushed is not None:
                return ShownCatalogue(pushed[1], "pushed", version=pushed[0])
            note = "nothing pushed"
    if file is not None and file.exists():
        return ShownCatalogue(
            await asyncio.to_thread(load_catalogue, file), "file", path=str(file), note=note
        )
    return ShownCatalogue(None, "none", path=str(file) if file else None, note=note)


class PoolState(msgspec.Struct):
    """A model's workers as their stats messages (``aivos.poolstats``) say right now."""

    workers: int = 0  # reporting and not draining
    in_flight: int = 0
    waiting: int = 0  # the queue depth: accepted, waiting for a generation slot


async def pool_states(nc: NATS, listen_s: float = 1.2) -> dict[str, PoolState]:
    """Per model, the workers heard from within `listen_s` (they report every 0.5 s in a
    pool, every 1 s alone); a model none reported is absent."""
    latest: dict[str, WorkerStats] = {}

    async def on_stats(msg: Msg) -> None:
        with contextlib.suppress(Exception):
            stats = decode_stats(msg.data)
            latest[stats.worker] = stats

    sub = await nc.subscribe(POOL_STATS, cb=on_stats)
    try:
        await asyncio.sleep(listen_s)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    out: dict[str, PoolState] = {}
    for stats in latest.values():
        if stats.stopping:
            continue
        state = out.setdefault(stats.model, PoolState())
        state.workers += 1
        state.in_flight += stats.in_flight
        state.waiting += stats.waiting
    return out


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
            spent = by_intent.get((site, intent), 0)
            out.append(QuotaState(site, intent, "tokens", spent, limit, spent >= limit))
    return out
