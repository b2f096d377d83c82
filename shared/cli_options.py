"""Click options that several `aivos` commands take, each declared once.

Every factory returns a click decorator. The flag, the Python parameter it fills, its type
and its default live here; a command passes only what really differs between commands
(its help text, whether the option is required). Commands import from here, never the
other way round: this module knows nothing about the tiers.

    @click.command("stats")
    @data_dir_option(CLOUD_DATA_DIR_HELP)
    @json_option()
    def stats_cmd(data_dir: Path | None, as_json: bool) -> None: ...
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = [
    "DEFAULT_NATS_URL",
    "CLOUD_DATA_DIR_HELP",
    "bundle_option",
    "config_option",
    "data_dir_option",
    "db_option",
    "host_option",
    "js_replicas_option",
    "json_option",
    "log_level_option",
    "nats_option",
    "port_option",
    "site_option",
]

FC = TypeVar("FC", bound=Callable[..., Any] | click.Command)


DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
"""The hub's client URL on this machine at the port `aivos nats config` gives it."""

CLOUD_DATA_DIR_HELP = "Cloud data directory [default: $AIVOS_HOME/cloud]."
"""Help of `--data-dir` on the cloud commands (the store and registry they share)."""


def _default(value: object) -> dict[str, Any]:
    """A real default is shown in the help; `None` (not given) is not."""
    return {"default": None} if value is None else {"default": value, "show_default": True}


def data_dir_option(
    help: str | None = None, *, required: bool = False, file_okay: bool = False
) -> Callable[[FC], FC]:
    """`--data-dir DIRECTORY` -> ``data_dir: Path`` (``None`` when optional and not given).

    `file_okay=True` keeps the looser ``PATH`` of `aivos workflows run`."""
    return click.option(
        "--data-dir",
        "data_dir",
        type=click.Path(file_okay=file_okay, path_type=Path),
        required=required,
        help=help,
        **({} if required else {"default": None}),
    )


def db_option(
    help: str = (
        "Cloud database: a postgresql:// URL [default: SQLite files in the data dir; "
        "env AIVOS_CLOUD_DB]."
    ),
) -> Callable[[FC], FC]:
    """`--db URL` (or ``$AIVOS_CLOUD_DB``) -> ``db: str | None``: the database of the cloud
    stores; None keeps the SQLite files in the data directory."""
    return click.option("--db", "db", envvar="AIVOS_CLOUD_DB", default=None, help=help)


def js_replicas_option(
    help: str = (
        "JetStream replicas of the streams and buckets this creates (3 on a 3-node hub "
        "cluster; env AIVOS_JS_REPLICAS)."
    ),
) -> Callable[[FC], FC]:
    """`--js-replicas N` (or ``$AIVOS_JS_REPLICAS``) -> ``js_replicas: int``."""
    return click.option(
        "--js-replicas",
        "js_replicas",
        envvar="AIVOS_JS_REPLICAS",
        type=click.IntRange(1, 5),
        default=1,
        show_default=True,
        help=help,
    )


def nats_option(
    help: str | None = None, *, default: str | None = DEFAULT_NATS_URL
) -> Callable[[FC], FC]:
    """`--nats URL` -> ``nats_url: str``; the default is shown in the help when there is one
    (the edge agent has none: without it, it runs without an uplink)."""
    return click.option("--nats", "nats_url", help=help, **_default(default))


def json_option(help: str = "Print JSON.") -> Callable[[FC], FC]:
    """`--json` flag -> ``as_json: bool``: machine-readable output instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def log_level_option() -> Callable[[FC], FC]:
    """`--log-level` -> ``log_level: str`` of the long-running services (JSON logs)."""
    return click.option("--log-level", default="INFO", show_default=True)


def site_option(
    help: str, *, default: str | None = None, multiple: bool = False
) -> Callable[[FC], FC]:
    """`--site ID` -> ``site: str | None``; with `multiple`, repeatable -> ``sites: tuple``."""
    if multiple:
        return click.option("--site", "sites", multiple=True, help=help)
    return click.option("--site", help=help, **_default(default))


def bundle_option(
    help: str = "Intent model bundle (default: the built-in bundle).",
) -> Callable[[FC], FC]:
    """`--bundle DIRECTORY` -> ``bundle: Path | None``: an intent model bundle directory."""
    return click.option(
        "--bundle", type=click.Path(file_okay=False, path_type=Path), default=None, help=help
    )


def config_option(help: str, *, exists: bool = False) -> Callable[[FC], FC]:
    """`--config FILE` -> ``config_path: Path | None``: the agent's TOML settings file."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=exists, dir_okay=False, path_type=Path),
        default=None,
        help=help,
    )


def host_option(
    help: str | None = None, *, default: str | None = "127.0.0.1"
) -> Callable[[FC], FC]:
    """`--host ADDRESS` -> ``host: str``: the address a server binds."""
    return click.option("--host", help=help, **_default(default))


def port_option(help: str | None = None, *, default: int | None) -> Callable[[FC], FC]:
    """`--port N` -> ``port: int``: the TCP port a server binds (0: any free port)."""
    return click.option("--port", type=int, help=help, **_default(default))
