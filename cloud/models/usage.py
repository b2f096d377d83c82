"""Tokens, requests and cost per day, site and model, and the per-site daily quota.

The model router records every answered request here (`record`) and asks `check` before
routing one. Counts live in memory and are added to a SQLite table every `flush`
(``requests = requests + delta``), so several routers can share one file; after each
flush a router re-reads the day's per-site totals, so a quota is shared between routers
up to one flush interval. Token counts are the worker's generated chunks (out) and an
estimate of the prompt (in: characters / 4); cost = (in + out) / 1000 x the model's
``cost_per_1k_tokens``.
"""

from __future__ import annotations

import datetime
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from aivos.cloud.worker.catalogue import Catalogue
from aivos.shared.errors import QuotaExceeded
from aivos.shared.messages import GenerateRequest
from aivos.shared.sqlite import decode_rows, immediate, open_reader, open_writer

__all__ = [
    "UsageRow",
    "UsageLedger",
    "SiteQuotaExhausted",
    "estimate_prompt_tokens",
    "read_usage",
    "utc_day",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_usage (
    day TEXT NOT NULL,
    site TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    fallback INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (day, site, model, version)
)
"""
_ADD = """
INSERT INTO model_usage (day, site, model, version, requests, fallback, tokens_in,
                         tokens_out, cost)
VALUES (:day, :site, :model, :version, :requests, :fallback, :tokens_in, :tokens_out, :cost)
ON CONFLICT (day, site, model, version) DO UPDATE SET
    requests = requests + excluded.requests,
    fallback = fallback + excluded.fallback,
    tokens_in = tokens_in + excluded.tokens_in,
    tokens_out = tokens_out + excluded.tokens_out,
    cost = cost + excluded.cost
"""


class UsageRow(msgspec.Struct):
    day: str
    site: str
    model: str
    version: str
    requests: int = 0
    fallback: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0


class SiteQuotaExhausted(QuotaExceeded):
    """A site used up its daily quota (`what`: ``requests`` or ``tokens``)."""

    def __init__(self, site: str, what: str, used: int, limit: int) -> None:
        self.site, self.what, self.used, self.limit = site, what, used, limit
        super().__init__(f"site {site} used {used} of {limit} {what} today (UTC)")


def utc_day() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def estimate_prompt_tokens(request: GenerateRequest) -> int:
    chars = len(request.prompt) + len(request.system or "")
    chars += sum(len(p.text) for p in request.passages) + sum(len(m) for m in request.memory)
    return max(1, chars // 4)


class UsageLedger:
    """In-memory counters, flushed as deltas to `path` (None: memory only)."""

    def __init__(
        self,
        catalogue: Catalogue,
        path: Path | None = None,
        *,
        day: Callable[[], str] = utc_day,
    ) -> None:
        self.catalogue = catalogue
        self.path = path
        self._day = day
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str, str, str], UsageRow] = {}  # this process, all time
        self._pending: dict[tuple[str, str, str, str], UsageRow] = {}  # not flushed yet
        self._site_base: dict[tuple[str, str], tuple[int, int]] = {}  # others', from the file
        self._conn: sqlite3.Connection | None = None
        if path is not None:
            self._conn = open_writer(path, synchronous="NORMAL")
            self._conn.execute(_SCHEMA)
            self._reload_sites()

    def check(self, site: str) -> None:
        """Raise `SiteQuotaExhausted` when `site` has no quota left today."""
        quota = self.catalogue.quota(site)
        if quota.requests_per_day is None and quota.tokens_per_day is None:
            return
        requests, tokens = self.site_today(site)
        if quota.requests_per_day is not None and requests >= quota.requests_per_day:
            raise SiteQuotaExhausted(site, "requests", requests, quota.requests_per_day)
        if quota.tokens_per_day is not None and tokens >= quota.tokens_per_day:
            raise SiteQuotaExhausted(site, "tokens", tokens, quota.tokens_per_day)

    def site_today(self, site: str) -> tuple[int, int]:
        """(requests, tokens in + out) of `site` today, across models."""
        day = self._day()
        with self._lock:
            requests, tokens = self._site_base.get((day, site), (0, 0))
            # with a file, the base holds every flushed count; without, nothing is flushed
            unflushed = self._pending if self._conn is not None else self._totals
            for (d, s, _, _), row in unflushed.items():
                if d == day and s == site:
                    requests += row.requests
                    tokens += row.tokens_in + row.tokens_out
        return requests, tokens

    def record(
        self, site: str, model: str, version: str, tokens_in: int, tokens_out: int, fallback: bool
    ) -> UsageRow:
        """Count one answered request; returns this process's running row for the key."""
        entry = self.catalogue.models.get(model)
        rate = entry.cost_per_1k_tokens if entry is not None else 0.0
        cost = (tokens_in + tokens_out) / 1000.0 * rate
        key = (self._day(), site, model, version)
        with self._lock:
            tables = (self._pending, self._totals) if self._conn is not None else (self._totals,)
            for table in tables:
                row = table.get(key)
                if row is None:
                    row = table[key] = UsageRow(*key)
                row.requests += 1
                row.fallback += int(fallback)
                row.tokens_in += tokens_in
                row.tokens_out += tokens_out
                row.cost += cost
            return msgspec.structs.replace(self._totals[key])

    def rows(self) -> list[UsageRow]:
        """This process's counters (the file has every router's: `read_usage`)."""
        with self._lock:
            return [msgspec.structs.replace(r) for r in self._totals.values()]

    def flush(self) -> None:
        """Add pending counts to the file and re-read the day's site totals (blocking: call
        it in a thread from async code)."""
        if self._conn is None:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
        try:
            with immediate(self._conn):
                self._conn.executemany(_ADD, [msgspec.structs.asdict(r) for r in pending.values()])
        except BaseException:
            with self._lock:  # keep them for the next flush
                for key, row in pending.items():
                    self._pending.setdefault(key, UsageRow(*key))
                    _add_into(self._pending[key], row)
            raise
        self._reload_sites()

    def _reload_sites(self) -> None:
        assert self._conn is not None
        day = self._day()
        cur = self._conn.execute(
            "SELECT site, SUM(requests) AS r, SUM(tokens_in + tokens_out) AS t "
            "FROM model_usage WHERE day = ? GROUP BY site",
            (day,),
        )
        base = {(day, row["site"]): (int(row["r"]), int(row["t"])) for row in cur}
        with self._lock:
            self._site_base = base

    def close(self) -> None:
        if self._conn is not None:
            self.flush()
            self._conn.close()
            self._conn = None


def _add_into(into: UsageRow, row: UsageRow) -> None:
    into.requests += row.requests
    into.fallback += row.fallback
    into.tokens_in += row.tokens_in
    into.tokens_out += row.tokens_out
    into.cost += row.cost


def read_usage(path: Path, day: str | None = None) -> list[UsageRow]:
    """Every router's counters from the usage file (one day, or all)."""
    if not Path(path).exists():
        return []
    conn = open_reader(path)
    try:
        if day is None:
            cur = conn.execute("SELECT * FROM model_usage ORDER BY day, site, model, version")
        else:
            cur = conn.execute(
                "SELECT * FROM model_usage WHERE day = ? ORDER BY site, model, version", (day,)
            )
        return decode_rows(cur, UsageRow)
    except sqlite3.OperationalError:  # no table yet
        return []
    finally:
        conn.close()
