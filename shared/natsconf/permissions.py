"""Who may publish and subscribe to what on the hub: every NATS permission aivos grants,
derived in this one place from `shared.subjects` (and the fleet report subjects).

Roles (each a hub user, identified by its client certificate, see `pki`):

* **site** ``<site>`` (its leaf node's link to the hub): publish and subscribe only its own
  subjects, kind by kind (`_site_subjects`): ``aivos.*.<site>`` (generation requests,
  heartbeats), ``aivos.gen.<site>.*`` (generation naming a model class, for the model
  router), ``aivos.sync.<site>.>``, ``aivos.evt.<site>.>`` and its config and bundle
  reports. Never ``aivos.model.<site>.*``: only the router sends to a model's workers (a
  site sending there would skip its quota, and one subscribing there could join a model's
  queue group and swallow requests until the model's breaker opens for every site). A new
  per-site subject kind is added to `_site_subjects`. Replies only into its own inbox
  ``_INBOX.site-<site>.>``; JetStream API only to read the config bucket's own key and
  the defaults key (direct get and consumers filtered on those keys, nothing else), to read bundles from the model object store, and to receive the
  stream acks of its own sync publishes. For a leaf connection, *publish* is what the
  leaf may send into the hub and *subscribe* is what the hub forwards to the leaf.
* **worker** (generation workers, worker pool supervisors): queue-subscribe ``aivos.gen.*``
  (default path) and ``aivos.model.*.*`` (one catalogue model's requests); publish and
  subscribe pool stats ``aivos.poolstats``; reply into any inbox; read the pushed model
  catalogue (its one KV key, never write it).
* **router** (the model router, `cloud.models.router`): queue-subscribe ``aivos.gen.*.*``
  (requests naming a model class) and ``aivos.gen.*`` (the default path, when a catalogue
  with quotas puts it behind the router); publish ``aivos.model.>`` (the only role that
  may) and reply into any inbox; read the pushed model catalogue like a worker.
* **ingest**: the sync stream and its durable consumer, nothing else.
* **fleet** (console, fleet service, rollouts, `models publish`, `cloud models push`):
  heartbeats and reports of every site, the config and catalogue buckets and the model
  object store (read/write).
* **admin**: no restriction (the operator's own tools; never given to a site).

JetStream API subjects are granted in both forms, ``$JS.API.*`` and the domain form
``$JS.hub.API.*`` that clients behind a leaf node use (the hub checks the subject
as it arrives, before it maps the domain away).
"""

from __future__ import annotations

import msgspec

from aivos.shared.fleet import DEFAULTS_KEY, bundle_report_subject, config_report_subject
from aivos.shared.subjects import (
    CATALOGUE_BUCKET,
    CONFIG_BUCKET,
    GEN_ALL_CLASSES,
    GEN_ALL_SITES,
    HUB_DOMAIN,
    MODEL_ALL,
    MODELS_BUCKET,
    POOL_STATS,
    PREFIX,
    SYNC_STREAM,
    config_key,
    gen_subject,
    heartbeat_all,
    sync_site_filter,
    validate_site,
    validate_token,
)

__all__ = [
    "Permissions",
    "ROLES",
    "SYSTEM_USER",
    "site_inbox_prefix",
    "service_inbox_prefix",
    "site_permissions",
    "service_permissions",
    "site_user",
    "service_user",
]

ROLES = ("worker", "router", "ingest", "fleet", "admin")
SYSTEM_USER = "aivos-svc-system"  # the hub's system account: only kicks revoked links

_KV_STREAM = f"KV_{CONFIG_BUCKET}"
_CATALOGUE_STREAM = f"KV_{CATALOGUE_BUCKET}"
_OBJ_STREAM = f"OBJ_{MODELS_BUCKET}"
_JS_PREFIXES = ("$JS.API", f"$JS.{HUB_DOMAIN}.API")


class Permissions(msgspec.Struct, frozen=True):
    """Allow-lists for one hub user; None means unrestricted (admin)."""

    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None


def site_user(site: str, generation: int = 1) -> str:
    """Certificate CN / hub user name of one credential generation of `site`."""
    return f"aivos-site-{validate_site(site)}-{generation}"


def service_user(role: str, name: str = "") -> str:
    """Certificate CN / hub user name of a cloud service (optionally a named instance)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return f"aivos-svc-{role}" + (f"-{validate_token(name, 'service name')}" if name else "")


def site_inbox_prefix(site: str) -> str:
    """The inbox prefix a site's connections use; only that site receives replies there."""
    return f"_INBOX.site-{validate_site(site)}"


def service_inbox_prefix(role: str) -> str:
    """The inbox prefix of a cloud service's connections (disjoint from every site's)."""
    return f"_INBOX.svc-{role}"


def _js(*apis: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{api}" for prefix in _JS_PREFIXES for api in apis)


def _site_subjects(site: str) -> tuple[str, ...]:
    """Every subject of `site`'s own, kind by kind: never a wildcard kind over four tokens,
    which would reach ``aivos.model.<site>.<model>``."""
    return (
        f"{PREFIX}.*.{site}",  # aivos.gen.<site>, aivos.hb.<site>
        # aivos.gen.<site>.<class>: ">" not "*", or the hub does not forward the routers'
        # interest in aivos.gen.*.* to the leaf (nats-server 2.10: no responders)
        f"{gen_subject(site)}.>",
        sync_site_filter(site),
        f"{PREFIX}.evt.{site}.>",
        config_report_subject(site),
        bundle_report_subject(site),
    )


def site_permissions(site: str) -> Permissions:
    site = validate_site(site)
    own = _site_subjects(site)
    kv_keys = [f"$KV.{CONFIG_BUCKET}.{key}" for key in (config_key(site), DEFAULTS_KEY)]
    js_read = _js(
        f"STREAM.INFO.{_KV_STREAM}",
        *(f"DIRECT.GET.{_KV_STREAM}.{subject}" for subject in kv_keys),
        # Only the named, filtered create form (the edge's `edge.fleet.config_watch`):
        # the key is in the subject, and the server checks that the request's filter is
        # that key. No plain `CONSUMER.CREATE.<stream>`, so no consumer on other keys.
        *(f"CONSUMER.CREATE.{_KV_STREAM}.*.{subject}" for subject in kv_keys),
        f"CONSUMER.INFO.{_KV_STREAM}.*",  # metadata of a consumer, never values
        f"STREAM.INFO.{_OBJ_STREAM}",
        "STREAM.NAMES",  # object store reads look the stream up by subject (names only)
        f"STREAM.MSG.GET.{_OBJ_STREAM}",
        f"DIRECT.GET.{_OBJ_STREAM}",
        f"DIRECT.GET.{_OBJ_STREAM}.>",
        f"CONSUMER.CREATE.{_OBJ_STREAM}",
        f"CONSUMER.CREATE.{_OBJ_STREAM}.>",
        f"CONSUMER.INFO.{_OBJ_STREAM}.*",
    )
    flow_control = (f"$JS.FC.{_KV_STREAM}.>", f"$JS.FC.{_OBJ_STREAM}.>")
    return Permissions(
        publish=own + js_read + flow_control,
        subscribe=(*own, f"{site_inbox_prefix(site)}.>"),
    )


def _catalogue_read() -> tuple[str, ...]:
    """What routers and worker pools need to watch the pushed model catalogue, read only:
    the bucket's stream info, direct gets and an ordered consumer (nats-py's `kv.watch`
    creates it unnamed, so the plain create form: the bucket holds the catalogue and
    nothing else), and the consumer's flow control. Publishing into ``$KV.`` stays the
    fleet role's."""
    return (
        *_js(
            f"STREAM.INFO.{_CATALOGUE_STREAM}",
            f"DIRECT.GET.{_CATALOGUE_STREAM}",
            f"DIRECT.GET.{_CATALOGUE_STREAM}.>",
            f"CONSUMER.CREATE.{_CATALOGUE_STREAM}",
            f"CONSUMER.CREATE.{_CATALOGUE_STREAM}.>",
            f"CONSUMER.INFO.{_CATALOGUE_STREAM}.*",
        ),
        f"$JS.FC.{_CATALOGUE_STREAM}.>",
    )


def service_permissions(role: str) -> Permissions:
    inbox = f"{service_inbox_prefix(role)}.>"
    if role == "admin":
        return Permissions(publish=None, subscribe=None)
    if role == "worker":
        return Permissions(
            publish=("_INBOX.>", POOL_STATS, *_catalogue_read()),
            subscribe=(GEN_ALL_SITES, MODEL_ALL, POOL_STATS, inbox),
        )
    if role == "router":
        return Permissions(
            publish=("_INBOX.>", f"{PREFIX}.model.>", *_catalogue_read()),
            subscribe=(GEN_ALL_CLASSES, GEN_ALL_SITES, inbox),
        )
    if role == "ingest":
        durable_api = (
            f"STREAM.INFO.{SYNC_STREAM}",
            f"STREAM.CREATE.{SYNC_STREAM}",
            f"STREAM.UPDATE.{SYNC_STREAM}",
            f"CONSUMER.INFO.{SYNC_STREAM}.*",
            f"CONSUMER.CREATE.{SYNC_STREAM}.>",
            f"CONSUMER.CREATE.{SYNC_STREAM}",
            f"CONSUMER.DURABLE.CREATE.{SYNC_STREAM}.*",
            f"CONSUMER.MSG.NEXT.{SYNC_STREAM}.*",
            "INFO",
        )
        return Permissions(
            publish=(*_js(*durable_api), f"$JS.ACK.{SYNC_STREAM}.>"), subscribe=(inbox,)
        )
    if role == "fleet":
        stores = (_KV_STREAM, _OBJ_STREAM, _CATALOGUE_STREAM)
        api = [
            "INFO",
            "STREAM.NAMES",
            "STREAM.LIST",
            *(f"STREAM.{op}.{s}" for s in stores for op in ("INFO", "CREATE", "UPDATE")),
            *(f"STREAM.{op}.{s}" for s in stores for op in ("MSG.GET", "PURGE")),
            *(f"DIRECT.GET.{s}" for s in stores),
            *(f"DIRECT.GET.{s}.>" for s in stores),
            *(f"CONSUMER.CREATE.{s}" for s in stores),
            *(f"CONSUMER.CREATE.{s}.>" for s in stores),
            *(f"CONSUMER.DELETE.{s}.*" for s in stores),
            # nats-py's `kv.keys()` (the rollout controller's tick) asks for the info of the
            # consumer it just created: without it every tick times out on a secured hub
            *(f"CONSUMER.INFO.{s}.*" for s in stores),
        ]
        return Permissions(
            publish=(
                *_js(*api),
                f"$KV.{CONFIG_BUCKET}.>",
                f"$KV.{CATALOGUE_BUCKET}.>",  # `aivos cloud models push`
                f"$O.{MODELS_BUCKET}.>",
                *(f"$JS.FC.{s}.>" for s in stores),
            ),
            subscribe=(heartbeat_all(), f"{PREFIX}.*.*.report", inbox),
        )
    raise ValueError(f"unknown role {role!r}")
