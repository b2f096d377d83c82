"""Fleet CLIs: ``aivos models publish``, ``aivos fleet ...``, ``aivos rollout ...`` and
``aivos cloud fleet`` (registry ingest + rollout controller without the console)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table

from aivos.cloud.fleet.config import ConfigStore, load_config_file
from aivos.cloud.fleet.quality_gate import DEFAULT_TOLERANCE, BundleQualityGate, QualityGateFailed
from aivos.cloud.fleet.registry import Registry, open_registry
from aivos.cloud.fleet.registry.operators import DEFAULT_TOKEN_TTL_S, ROLES
from aivos.cloud.fleet.rollout import (
    abort_rollout,
    pause_rollout,
    resume_rollout,
    rollback_rollout,
    start_rollout,
)
from aivos.cloud.fleet.tokens import add_operator, hash_token, new_token
from aivos.cloud.ingest.store import default_data_dir
from aivos.shared.cli_options import (
    CLOUD_DATA_DIR_HELP,
    data_dir_option,
    db_option,
    js_replicas_option,
    json_option,
    log_level_option,
    nats_option,
    site_option,
)
from aivos.shared.errors import ConfigError
from aivos.shared.fleet import generate_signing_key, load_private_key
from aivos.shared.logs import configure_logging
from aivos.shared.natsconf.connect import close_nats, connect_nats
from aivos.shared.subjects import HUB_DOMAIN

__all__ = [
    "publish_cmd",
    "keygen_cmd",
    "add_cmd",
    "sites_cmd",
    "config_group",
    "operator_group",
    "operator_token_group",
    "rollout_start_cmd",
    "rollout_list_cmd",
    "rollout_pause_cmd",
    "rollout_resume_cmd",
    "rollout_abort_cmd",
    "rollout_rollback_cmd",
    "fleet_serve_cmd",
]

log = logging.getLogger(__name__)
_out = Console()
T = TypeVar("T")

_DATA_DIR = data_dir_option(CLOUD_DATA_DIR_HELP)
_NATS = nats_option("Hub NATS URL.")
_ACTOR = click.option(
    "--actor", default="cli", show_default=True, help="Operator name recorded in the audit."
)
_JSON = json_option()
_DB = db_option()
_REPLICAS = js_replicas_option()


def _registry(data_dir: Path | None, db: str | None) -> Registry:
    """The registry of `--db` (PostgreSQL) or the SQLite file in the data dir."""
    return open_registry(db, data_dir if data_dir is not None else default_data_dir())


async def _with_js(nats_url: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    nc = await connect_nats(nats_url, name="aivos-fleet-cli", connect_timeout_s=10.0)
    try:
        return await fn(nc.jetstream(domain=HUB_DOMAIN))
    finally:
        await close_nats(nc)


# ----- models publish / fleet keygen ---------------------------------------------------------


@click.command("publish")
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_NATS
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Ed25519 signing key (PEM) [default: DATA_DIR/keys/bundle_signing.key].",
)
@_DATA_DIR
@_REPLICAS
def publish_cmd(
    bundle_dir: Path, nats_url: str, key_path: Path | None, data_dir: Path | None, js_replicas: int
) -> None:
    """Sign BUNDLE_DIR and upload it to the hub's model object store."""
    from aivos.cloud.fleet.publish import publish_bundle

    if key_path is None:
        key_path = (data_dir or default_data_dir()) / "keys" / "bundle_signing.key"
    key = load_private_key(key_path)
    result = asyncio.run(
        _with_js(nats_url, lambda js: publish_bundle(js, bundle_dir, key, replicas=js_replicas))
    )
    _out.print(
        f"published bundle [bold]{result.bundle_version}[/bold] "
        f"({len(result.objects)} objects, {result.total_bytes / 1e6:.1f} MB, key {result.key_id})"
    )


@click.command("keygen")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for bundle_signing.key (private, 0600) and bundle_signing.pub.",
)
def keygen_cmd(out: Path) -> None:
    """Create the cloud's Ed25519 bundle signing key pair."""
    priv, pub = generate_signing_key(out)
    _out.print(f"private key: {priv}\npublic key (give to the sites): {pub}")


# ----- fleet sites / config ------------------------------------------------------------------


@click.command("add")
@click.argument("site")
@_DATA_DIR
@_DB
@_ACTOR
def add_cmd(site: str, data_dir: Path | None, db: str | None, actor: str) -> None:
    """Pre-register SITE in the fleet registry."""
    reg = _registry(data_dir, db)
    try:
        created = reg.register_site(site)
        if created:
            reg.record_action(actor, "site.add", site)
    finally:
        reg.close()
    _out.print(f"site {site} {'registered' if created else 'was already registered'}")


@click.command("sites")
@_DATA_DIR
@_DB
@_JSON
def sites_cmd(data_dir: Path | None, db: str | None, as_json: bool) -> None:
    """List the sites with their state and last-seen age."""
    reg = _registry(data_dir, db)
    try:
        sites = reg.sites()
    finally:
        reg.close()
    if as_json:
        click.echo(msgspec.json.encode(sites).decode())
        return
    table = Table("site", "state", "last seen", "bundle", "config", "health")
    for s in sites:
        age = "never" if s.last_seen_age_s is None else f"{s.last_seen_age_s:.0f}s ago"
        table.add_row(
            s.site_id,
            s.state,
            age,
            s.bundle_version or "-",
            f"{s.config_applied}/{s.config_desired}",
            s.health,
        )
    _out.print(table)


@click.group("config")
def config_group() -> None:
    """Desired config of the fleet (defaults) and of single sites."""


@config_group.command("set")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@site_option("Site to configure [default: fleet-wide defaults].")
@_NATS
@_DATA_DIR
@_DB
@_REPLICAS
@_ACTOR
def _config_set(
    file: Path,
    site: str | None,
    nats_url: str,
    data_dir: Path | None,
    db: str | None,
    js_replicas: int,
    actor: str,
) -> None:
    """Push FILE (TOML: router, thresholds, residency, bundle_version, heartbeat_interval_s)
    as the desired config of SITE, or as the fleet defaults."""
    data = load_config_file(file)

    async def put(js: Any) -> int:
        # signed with the operator's config key: enrolled sites reject unsigned config
        store = await ConfigStore.open(
            js, data_dir=data_dir or default_data_dir(), replicas=js_replicas
        )
        return await store.put(site, data)

    version = asyncio.run(_with_js(nats_url, put))
    reg = _registry(data_dir, db)
    try:
        if site is not None:
            reg.set_desired([site], config=version, bundle=data.get("bundle_version"))
        else:
            reg.set_desired([s.site_id for s in reg.sites()], config=version)
        reg.record_action(actor, "config.set", site or "_defaults", {"version": version, **data})
    finally:
        reg.close()
    _out.print(f"config version {version} stored for {site or 'all sites (defaults)'}")


# ----- operators -----------------------------------------------------------------------------


@click.group("operator")
def operator_group() -> None:
    """Console operators (username + password)."""


_ROLE = click.Choice(ROLES)


@operator_group.command("add")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option(
    "--role",
    type=_ROLE,
    default=None,
    help="viewer (reads), operator (also config and rollouts) or admin (also the audit) "
    "[default: admin for a new operator, unchanged for a known one].",
)
@_DATA_DIR
@_DB
def _operator_add(
    username: str, password: str, role: str | None, data_dir: Path | None, db: str | None
) -> None:
    """Create or update an operator."""
    reg = _registry(data_dir, db)
    try:
        add_operator(reg, username, password)
        if role is not None:
            reg.put_operator(username, reg.operator_hash(username) or "", role)
    finally:
        reg.close()
    _out.print(f"operator {username} saved")


@click.group("operator-token")
def operator_token_group() -> None:
    """Operator API tokens (bearer tokens for the console's JSON API)."""


@operator_token_group.command("create")
@click.option("--name", default="operator", show_default=True)
@click.option("--role", type=_ROLE, default="admin", show_default=True)
@click.option(
    "--expires-days",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TOKEN_TTL_S / 86400,
    show_default=True,
    help="Days until the token stops working.",
)
@_DATA_DIR
@_DB
def _token_create(
    name: str, role: str, expires_days: float, data_dir: Path | None, db: str | None
) -> None:
    """Create a token; it is printed once, alone on the last line."""
    token = new_token()
    reg = _registry(data_dir, db)
    try:
        reg.add_token(hash_token(token), name, role, time.time() + expires_days * 86400)
        reg.record_action("cli", "operator_token.create", name)
    finally:
        reg.close()
    click.echo(token)


@operator_token_group.command("revoke")
@click.argument("name")
@_DATA_DIR
@_DB
def _token_revoke(name: str, data_dir: Path | None, db: str | None) -> None:
    """Revoke every token created with --name NAME; the console refuses them at once."""
    reg = _registry(data_dir, db)
    try:
        count = reg.revoke_tokens(name)
        if count:
            reg.record_action("cli", "operator_token.revoke", name)
    finally:
        reg.close()
    if not count:
        raise click.ClickException(f"no live operator token named {name!r}")
    click.echo(f"revoked {count} token(s) named {name}")


# ----- rollouts ------------------------------------------------------------------------------


def _percent(value: str) -> float:
    try:
        return float(value.rstrip("%"))
    except ValueError as exc:
        raise ConfigError("canary", f"not a percentage: {value!r}") from exc


@click.command("start")
@click.option("--bundle", "bundle_version", required=True, help="Bundle version to roll out.")
@click.option("--sites", default=None, help="Comma-separated site ids.")
@click.option("--all", "all_sites", is_flag=True, help="Every registered site.")
@click.option("--canary", default="10%", show_default=True, help="Canary wave size.")
@click.option("--soak", "soak_s", default=60.0, show_default=True, help="Seconds healthy per wave.")
@click.option("--max-error-rate", default=0.05, show_default=True)
@click.option("--max-p99-ms", default=2000.0, show_default=True)
@click.option(
    "--gate-heldout",
    default=None,
    help="Quality gate: held-out data spec (CSV / JSONL / CLINC150 JSON PATH#test); the bundle "
    "may not lose in-scope accuracy or OOS recall against --gate-baseline on it.",
)
@click.option(
    "--gate-bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Quality gate: a local copy of the bundle being rolled out.",
)
@click.option(
    "--gate-baseline",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Quality gate: the bundle the fleet runs now.",
)
@click.option("--gate-golden", default=None, help="Quality gate: golden queries (text -> intent).")
@click.option("--gate-tolerance", type=float, default=None, help="Allowed drop (default 0.01).")
@_DATA_DIR
@_DB
@_ACTOR
def rollout_start_cmd(
    bundle_version: str,
    sites: str | None,
    all_sites: bool,
    canary: str,
    soak_s: float,
    max_error_rate: float,
    max_p99_ms: float,
    gate_heldout: str | None,
    gate_bundle: Path | None,
    gate_baseline: Path | None,
    gate_golden: str | None,
    gate_tolerance: float | None,
    data_dir: Path | None,
    db: str | None,
    actor: str,
) -> None:
    """Start a staged rollout (carried out by the running console / ``aivos cloud fleet``).

    With --gate-heldout (and --gate-bundle, --gate-baseline) the bundle must pass the
    quality gate first; a failing one starts nothing and the refusal is in the operator log."""
    if bool(sites) == all_sites:
        raise click.UsageError("give exactly one of --sites or --all")
    targets = None if all_sites else [s.strip() for s in (sites or "").split(",") if s.strip()]
    gate = _quality_gate(gate_heldout, gate_bundle, gate_baseline, gate_golden, gate_tolerance)
    reg = _registry(data_dir, db)
    try:
        rollout_id = start_rollout(
            reg,
            bundle_version=bundle_version,
            sites=targets,
            canary_percent=_percent(canary),
            actor=actor,
            soak_s=soak_s,
            guards={"max_error_rate": max_error_rate, "max_p99_ms": max_p99_ms},
            quality_gate=gate,
        )
        rollout = reg.rollout(rollout_id)
    except QualityGateFailed as exc:
        for reason in exc.reasons:
            _out.print(f"[red]quality gate:[/red] {reason}")
        raise click.ClickException(f"bundle {bundle_version} not rolled out") from exc
    finally:
        reg.close()
    for w in rollout.wave_progress():
        _out.print(f"wave {w['wave']}: {w['total']} site(s)")
    click.echo(rollout_id)


def _quality_gate(
    heldout: str | None,
    bundle: Path | None,
    baseline: Path | None,
    golden: str | None,
    tolerance: float | None,
) -> BundleQualityGate | None:
    given = [heldout, bundle, baseline]
    if not any(given) and golden is None:
        return None
    if not all(given):
        raise click.UsageError(
            "the quality gate needs --gate-heldout, --gate-bundle and --gate-baseline"
        )
    assert heldout is not None and bundle is not None and baseline is not None
    return BundleQualityGate(
        bundle, baseline, heldout, golden, DEFAULT_TOLERANCE if tolerance is None else tolerance
    )


@click.command("list")
@_DATA_DIR
@_DB
@_JSON
def rollout_list_cmd(data_dir: Path | None, db: str | None, as_json: bool) -> None:
    """Recent rollouts with their per-wave progress."""
    reg = _registry(data_dir, db)
    try:
        rollouts = reg.rollouts()
    finally:
        reg.close()
    if as_json:
        click.echo(msgspec.json.encode(rollouts).decode())
        return
    table = Table("id", "bundle", "state", "wave", "progress", "message")
    for r in rollouts:
        progress = "  ".join(
            f"w{w['wave']}: {w['counts'].get('healthy', 0)}/{w['total']}" for w in r.wave_progress()
        )
        table.add_row(r.id, r.bundle_version, r.state, str(r.current_wave), progress, r.message)
    _out.print(table)


def _simple(action: str, fn: Callable[[Registry, str, str], Any]) -> click.Command:
    @click.command(action)
    @click.argument("rollout_id")
    @_DATA_DIR
    @_DB
    @_ACTOR
    def cmd(rollout_id: str, data_dir: Path | None, db: str | None, actor: str) -> None:
        reg = _registry(data_dir, db)
        try:
            rollout = fn(reg, rollout_id, actor)
        finally:
            reg.close()
        _out.print(f"rollout {rollout_id}: {rollout.state}")

    cmd.help = f"{action.capitalize()} a rollout."
    return cmd


rollout_pause_cmd = _simple("pause", pause_rollout)
rollout_resume_cmd = _simple("resume", resume_rollout)
rollout_abort_cmd = _simple("abort", abort_rollout)


@click.command("rollback")
@click.argument("rollout_id")
@_NATS
@_DATA_DIR
@_DB
@_ACTOR
def rollout_rollback_cmd(
    rollout_id: str, nats_url: str, data_dir: Path | None, db: str | None, actor: str
) -> None:
    """Give every site the rollout touched its previous bundle back."""
    reg = _registry(data_dir, db)

    async def run(js: Any) -> Any:
        store = await ConfigStore.open(js, data_dir=data_dir or default_data_dir())
        return await rollback_rollout(reg, store, rollout_id, actor)

    try:
        rollout = asyncio.run(_with_js(nats_url, run))
    finally:
        reg.close()
    _out.print(f"rollout {rollout_id}: {rollout.state}")


# ----- aivos cloud fleet ---------------------------------------------------------------------


@click.command("fleet")
@_NATS
@_DATA_DIR
@_DB
@_REPLICAS
@log_level_option()
def fleet_serve_cmd(
    nats_url: str, data_dir: Path | None, db: str | None, js_replicas: int, log_level: str
) -> None:
    """Run heartbeat ingest and the rollout controller (without the console). Several
    may run against one PostgreSQL --db: they share the heartbeats and hold the rollout
    lease in turn."""
    from aivos.cloud.fleet.service import FleetService

    configure_logging(log_level, json_logs=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        service = FleetService(
            data_dir or default_data_dir(), nats_url, db=db, js_replicas=js_replicas
        )
        async with service:
            await stop.wait()

    asyncio.run(main())
