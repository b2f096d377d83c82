"""`aivos cloud router | workers | models [push] | costs`: model routing, pools, usage and
cost.

Usage counts live in ``DATA_DIR/model_usage.sqlite`` (``DATA_DIR`` defaults to the cloud
data dir of `aivos up`), written by the router, read by `models` and `costs`.

The ``--catalogue`` file of `router` and `workers` is the bootstrap: both then watch the
catalogue pushed with `aivos cloud models push` (`cloud.models.catalogue_store`) and apply
a newer one without a restart (``--no-watch-catalogue``: the file only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from aivos.cloud.models.autoscale import ScalePolicy
from aivos.cloud.models.report import load_optional_catalogue, quota_states, usage_path
from aivos.cloud.models.usage import UsageLedger, UsageRow, read_usage, utc_day
from aivos.cloud.worker.catalogue import Catalogue, load_catalogue
from aivos.shared.cli_options import data_dir_option, json_option, log_level_option, nats_option
from aivos.shared.errors import ConfigError
from aivos.shared.logs import configure_logging
from aivos.shared.natsconf.connect import connect_nats

__all__ = [
    "router_cmd",
    "workers_cmd",
    "models_cmd",
    "push_cmd",
    "costs_cmd",
    "usage_path",
    "summarize",
]

log = logging.getLogger(__name__)

_catalogue_option = click.option(
    "--catalogue",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="Model catalogue (TOML).",
)
_watch_option = click.option(
    "--watch-catalogue/--no-watch-catalogue",
    default=True,
    show_default=True,
    help="Apply catalogues pushed with `aivos cloud models push` without a restart.",
)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


@click.command("router")
@nats_option("NATS URL (hub).")
@_catalogue_option
@_watch_option
@click.option(
    "--accept-timeout",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds to wait for a worker's first sign of life before the next model.",
)
@data_dir_option("Where model_usage.sqlite lives [default: the cloud data dir].")
@log_level_option()
def router_cmd(
    nats_url: str,
    catalogue: Path,
    watch_catalogue: bool,
    accept_timeout: float,
    data_dir: Path | None,
    log_level: str,
) -> None:
    """Route requests naming a model class (aivos.gen.<site>.<class>) over the catalogue."""
    from aivos.cloud.models.catalogue_store import CatalogueWatch
    from aivos.cloud.models.router import ModelRouter

    configure_logging(log_level, json_logs=True)
    cat = load_catalogue(catalogue)

    async def run() -> None:
        router = ModelRouter(
            cat, ledger=UsageLedger(cat, usage_path(data_dir)), accept_timeout_s=accept_timeout
        )
        watch = CatalogueWatch(router.apply_catalogue)
        nc = await connect_nats(nats_url, name="model-router")
        stop = _stop_event()
        try:
            await router.start(nc)
            if watch_catalogue:
                watch.start(nc)
            await stop.wait()
        finally:
            await watch.stop()
            await router.drain()
            with contextlib.suppress(Exception):
                await nc.drain()

    asyncio.run(run())


@click.command("workers")
@nats_option("NATS URL (hub or a leaf).")
@_catalogue_option
@click.option("--model", required=True, help="Catalogue entry the pool serves.")
@click.option("--min", "min_workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--max", "max_workers", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--queue-up",
    type=float,
    default=1.0,
    show_default=True,
    help="Grow when this many requests per worker wait for a slot.",
)
@click.option("--p95-up-ms", type=float, default=None, help="Grow when the p95 exceeds this.")
@click.option(
    "--up-after",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds a grow signal must hold.",
)
@click.option(
    "--down-after",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds a shrink signal must hold.",
)
@click.option(
    "--cooldown", type=float, default=3.0, show_default=True, help="Seconds between two resizes."
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@_watch_option
@data_dir_option("Where worker logs go (DATA_DIR/logs) [default: not kept].")
@log_level_option()
def workers_cmd(
    nats_url: str,
    catalogue: Path,
    model: str,
    min_workers: int,
    max_workers: int,
    queue_up: float,
    p95_up_ms: float | None,
    up_after: float,
    down_after: float,
    cooldown: float,
    metrics_port: int | None,
    metrics_host: str,
    watch_catalogue: bool,
    data_dir: Path | None,
    log_level: str,
) -> None:
    """Run an autoscaled pool of worker processes for one catalogue model until SIGTERM."""
    from aivos.cloud.models.pool import WorkerPool, serve_metrics

    configure_logging(log_level, json_logs=True)
    load_catalogue(catalogue).entry(model)  # fail before starting anything
    policy = ScalePolicy(
        min_workers=min_workers,
        max_workers=max_workers,
        queue_up=queue_up,
        p95_up_ms=p95_up_ms,
        up_after_s=up_after,
        down_after_s=down_after,
        cooldown_s=cooldown,
    ).validate()
    pool = WorkerPool(
        nats_url,
        catalogue.resolve(),
        model,
        policy,
        log_dir=data_dir / "logs" if data_dir else None,
        watch_catalogue=watch_catalogue,
    )

    async def run() -> None:
        nc = await connect_nats(nats_url, name=f"pool-{model}")
        server = None
        if metrics_port is not None:
            server = await serve_metrics(pool.render_metrics, metrics_host, metrics_port)
        try:
            await pool.run(nc, _stop_event())
        finally:
            if server is not None:
                server.close()
            with contextlib.suppress(Exception):
                await nc.drain()

    asyncio.run(run())


def summarize(catalogue: Catalogue | None, rows: list[UsageRow]) -> dict[str, object]:
    """Totals per site and per model (requests, fallback share, tokens, cost)."""

    def add(into: dict[str, dict[str, float]], key: str, row: UsageRow) -> None:
        t = into.setdefault(
            key, {"requests": 0, "fallback": 0, "tokens_in": 0, "tokens_out": 0, "cost": 0.0}
        )
        t["requests"] += row.requests
        t["fallback"] += row.fallback
        t["tokens_in"] += row.tokens_in
        t["tokens_out"] += row.tokens_out
        t["cost"] += row.cost

    sites: dict[str, dict[str, float]] = {}
    models: dict[str, dict[str, float]] = {}
    for row in rows:
        add(sites, row.site, row)
        add(models, row.model, row)
    total = sum(r.requests for r in rows)
    return {
        "sites": sites,
        "models": models,
        "requests": total,
        "fallback_share": (sum(r.fallback for r in rows) / total) if total else 0.0,
        "cost": sum(r.cost for r in rows),
        "rows": [msgspec.to_builtins(r) for r in rows],
    }


@click.command("costs")
@data_dir_option("Where model_usage.sqlite lives [default: the cloud data dir].")
@click.option("--day", default=None, help="UTC day YYYY-MM-DD [default: today].")
@click.option("--all-days", is_flag=True, help="Every day recorded.")
@json_option()
def costs_cmd(data_dir: Path | None, day: str | None, all_days: bool, as_json: bool) -> None:
    """Tokens and cost of generation per site and model, and the daily budgets (per site
    and intent) of DATA_DIR/catalogue.toml with what is used of them."""
    rows = read_usage(usage_path(data_dir), None if all_days else (day or utc_day()))
    report = summarize(None, rows)
    catalogue = load_optional_catalogue(data_dir)  # DATA_DIR/catalogue.toml: its quotas
    quotas = quota_states(catalogue, usage_path(data_dir), day or utc_day()) if catalogue else []
    report["quotas"] = [msgspec.to_builtins(q) for q in quotas]
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    table = Table(
        "site",
        "model",
        "version",
        "requests",
        "fallback",
        "tokens in",
        "tokens out",
        "cost",
        title=f"generation usage ({'all days' if all_days else day or utc_day()})",
    )
    for r in rows:
        table.add_row(
            r.site,
            r.model,
            r.version,
            str(r.requests),
            str(r.fallback),
            str(r.tokens_in),
            str(r.tokens_out),
            f"{r.cost:.4f}",
        )
    Console().print(table)
    if quotas:
        budgets = Table("site", "intent", "used", "budget", "state", title="daily budgets")
        for q in quotas:
            budgets.add_row(
                q.site,
                q.intent or "(site)",
                str(q.used),
                f"{q.limit} {q.what}",
                "USED UP" if q.exhausted else "ok",
            )
        Console().print(budgets)


@click.group("models", invoke_without_command=True)
@click.option(
    "--catalogue",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Model catalogue (TOML) to list.",
)
@data_dir_option("Where model_usage.sqlite lives [default: the cloud data dir].")
@json_option()
@click.pass_context
def models_cmd(
    ctx: click.Context, catalogue: Path | None, data_dir: Path | None, as_json: bool
) -> None:
    """The catalogue: models, versions, limits, classes, and today's usage and cost.
    `aivos cloud models push` stores a new catalogue for the running cloud."""
    if ctx.invoked_subcommand is not None:
        return
    if catalogue is None:
        raise click.UsageError("--catalogue FILE is required to list the catalogue")
    cat = load_catalogue(catalogue)
    today = summarize(cat, read_usage(usage_path(data_dir), utc_day()))["models"]
    assert isinstance(today, dict)
    out = []
    for name, entry in cat.models.items():
        used = today.get(name, {})
        requests = int(used.get("requests", 0))
        fallback = int(used.get("fallback", 0))
        out.append(
            {
                "name": name,
                "version": entry.version,
                "backend": entry.backend,
                "limits": msgspec.to_builtins(entry.limits),
                "cost_per_1k_tokens": entry.cost_per_1k_tokens,
                "classes": [
                    c
                    for c, cls in cat.classes.items()
                    if name in (i.partition("@")[0] for i in cls.chain)
                ],
                "default": cat.default_model == name,
                "requests_today": requests,
                "share_primary": (requests - fallback) / requests if requests else None,
                "share_fallback": fallback / requests if requests else None,
                "tokens_today": int(used.get("tokens_in", 0) + used.get("tokens_out", 0)),
                "cost_today": float(used.get("cost", 0.0)),
            }
        )
    if as_json:
        click.echo(
            json.dumps(
                {"models": out, "classes": {c: list(cls.chain) for c, cls in cat.classes.items()}},
                indent=2,
                sort_keys=True,
            )
        )
        return
    table = Table(
        "model",
        "version",
        "backend",
        "classes",
        "requests today",
        "fallback share",
        "tokens today",
        "cost today",
    )
    for m in out:
        share = m["share_fallback"]
        table.add_row(
            str(m["name"]),
            str(m["version"]),
            str(m["backend"]),
            ",".join(m["classes"]),  # type: ignore[arg-type]
            str(m["requests_today"]),
            "-" if share is None else f"{share:.0%}",
            str(m["tokens_today"]),
            f"{m['cost_today']:.4f}",
        )
    Console().print(table)


@models_cmd.command("push")
@nats_option("NATS URL (hub).")
@click.option(
    "--catalogue",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="Model catalogue (TOML) to validate and store.",
)
@click.option("--js-replicas", type=click.IntRange(min=1), default=1, show_default=True)
@json_option()
def push_cmd(nats_url: str, catalogue: Path, js_replicas: int, as_json: bool) -> None:
    """Validate a catalogue and store it (KV bucket aivos_catalogue), versioned: routers and
    pools apply it without a restart. A catalogue that does not validate is refused and
    the stored one stays."""
    from aivos.cloud.models.catalogue_store import CatalogueStore
    from aivos.shared.subjects import HUB_DOMAIN

    text = catalogue.read_text(encoding="utf-8")
    try:
        from aivos.cloud.worker.catalogue import parse_catalogue

        cat = parse_catalogue(text, str(catalogue))
    except ConfigError as exc:
        raise click.ClickException(f"catalogue refused, nothing stored: {exc}") from exc

    async def push() -> int:
        nc = await connect_nats(nats_url, name="catalogue-push")
        try:
            js = nc.jetstream(domain=HUB_DOMAIN)
            store = await CatalogueStore.open(js, replicas=js_replicas)
            return await store.push(text, str(catalogue))
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()

    version = asyncio.run(push())
    if as_json:
        click.echo(json.dumps({"version": version, "models": sorted(cat.models)}))
    else:
        click.echo(f"catalogue version {version} stored ({len(cat.models)} models)")
