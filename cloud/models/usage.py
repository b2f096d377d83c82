"""Tokens, requests and cost per day, site and model (and per site and intent), and the
daily quotas: per site, and per intent of a site.

The model router records every answered request here (`record`) and asks `check` before
routing one. Counts live in memory and are added to SQLite tables every `flush`
(``requests = requests + delta``), so several routers can share one file; after each
flush a router re-reads the day's per-site and per-intent totals, so a quota is shared
between routers up to one flush interval. `check` is two dict look-ups: running totals per
site and per intent are kept as requests are recorded, not summed per check. Token counts
are the worker's generated chunks (out) and an estimate of the prompt (in: characters /
4); cost = (in + out) / 1000 x the model's ``cost_per_1k_tokens``.

The intent is the edge's (``Aivos-Intent`` request header, `INTENT_HEADER`); a request
without it counts against its site only.

Per minute and model (``model_minutes``, the console's charts) each router writes a row of
its own (``router``: `UsageLedger.router`, unique per process) with its p95 of the minute;
`read_minutes` merges the routers' rows (counts added, p95s weighted by requests).
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from aivos.cloud.worker.catalogue import Catalogue
from aivos.cloud.worker.stats import percentile
from aivos.shared.errors import QuotaExceeded
from aivos.shared.messages import INTENT_HEADER, GenerateRequest
from aivos.shared.sqlite import decode_rows, immediate, open_reader, open_writer

__all__ = [
    "INTENT_HEADER",
    "IntentRow",
    "MinuteRow",
    "read_minutes",
    "UsageRow",
    "UsageLedger",
    "QuotaExhausted",
    "SiteQuotaExhausted",
    "IntentQuotaExhausted",
    "estimate_prompt_tokens",
    "read_intent_usage",
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
);
CREATE TABLE IF NOT EXISTS intent_usage (
    day TEXT NOT NULL,
    site TEXT NOT NULL,
    intent TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (day, site, intent)
);
"""
_MINUTES_TABLE = """
CREATE TABLE IF NOT EXISTS model_minutes (
    minute INTEGER NOT NULL,
    model TEXT NOT NULL,
    router TEXT NOT NULL DEFAULT '',
    requests INTEGER NOT NULL DEFAULT 0,
    fallback INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    p95_ms REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, model, router)
)
"""
# a file written before the router column (key (minute, model)): its rows are kept, as
# router '' (one router's view of each minute, what that schema could hold)
_MINUTES_V2 = [
    "ALTER TABLE model_minutes RENAME TO model_minutes_v1",
    _MINUTES_TABLE,
    "INSERT INTO model_minutes (minute, model, router, requests, fallback, tokens, cost, p95_ms) "
    "SELECT minute, model, '', requests, fallback, tokens, cost, p95_ms FROM model_minutes_v1",
    "DROP TABLE model_minutes_v1",
]
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
# a row per router: its counts add up, its p95 is its own over the minute so far (each
# flush of the minute replaces it); `read_minutes` merges the routers' rows
_ADD_MINUTE = """
INSERT INTO model_minutes (minute, model, router, requests, fallback, tokens, cost, p95_ms)
VALUES (:minute, :model, :router, :requests, :fallback, :tokens, :cost, :p95_ms)
ON CONFLICT (minute, model, router) DO UPDATE SET
    requests = requests + excluded.requests,
    fallback = fallback + excluded.fallback,
    tokens = tokens + excluded.tokens,
    cost = cost + excluded.cost,
    p95_ms = excluded.p95_ms
"""
_ADD_INTENT = """
INSERT INTO intent_usage (day, site, intent, requests, tokens_in, tokens_out, cost)
VALUES (:day, :site, :intent, :requests, :tokens_in, :tokens_out, :cost)
ON CONFLICT (day, site, intent) DO UPDATE SET
    requests = requests + excluded.requests,
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


class IntentRow(msgspec.Struct):
    day: str
    site: str
    intent: str
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0


class MinuteRow(msgspec.Struct):
    """One model's traffic in one minute (unix time // 60): the console's charts."""

    minute: int
    model: str
    requests: int = 0
    fallback: int = 0
    tokens: int = 0
    cost: float = 0.0
    p95_ms: float = 0.0


class _Minute:
    __slots__ = ("requests", "fallback", "tokens", "cost", "latencies", "flushed")

    def __init__(self) -> None:
        self.requests = self.fallback = self.tokens = 0
        self.cost = 0.0
        self.latencies: list[float] = []
        self.flushed = (0, 0, 0, 0.0)  # counts already added to the file


class QuotaExhausted(QuotaExceeded):
    """A daily quota is used up (`what`: ``requests`` or ``tokens``); the router answers
    ``Error(code="quota_exceeded", message=str(exc))``."""

    def __init__(self, site: str, what: str, used: int, limit: int, message: str) -> None:
        self.site, self.what, self.used, self.limit = site, what, used, limit
        super().__init__(message)


class SiteQuotaExhausted(QuotaExhausted):
    """A site used up its daily quota."""

    def __init__(self, site: str, what: str, used: int, limit: int) -> None:
        super().__init__(
            site, what, used, limit, f"site {site} used {used} of {limit} {what} today (UTC)"
        )


class IntentQuotaExhausted(QuotaExhausted):
    """One intent of a site used up its daily token budget."""

    def __init__(self, site: str, intent: str, used: int, limit: int) -> None:
        self.intent = intent
        super().__init__(
            site,
            "tokens",
            used,
            limit,
            f"site {site} intent {intent} used {used} of {limit} tokens today (UTC)",
        )


_day_cache: tuple[float, str] = (0.0, "")  # (when the cached day ends, the day)


def utc_day() -> str:
    """Today (UTC) as YYYY-MM-DD; the router asks per request, so the day is kept until
    its midnight instead of being formatted again."""
    global _day_cache
    now = time.time()
    ends, day = _day_cache
    if now < ends:
        return day
    day = datetime.datetime.fromtimestamp(now, datetime.UTC).date().isoformat()
    _day_cache = ((now // 86400 + 1) * 86400, day)  # Unix days are UTC days
    return day


def estimate_prompt_tokens(request: GenerateRequest) -> int:
    chars = len(request.prompt) + len(request.system or "")
    chars += sum(len(p.text) for p in request.passages) + sum(len(m) for m in request.memory)
    return max(1, chars // 4)


_MAX_LATENCIES = 20000  # per model and minute: enough for a p95, bounded memory
_Key = tuple[str, str, str, str]  # day, site, model, version
_IntentKey = tuple[str, str, str]  # day, site, intent


class UsageLedger:
    """In-memory counters, flushed as deltas to `path` (None: memory only)."""

    def __init__(
        self,
        catalogue: Catalogue,
        path: Path | None = None,
        *,
        day: Callable[[], str] = utc_day,
        clock: Callable[[], float] = time.time,
        router: str | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.path = path
        # this ledger's rows of `model_minutes` (its p95s): unique per router process
        self.router = router or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._day = day
        self._lock = threading.Lock()
        self._totals: dict[_Key, UsageRow] = {}  # this process, all time
        self._pending: dict[_Key, UsageRow] = {}  # not flushed yet
        self._intent_totals: dict[_IntentKey, IntentRow] = {}
        self._intent_pending: dict[_IntentKey, IntentRow] = {}
        # what `check` compares: every router's flushed counts (from the file) plus this
        # process's not yet flushed (without a file: all of this process's)
        self._site_base: dict[tuple[str, str], tuple[int, int]] = {}
        self._intent_base: dict[_IntentKey, int] = {}
        self._site_live: dict[tuple[str, str], list[int]] = {}  # [requests, tokens]
        self._intent_live: dict[_IntentKey, int] = {}
        self._minutes: dict[tuple[int, str], _Minute] = {}  # this minute and the last
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        if path is not None:
            self._conn = open_writer(path, synchronous="NORMAL")
            self._conn.executescript(_SCHEMA)
            _ensure_minutes_table(self._conn)
            self._reload()

    def check(self, site: str, intent: str | None = None) -> None:
        """Raise `SiteQuotaExhausted` when `site` has no quota left today, or
        `IntentQuotaExhausted` when its `intent` has no tokens left."""
        quota = self.catalogue.quota(site)
        if quota.requests_per_day is not None or quota.tokens_per_day is not None:
            requests, tokens = self.site_today(site)
            if quota.requests_per_day is not None and requests >= quota.requests_per_day:
                raise SiteQuotaExhausted(site, "requests", requests, quota.requests_per_day)
            if quota.tokens_per_day is not None and tokens >= quota.tokens_per_day:
                raise SiteQuotaExhausted(site, "tokens", tokens, quota.tokens_per_day)
        if intent is not None:
            limit = quota.intents.get(intent)
            if limit is not None:
                used = self.intent_today(site, intent)
                if used >= limit:
                    raise IntentQuotaExhausted(site, intent, used, limit)

    def site_today(self, site: str) -> tuple[int, int]:
        """(requests, tokens in + out) of `site` today, across models."""
        key = (self._day(), site)
        with self._lock:
            requests, tokens = self._site_base.get(key, (0, 0))
            live = self._site_live.get(key)
            if live is not None:
                requests += live[0]
                tokens += live[1]
        return requests, tokens

    def intent_today(self, site: str, intent: str) -> int:
        """Tokens (in + out) of `site`'s `intent` today."""
        key = (self._day(), site, intent)
        with self._lock:
            return self._intent_base.get(key, 0) + self._intent_live.get(key, 0)

    def record(
        self,
        site: str,
        model: str,
        version: str,
        tokens_in: int,
        tokens_out: int,
        fallback: bool,
        intent: str | None = None,
        latency_ms: float | None = None,
    ) -> UsageRow:
        """Count one answered request; returns this process's running row for the key."""
        entry = self.catalogue.models.get(model)
        rate = entry.cost_per_1k_tokens if entry is not None else 0.0
        tokens = tokens_in + tokens_out
        cost = tokens / 1000.0 * rate
        day = self._day()
        key = (day, site, model, version)
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
            mkey = (int(self._clock() // 60), model)
            minute = self._minutes.get(mkey)
            if minute is None:
                minute = self._minutes[mkey] = _Minute()
            minute.requests += 1
            minute.fallback += int(fallback)
            minute.tokens += tokens
            minute.cost += cost
            if latency_ms is not None and len(minute.latencies) < _MAX_LATENCIES:
                minute.latencies.append(latency_ms)
            live = self._site_live.setdefault((day, site), [0, 0])
            live[0] += 1
            live[1] += tokens
            if intent is not None:
                ikey = (day, site, intent)
                self._intent_live[ikey] = self._intent_live.get(ikey, 0) + tokens
                itables = (
                    (self._intent_pending, self._intent_totals)
                    if self._conn is not None
                    else (self._intent_totals,)
                )
                for itable in itables:
                    irow = itable.get(ikey)
                    if irow is None:
                        irow = itable[ikey] = IntentRow(*ikey)
                    irow.requests += 1
                    irow.tokens_in += tokens_in
                    irow.tokens_out += tokens_out
                    irow.cost += cost
            return msgspec.structs.replace(self._totals[key])

    def rows(self) -> list[UsageRow]:
        """This process's counters (the file has every router's: `read_usage`)."""
        with self._lock:
            return [msgspec.structs.replace(r) for r in self._totals.values()]

    def intent_rows(self) -> list[IntentRow]:
        """This process's counters per site and intent (every router's: `read_intent_usage`)."""
        with self._lock:
            return [msgspec.structs.replace(r) for r in self._intent_totals.values()]

    def flush(self) -> None:
        """Add pending counts to the file and re-read the day's totals (blocking: call it in
        a thread from async code)."""
        if self._conn is None:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
            ipending, self._intent_pending = self._intent_pending, {}
            minutes = self._minute_deltas()
        try:
            with immediate(self._conn):
                self._conn.executemany(_ADD_MINUTE, minutes)
                self._conn.executemany(_ADD, [msgspec.structs.asdict(r) for r in pending.values()])
                self._conn.executemany(
                    _ADD_INTENT, [msgspec.structs.asdict(r) for r in ipending.values()]
                )
        except BaseException:
            with self._lock:  # keep them for the next flush
                for key, row in pending.items():
                    _add_into(self._pending.setdefault(key, UsageRow(*key)), row)
                for ikey, irow in ipending.items():
                    _add_into(self._intent_pending.setdefault(ikey, IntentRow(*ikey)), irow)
            raise
        self._reload(pending, ipending)

    def _minute_deltas(self) -> list[dict[str, Any]]:
        """Each minute's counts since the last flush and its p95 so far; minutes before the
        last one are dropped (called under the lock)."""
        now = int(self._clock() // 60)
        out = []
        for (minute, model), acc in list(self._minutes.items()):
            r, f, t, c = acc.flushed
            if acc.requests > r:
                p95 = percentile(acc.latencies, 95) if acc.latencies else 0.0
                out.append(
                    {
                        "minute": minute,
                        "model": model,
                        "router": self.router,
                        "requests": acc.requests - r,
                        "fallback": acc.fallback - f,
                        "tokens": acc.tokens - t,
                        "cost": acc.cost - c,
                        "p95_ms": p95,
                    }
                )
                acc.flushed = (acc.requests, acc.fallback, acc.tokens, acc.cost)
            if minute < now - 1:
                del self._minutes[(minute, model)]
        return out

    def _reload(
        self,
        flushed: dict[_Key, UsageRow] | None = None,
        iflushed: dict[_IntentKey, IntentRow] | None = None,
    ) -> None:
        """Re-read the day's totals; what was just flushed moves from live to base."""
        assert self._conn is not None
        day = self._day()
        cur = self._conn.execute(
            "SELECT site, SUM(requests) AS r, SUM(tokens_in + tokens_out) AS t "
            "FROM model_usage WHERE day = ? GROUP BY site",
            (day,),
        )
        base = {(day, row["site"]): (int(row["r"]), int(row["t"])) for row in cur}
        cur = self._conn.execute(
            "SELECT site, intent, tokens_in + tokens_out AS t FROM intent_usage WHERE day = ?",
            (day,),
        )
        ibase = {(day, row["site"], row["intent"]): int(row["t"]) for row in cur}
        with self._lock:
            self._site_base, self._intent_base = base, ibase
            for (d, site, _, _), row in (flushed or {}).items():
                live = self._site_live.get((d, site))
                if live is not None:
                    live[0] -= row.requests
                    live[1] -= row.tokens_in + row.tokens_out
            for ikey, irow in (iflushed or {}).items():
                if ikey in self._intent_live:
                    self._intent_live[ikey] -= irow.tokens_in + irow.tokens_out
            # only today's counts are compared: drop other days' live entries
            self._site_live = {k: v for k, v in self._site_live.items() if k[0] == day}
            self._intent_live = {k: v for k, v in self._intent_live.items() if k[0] == day}

    def close(self) -> None:
        if self._conn is not None:
            self.flush()
            self._conn.close()
            self._conn = None


def _ensure_minutes_table(conn: sqlite3.Connection) -> None:
    """`model_minutes` with its router column: created, or migrated from a file written
    before it (`_MINUTES_V2`); routers starting together migrate once (the write lock)."""
    with immediate(conn):
        columns = {row[1] for row in conn.execute("PRAGMA table_info(model_minutes)")}
        if not columns:
            conn.execute(_MINUTES_TABLE)
        elif "router" not in columns:
            for statement in _MINUTES_V2:
                conn.execute(statement)


def _add_into(into: UsageRow | IntentRow, row: UsageRow | IntentRow) -> None:
    into.requests += row.requests
    into.tokens_in += row.tokens_in
    into.tokens_out += row.tokens_out
    into.cost += row.cost
    if isinstance(into, UsageRow) and isinstance(row, UsageRow):
        into.fallback += row.fallback


def _read(path: Path, table: str, order: str, day: str | None, type_: type[Any]) -> list[Any]:
    if not Path(path).exists():
        return []
    conn = open_reader(path)
    try:
        if day is None:
            cur = conn.execute(f"SELECT * FROM {table} ORDER BY day, {order}")
        else:
            cur = conn.execute(f"SELECT * FROM {table} WHERE day = ? ORDER BY {order}", (day,))
        return decode_rows(cur, type_)
    except sqlite3.OperationalError:  # no table yet
        return []
    finally:
        conn.close()


def read_usage(path: Path, day: str | None = None) -> list[UsageRow]:
    """Every router's counters from the usage file (one day, or all)."""
    return _read(path, "model_usage", "site, model, version", day, UsageRow)


# every router's row of a minute merged: counts add up; the p95 is the routers' p95s
# weighted by their requests (see `read_minutes`)
_READ_MINUTES = """
SELECT minute, model, SUM(requests) AS requests, SUM(fallback) AS fallback,
       SUM(tokens) AS tokens, SUM(cost) AS cost,
       COALESCE(SUM(CASE WHEN p95_ms > 0 THEN p95_ms * requests END)
                / SUM(CASE WHEN p95_ms > 0 THEN requests END), 0.0) AS p95_ms
FROM model_minutes WHERE minute >= ? GROUP BY minute, model ORDER BY minute, model
"""


def read_minutes(path: Path, since_minute: int = 0) -> list[MinuteRow]:
    """Per model and minute from `since_minute` (unix time // 60) on, oldest first, every
    router's traffic together.

    Each router stores its own p95 of the minute (exact for its requests); a p95 of the
    union cannot be rebuilt from them, so the minute's is their mean weighted by each
    router's requests. Routers share the load through a queue group, so each sees a sample
    of the same traffic and its p95 estimates the same value: the weighted mean is the
    better estimate, and it stays one as routers are added. The max would be an upper
    bound, but one that rises with the number of routers (the max of several noisy
    estimates) and lets a router with a handful of slow answers set the whole minute's.
    """
    if not Path(path).exists():
        return []
    conn = open_reader(path)
    try:
        cur = conn.execute(_READ_MINUTES, (since_minute,))
        return decode_rows(cur, MinuteRow)
    except sqlite3.OperationalError:  # no table yet
        return []
    finally:
        conn.close()


def read_intent_usage(path: Path, day: str | None = None) -> list[IntentRow]:
    """Every router's counters per site and intent (one day, or all)."""
    return _read(path, "intent_usage", "site, intent", day, IntentRow)
