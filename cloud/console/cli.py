"""`aivos cloud console`: the fleet console (also runs heartbeat ingest + rollouts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from aivos.cloud.ingest.store import default_data_dir
from aivos.shared.cli_options import (
    data_dir_option,
    db_option,
    host_option,
    js_replicas_option,
    log_level_option,
    nats_option,
    port_option,
)
from aivos.shared.logs import configure_logging

__all__ = ["console_cmd"]


@click.command("console")
@nats_option()
@data_dir_option(
    "Cloud data directory (fleet.db; cloud.db of the ingest) [default: $AIVOS_HOME/cloud]."
)
@db_option()
@js_replicas_option()
@host_option()
@port_option(default=8600)
@click.option("--secure-cookies", is_flag=True, help="Mark cookies Secure (serve behind https).")
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Serve HTTPS with this certificate (PEM; with --tls-key). Implies --secure-cookies.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Private key (PEM) of --tls-cert.",
)
@log_level_option()
def console_cmd(
    nats_url: str,
    data_dir: Path | None,
    db: str | None,
    js_replicas: int,
    host: str,
    port: int,
    secure_cookies: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    log_level: str,
) -> None:
    """Serve the fleet console (create operators with `aivos fleet operator add`).

    Several consoles may serve one PostgreSQL database (--db): heartbeats are shared
    between them and one at a time runs the rollouts (a lease on the hub)."""
    from aivos.cloud.console.run import serve

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    configure_logging(log_level, json_logs=True)
    directory = data_dir or default_data_dir()
    scheme = "https" if tls_cert else "http"
    click.echo(f"console: {scheme}://{host}:{port}", err=True)
    asyncio.run(
        serve(
            directory,
            nats_url,
            host,
            port,
            secure_cookies=secure_cookies,
            tls_cert=tls_cert,
            tls_key=tls_key,
            db=db,
            js_replicas=js_replicas,
        )
    )
