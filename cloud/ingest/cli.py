"""`aivos cloud ingest | stats | audit`: run the sync ingest, and read the cloud store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from aivos.cloud.ingest.store import CloudStore, default_data_dir
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
from aivos.shared.logs import configure_logging

__all__ = ["ingest_cmd", "stats_cmd", "audit_cmd"]

log = logging.getLogger(__name__)

_DATA_DIR = data_dir_option(CLOUD_DATA_DIR_HELP)


def _dir(data_dir: Path | None) -> Path:
    return data_dir if data_dir is not None else default_data_dir()


@click.command("ingest")
@nats_option("NATS URL of the hub (several hub nodes: comma-separated).")
@_DATA_DIR
@db_option()
@js_replicas_option()
@click.option(
    "--durable",
    default="aivos-ingest",
    show_default=True,
    help="Durable consumer name (one per cloud store).",
)
@click.option("--batch", default=1000, show_default=True, help="Records per fetch/commit.")
@click.option(
    "--ack-wait",
    default=30.0,
    show_default=True,
    help="Seconds before an unacknowledged record is redelivered.",
)
@click.option(
    "--duplicate-window",
    default=120.0,
    show_default=True,
    help="Dedup window (s) of the AIVOS_SYNC stream when this creates it.",
)
@log_level_option()
def ingest_cmd(
    nats_url: str,
    data_dir: Path | None,
    db: str | None,
    js_replicas: int,
    durable: str,
    batch: int,
    ack_wait: float,
    duplicate_window: float,
    log_level: str,
) -> None:
    """Consume the hub stream AIVOS_SYNC into the cloud store until SIGTERM/SIGINT.
    Replicas (same --durable, same --db) share the work; each record is stored once."""
    configure_logging(log_level, json_logs=True)
    from aivos.cloud.ingest.consumer import run_ingest  # NATS client: only for this command

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        stats = await run_ingest(
            nats_url,
            _dir(data_dir),
            stop,
            durable=durable,
            batch=batch,
            ack_wait_s=ack_wait,
            duplicate_window_s=duplicate_window,
            db=db,
            replicas=js_replicas,
        )
        log.info(
            "ingest stopped: received %d, inserted %d, duplicates %d, rejected %d",
            stats.received,
            stats.inserted,
            stats.duplicates,
            stats.rejected,
        )

    asyncio.run(main())


def _open_existing(data_dir: Path | None, db: str | None) -> CloudStore:
    return CloudStore.open(_dir(data_dir), db=db)


@click.command("stats")
@_DATA_DIR
@db_option()
@json_option()
def stats_cmd(data_dir: Path | None, db: str | None, as_json: bool) -> None:
    """Counts of synced records per site and data class."""
    store = _open_existing(data_dir, db)
    try:
        counts = store.counts()
    finally:
        store.close()
    if as_json:
        sys.stdout.write(msgspec.json.encode({"sites": counts}).decode() + "\n")
        return
    table = Table(title="Synced records")
    table.add_column("site")
    kinds = sorted({k for per_site in counts.values() for k in per_site})
    for kind in kinds:
        table.add_column(kind, justify="right")
    for site, per_site in counts.items():
        table.add_row(site, *(str(per_site.get(k, 0)) for k in kinds))
    Console().print(table)


@click.command("audit")
@_DATA_DIR
@db_option()
@site_option("Only this site.")
@click.option("--limit", default=None, type=int, help="At most N records.")
@json_option("One JSON record per line.")
def audit_cmd(
    data_dir: Path | None, db: str | None, site: str | None, limit: int | None, as_json: bool
) -> None:
    """Synced audit records, per site in the site's order."""
    store = _open_existing(data_dir, db)
    try:
        records = store.records(data_class="audit", site=site, limit=limit)
    finally:
        store.close()
    if as_json:
        out = sys.stdout
        for record in records:
            out.write(msgspec.json.encode(record).decode() + "\n")
        return
    table = Table(title="Synced audit records")
    for col in ("site", "seq", "id", "kind", "intent", "decision", "trace id"):
        table.add_column(col)
    for r in records:
        p = r.payload if isinstance(r.payload, dict) else {}
        table.add_row(
            r.site,
            str(r.seq),
            r.id,
            r.kind,
            str(p.get("intent") or ""),
            str(p.get("decision") or ""),
            r.trace_id or "",
        )
    Console().print(table)
