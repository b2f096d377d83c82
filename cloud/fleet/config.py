"""Desired config in the JetStream KV bucket ``aivos_config`` (hub domain).

Keys: ``_defaults`` (fleet-wide) and ``<site>`` (overrides), each a partial `SiteConfig`
JSON object. Every put stamps ``version`` = 1 + the highest version in the bucket, so a
site's effective version (max of both keys) increases on every change that concerns it.
See `shared.fleet` for the merge rule.

With the operator's config key (``DATA_DIR/keys/config_signing.key``, made at the first
`aivos fleet enroll`), every value is stored signed (`shared.config_signature`); sites
that trust the key reject anything else. Without a key, values are stored unsigned.

A put is three steps, each retried while JetStream cannot answer (a cluster electing its
leaders: timeouts, 503s; `aivos.shared.jsready`) for up to the store's `ready_timeout_s`:
reading what is stored (merge), taking the next version (`_next_version`), writing the
value. Each is safe to run again. A read is a read. A counter compare-and-set that was
applied but not answered is followed by a retry that reads the counter again, finds it
moved and takes the next number: that version is skipped, which is harmless (versions
only order); "the counter already holds my number" would not prove it was ours (another
put may have taken the same number). The value write is a plain put of the same bytes: a retry after
one that was applied stores one more revision with the same content, which a site sees as
the document it already applied and skips (`edge.fleet.remote_config`).
"""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.api import KeyValueConfig
from nats.js.client import JetStreamContext
from nats.js.errors import (
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue

from aivos.cloud.jetstream import open_key_value
from aivos.shared.config_signature import load_config_signing_key, sign_config, unwrap_config
from aivos.shared.errors import ConfigError
from aivos.shared.fleet import DEFAULTS_KEY, SiteConfig, effective_config, merge_config
from aivos.shared.jsready import connection_of, until_jetstream_answers
from aivos.shared.subjects import CONFIG_BUCKET, config_key

__all__ = ["ConfigStore", "load_config_file"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ALLOWED = set(SiteConfig.__struct_fields__) - {"version"}
# The fleet's last config version, a counter beside the configs (not a site id, so no site
# can read it): a site's put reads this key, its own and the defaults instead of every
# site's (10,000 sites: a rollout wave's 10,000 puts read 10,000 keys each). A bucket from
# before the counter starts it at the highest stored version, once.
VERSION_KEY = "_version"


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A partial config from a TOML (or JSON) file; unknown top-level keys fail loudly."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        data = json.loads(raw) if p.suffix == ".json" else tomllib.loads(raw.decode())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(p), f"cannot read config: {exc}") from exc
    validate_partial(data, str(p))
    return data


def validate_partial(data: dict[str, Any], where: str = "config") -> None:
    unknown = set(data) - _ALLOWED
    if unknown:
        raise ConfigError(
            f"{where}.{sorted(unknown)[0]}", f"unknown key; allowed: {sorted(_ALLOWED)}"
        )
    # the merged result must decode (types); the edge validates the tables themselves
    effective_config(None, json.dumps(data).encode())


class ConfigStore:
    """Put/get desired config. ``js`` must address the hub domain. A put's steps are
    retried for up to `ready_timeout_s` while JetStream cannot answer (0: one try)."""

    def __init__(
        self,
        kv: KeyValue,
        signing_key: Ed25519PrivateKey | None = None,
        *,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.kv = kv
        self.signing_key = signing_key
        self.ready_timeout_s = ready_timeout_s

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        create: bool = True,
        data_dir: str | Path | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        replicas: int = 1,
        ready_timeout_s: float = 60.0,
    ) -> ConfigStore:
        """Open (or create) the bucket. Values are signed with `signing_key`, else with
        ``data_dir/keys/config_signing.key`` when it exists, else stored unsigned.
        A bucket created here gets `replicas` (``--js-replicas``: 3 on a hub cluster).
        Retried for up to `ready_timeout_s` while JetStream cannot answer (`open_key_value`),
        as are the store's puts; without `create`, a missing bucket raises
        BucketNotFoundError."""
        if signing_key is None and data_dir is not None:
            signing_key = load_config_signing_key(Path(data_dir))
        kv = await open_key_value(
            js,
            KeyValueConfig(bucket=CONFIG_BUCKET, history=5, replicas=replicas),
            create=create,
            ready_timeout_s=ready_timeout_s,
        )
        return cls(kv, signing_key, ready_timeout_s=ready_timeout_s)

    async def _get(self, key: str) -> dict[str, Any]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return {}
        if not entry.value:
            return {}
        try:
            return unwrap_config(entry.value, key)[0]
        except ConfigError:
            return {}

    async def _max_version(self) -> int:
        """The highest version stored in any config (the scan the counter replaces)."""
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return 0
        best = 0
        for key in keys:
            if key != VERSION_KEY:
                best = max(best, int((await self._get(key)).get("version", 0) or 0))
        return best

    async def _next_version(self, key: str) -> int:
        """Take the next fleet-wide version: compare-and-set on the counter, so two
        concurrent puts (console replicas, the rollout controller) never share one.

        A site applies a config only when its effective version (the larger of its own and
        the defaults') grows, so the new version must also exceed what is stored where it
        counts, should anything have written around the counter (an older release during an
        upgrade): the key itself and the defaults for a site's put — two reads — and, for a
        put of the defaults, which every site sees, every stored config (the old scan; an
        operator action, rare)."""
        while True:
            try:
                entry = await self.kv.get(VERSION_KEY)
                current, revision = int(entry.value or b"0"), entry.revision
            except KeyNotFoundError:
                current, revision = 0, None
            if key == DEFAULTS_KEY or revision is None:
                floor = await self._max_version()
            else:
                floor = max(
                    [int((await self._get(k)).get("version", 0) or 0) for k in (key, DEFAULTS_KEY)]
                )
            value = str(max(current, floor) + 1).encode()
            try:
                if revision is None:
                    await self.kv.create(VERSION_KEY, value)
                else:
                    await self.kv.update(VERSION_KEY, value, last=revision)
            except KeyWrongLastSequenceError:
                continue  # another put took this one: read the counter again
            return int(value)

    async def get_raw(self, site: str | None) -> dict[str, Any]:
        """The stored partial document of a site (or of the defaults when `site` is None)."""
        return await self._get(DEFAULTS_KEY if site is None else config_key(site))

    async def put(self, site: str | None, data: dict[str, Any], *, merge: bool = False) -> int:
        """Store a partial config for `site` (None = fleet defaults); returns its version.

        With `merge`, `data` is deep-merged into what is stored (used for one-field changes
        such as a rollout's ``bundle_version``)."""
        validate_partial(data)
        key = DEFAULTS_KEY if site is None else config_key(site)
        doc = dict(data)
        if merge:
            stored = await self._retried(lambda: self._get(key), f"reading config {key}")
            doc = merge_config(stored, data)
        doc.pop("version", None)
        version = await self._retried(lambda: self._next_version(key), "config version")
        doc["version"] = version
        if self.signing_key is not None:
            value = sign_config(key, doc, self.signing_key)
        else:
            value = json.dumps(doc, sort_keys=True).encode()
        # the same bytes again if a put was applied but not answered (see the module doc)
        await self._retried(lambda: self.kv.put(key, value), f"writing config {key}")
        log.info("config %s set to version %d", key, version)
        return version

    async def _retried(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        return await until_jetstream_answers(
            op, what=what, timeout_s=self.ready_timeout_s, logger=log, nc=connection_of(self.kv)
        )

    async def effective(self, site: str) -> SiteConfig:
        defaults = await self._get(DEFAULTS_KEY)
        own = await self._get(config_key(site))
        return effective_config(json.dumps(defaults).encode(), json.dumps(own).encode())
