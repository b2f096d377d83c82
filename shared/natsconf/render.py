"""Render nats-server configuration files for the cloud hub and a site leaf node.

Hub: JetStream (file store, domain ``hub``, ``sync_interval: always``) and a leaf-node
listener with ``no_advertise: true`` (otherwise the hub gossips its cluster URLs to the
leaves and they bypass the URL they were configured with, e.g. a proxy).

Leaf: its own client port for the site's agent, one remote to the hub, and optionally
a local JetStream with domain = site (also ``sync_interval: always``: the default
2-minute fsync interval loses acknowledged data on power loss).
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from aivos.shared.subjects import HUB_DOMAIN, validate_site

__all__ = ["HubConfig", "LeafConfig", "render_hub", "render_leaf"]


class HubConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The cloud hub: clients (workers, ingest, console) and leaf nodes connect here."""

    store_dir: str
    host: str = "127.0.0.1"
    port: int = 4222
    leaf_port: int = 7422
    monitor_port: int = 0  # 0 = no HTTP monitoring endpoint
    server_name: str = "aivos-hub"
    max_payload: int = 8 * 1024 * 1024
    ping_interval_s: int = 10  # nats-server default is 2 min: a silent WAN drop goes unseen
    ping_max: int = 3

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def leaf_url(self) -> str:
        return f"nats-leaf://{self.host}:{self.leaf_port}"


class LeafConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A site leaf node: the agent connects to `url`; the leaf connects out to `hub_leaf_url`."""

    site: str
    hub_leaf_url: str = "nats-leaf://127.0.0.1:7422"
    host: str = "127.0.0.1"
    port: int = 4223
    monitor_port: int = 0
    store_dir: str | None = None  # set to enable a local JetStream (domain = site)
    max_payload: int = 8 * 1024 * 1024
    ping_interval_s: int = 10
    ping_max: int = 3

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def server_name(self) -> str:
        return f"aivos-leaf-{self.site}"


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid quoted nats-server config string


def _common(conf: HubConfig | LeafConfig) -> list[str]:
    lines = [
        f"server_name: {_q(conf.server_name)}",
        f"host: {_q(conf.host)}",
        f"port: {conf.port}",
        f"max_payload: {conf.max_payload}",
        f'ping_interval: "{conf.ping_interval_s}s"',
        f"ping_max: {conf.ping_max}",
    ]
    if conf.monitor_port:
        lines.append(f"http: {_q(f'{conf.host}:{conf.monitor_port}')}")
    return lines


def _jetstream(store_dir: str, domain: str) -> list[str]:
    return [
        "jetstream {",
        f"  store_dir: {_q(str(Path(store_dir)))}",
        f"  domain: {_q(domain)}",
        "  sync_interval: always",
        "}",
    ]


def render_hub(conf: HubConfig) -> str:
    """nats-server config text for the hub."""
    lines = _common(conf)
    lines += _jetstream(conf.store_dir, HUB_DOMAIN)
    lines += [
        "leafnodes {",
        f"  listen: {_q(f'{conf.host}:{conf.leaf_port}')}",
        "  no_advertise: true",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_leaf(conf: LeafConfig) -> str:
    """nats-server config text for a site leaf node."""
    validate_site(conf.site)
    lines = _common(conf)
    if conf.store_dir:
        lines += _jetstream(conf.store_dir, conf.site)
    lines += [
        "leafnodes {",
        '  reconnect: "1s"',
        "  remotes = [",
        f"    {{ url: {_q(conf.hub_leaf_url)} }}",
        "  ]",
        "}",
    ]
    return "\n".join(lines) + "\n"
