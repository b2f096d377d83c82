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
import os
import signal
from pathlib import Path

import click
import msgspec
from rich import box
from rich.console import Console
from rich.table import Table

from aivos.cloud.models.autoscale import ScalePolicy
from aivos.cloud.models.report import (
    PoolState,
    ShownCatalogue,
    catalogue_path,
    fleet_catalogue,
    models_report,
    pool_states,
    quota_states,
    usage_path,
)
from aivos.cloud.models.usage import UsageLedger, UsageRow, read_usage, utc_day
from aivos.cloud.worker.catalogue import Catalogue, load_catalogue
from aivos.shared.cli_options import data_dir_option, json_option, log_level_option, nats_option
from aivos.shared.errors import ConfigError, LinkDown
from aivos.shared.logs import configure_logging
from aivos.shared.natsconf.connect import close_nats, connect_nats

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
            await close_nats(nc)

    asyncio.run(run())


@click.command("workers")
@nats_option("NATS URL (hub or a leaf).")
@_catalogue_option
@click.option(
    "--model",
    default=None,
    help="Catalogue entry the pool serves [default: a pool per entry, following pushes].",
)
@click.option(
    "--min",
    "min_workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Fewest workers (without --model: where an entry sets no pool.min).",
)
@click.option(
    "--max",
    "max_workers",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Most workers (without --model: where an entry sets no pool.max).",
)
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
@click.option(
    "--exit-with-parent/--no-exit-with-parent",
    default=True,
    show_default=True,
    help="Stop the workers and exit when the process that started this one goes away "
    "(--no-exit-with-parent for a pool started with nohup or disown).",
)
@click.option(
    "--hub-timeout",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Stop the workers and exit when NATS stays unreachable this many seconds (0: never).",
)
@data_dir_option("Where worker logs go (DATA_DIR/logs) [default: not kept].")
@log_level_option()
def workers_cmd(
    nats_url: str,
    catalogue: Path,
    model: str | None,
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
    exit_with_parent: bool,
    hub_timeout: float,
    data_dir: Path | None,
    log_level: str,
) -> None:
    """Run an autoscaled pool of worker processes for one catalogue model until SIGTERM;
    without --model, one pool per catalogue entry: pools start and stop as pushed
    catalogues add and remove entries."""
    from aivos.cloud.models.pool import WorkerPool, serve_metrics
    from aivos.cloud.models.pool_set import PoolSet

    configure_logging(log_level, json_logs=True)
    cat = load_catalogue(catalogue)  # fail before starting anything
    if model is not None:
        cat.entry(model)
    policy = ScalePolicy(
        min_workers=min_workers,
        max_workers=max_workers,
        queue_up=queue_up,
        p95_up_ms=p95_up_ms,
        up_after_s=up_after,
        down_after_s=down_after,
        cooldown_s=cooldown,
    ).validate()
    log_dir = data_dir / "logs" if data_dir else None
    parent = os.getppid() if exit_with_parent else None
    timeout = hub_timeout or None
    supervisor: WorkerPool | PoolSet
    if model is None:
        if metrics_port is not None:
            raise click.UsageError("--metrics-port needs --model (one pool per process)")
        supervisor = PoolSet(
            nats_url,
            catalogue.resolve(),
            policy,
            log_dir=log_dir,
            watch_catalogue=watch_catalogue,
            parent_pid=parent,
            hub_timeout_s=timeout,
        )
    else:
        supervisor = WorkerPool(
            nats_url,
            catalogue.resolve(),
            model,
            policy,
            log_dir=log_dir,
            watch_catalogue=watch_catalogue,
            parent_pid=parent,
            hub_timeout_s=timeout,
        )

    async def run() -> None:
        nc = await connect_nats(nats_url, name=f"pool-{model or 'all'}")
        server = None
        if metrics_port is not None and isinstance(supervisor, WorkerPool):
            server = await serve_metrics(supervisor.render_metrics, metrics_host, metrics_port)
        try:
            await supervisor.run(nc, _stop_event())
        finally:
            if server is not None:
                server.close()
            await close_nats(nc)

    asyncio.run(run())
    if supervisor.exit_reason is not None:
        raise click.ClickException(f"workers stopped: {supervisor.exit_reason}")


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


def _shown_catalogue(
    nats_url: str | None, file: Path | None, *, pools: bool = False
) -> tuple[ShownCatalogue, dict[str, PoolState] | None]:
    """The catalogue the fleet runs (the pushed one, asked of `nats_url`), else `file`; with
    `pools`, also what the workers report (None: no hub to ask)."""

    async def read() -> tuple[ShownCatalogue, dict[str, PoolState] | None]:
        if nats_url is None:
            return await fleet_catalogue(None, file, no_hub="no --nats given"), None
        try:
            nc = await connect_nats(nats_url, name="catalogue-read", connect_timeout_s=5)
        except LinkDown as exc:
            return await fleet_catalogue(None, file, no_hub=f"hub unreachable: {exc}"), None
        try:
            if not pools:
                return await fleet_catalogue(nc, file), None
            return await asyncio.gather(fleet_catalogue(nc, file), pool_states(nc))
        finally:
            await close_nats(nc)

    try:
        return asyncio.run(read())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


_read_nats_option = nats_option(
    "NATS URL (hub): show the pushed catalogue [default: the catalogue file only].",
    default=None,
)


@click.command("costs")
@data_dir_option("Where model_usage.sqlite lives [default: the cloud data dir].")
@_read_nats_option
@click.option("--day", default=None, help="UTC day YYYY-MM-DD [default: today].")
@click.option("--all-days", is_flag=True, help="Every day recorded.")
@json_option()
def costs_cmd(
    data_dir: Path | None, nats_url: str | None, day: str | None, all_days: bool, as_json: bool
) -> None:
    """Tokens and cost of generation per site and model, and the daily budgets (per site
    and intent) of the catalogue the fleet runs (pushed, else DATA_DIR/catalogue.toml)
    with what is used of them."""
    rows = read_usage(usage_path(data_dir), None if all_days else (day or utc_day()))
    report = summarize(None, rows)
    shown, _ = _shown_catalogue(nats_url, catalogue_path(data_dir))
    cat = shown.catalogue
    quotas = quota_states(cat, usage_path(data_dir), day or utc_day()) if cat else []
    report["quotas"] = [msgspec.to_builtins(q) for q in quotas]
    report["catalogue"] = shown.summary()
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
    out = Console()
    out.print(table)
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
        out.print(budgets)
    out.print(f"budgets from: {shown.describe()}", highlight=False)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


@click.group("models", invoke_without_command=True)
@click.option(
    "--catalogue",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Catalogue file shown when nothing is pushed [default: DATA_DIR/catalogue.toml].",
)
@_read_nats_option
@data_dir_option("Where model_usage.sqlite lives [default: the cloud data dir].")
@json_option()
@click.pass_context
def models_cmd(
    ctx: click.Context,
    catalogue: Path | None,
    nats_url: str | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """The catalogue the fleet runs (pushed, with its version; else the file): models,
    versions, limits, classes, and today's usage, p95 and cost. `aivos cloud models push`
    stores a new catalogue for the running cloud."""
    if ctx.invoked_subcommand is not None:
        return
    shown, pools = _shown_catalogue(nats_url, catalogue or catalogue_path(data_dir), pools=True)
    cat = shown.catalogue
    if cat is None:
        raise click.ClickException(f"no catalogue to list: {shown.describe()}")
    usage = {m.name: m for m in models_report(cat, usage_path(data_dir))}
    out = []
    for name, entry in cat.models.items():
        used = usage[name]
        pool = None if pools is None else pools.get(name, PoolState())
        out.append(
            {
                "name": name,
                "version": entry.version,
                "backend": entry.backend,
                "limits": msgspec.to_builtins(entry.limits),
                "pool": msgspec.to_builtins(entry.pool),
                "cost_per_1k_tokens": entry.cost_per_1k_tokens,
                "classes": used.classes,
                "default": cat.default_model == name,
                # None without --nats: nothing asked of the workers
                "workers": None if pool is None else pool.workers,
                "queue_depth": None if pool is None else pool.waiting,
                "requests_today": used.requests,
                "share_primary": used.share_primary,
                "share_fallback": used.share_fallback,
                "p95_ms": used.p95_ms,
                "tokens_today": used.tokens,
                "cost_today": used.cost,
            }
        )
    if as_json:
        body = {
            "catalogue": shown.summary(),
            "models": out,
            "classes": {c: list(cls.chain) for c, cls in cat.classes.items()},
        }
        click.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    names = [f"{m['name']}@{m['version']}" + ("*" if m["default"] else "") for m in out]
    notes = ["pool: workers reporting; queue: requests waiting for a slot (with --nats)"]
    notes.append("fallback: the share answered as a fallback, the rest as the class's primary")
    if cat.default_model:
        notes.append("*: also serves requests naming no class")
    table = Table(
        title=f"today (UTC) · {shown.describe()}",
        caption="\n".join(notes),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("model@version", no_wrap=True, min_width=max(map(len, names)))
    table.add_column("backend", no_wrap=True, min_width=8)
    for header in ("pool", "queue", "answers", "fallback", "p95 ms", "tokens", "cost"):
        table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    for name, m in zip(names, out, strict=True):
        p95 = m["p95_ms"]
        table.add_row(
            name,
            str(m["backend"]),
            "-" if m["workers"] is None else str(m["workers"]),
            "-" if m["queue_depth"] is None else str(m["queue_depth"]),
            str(m["requests_today"]),
            _pct(m["share_fallback"]),  # type: ignore[arg-type]
            "-" if p95 is None else f"{p95:.0f}",
            str(m["tokens_today"]),
            f"{m['cost_today']:.4f}",
        )
    console = Console()
    console.print(table)
    for name, cls in cat.classes.items():  # the chains, primary first
        console.print(f"class {name}: {' → '.join(cls.chain)}", highlight=False)


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
            await close_nats(nc)

    version = asyncio.run(push())
    if as_json:
        click.echo(json.dumps({"version": version, "models": sorted(cat.models)}))
    else:
        click.echo(f"catalogue version {version} stored ({len(cat.models)} models)")
