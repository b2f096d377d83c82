"""`aivos cloud console`: the fleet console (also runs heartbeat ingest + rollouts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from aivos.cloud.ingest.store import default_data_dir
from aivos.shared.logs import configure_logging

__all__ = ["console_cmd"]


@click.command("console")
@click.option("--nats", "nats_url", default="nats://127.0.0.1:4222", show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cloud data directory (fleet.db; cloud.db of the ingest) [default: $AIVOS_HOME/cloud].",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8600, show_default=True)
@click.option("--secure-cookies", is_flag=True, help="Mark cookies Secure (serve behind https).")
@click.option("--log-level", default="INFO", show_default=True)
def console_cmd(
    nats_url: str,
    data_dir: Path | None,
    host: str,
    port: int,
    secure_cookies: bool,
    log_level: str,
) -> None:
    """Serve the fleet console (create operators with `aivos fleet operator add`)."""
    from aivos.cloud.console.run import serve

    configure_logging(log_level, json_logs=True)
    directory = data_dir or default_data_dir()
    click.echo(f"console: http://{host}:{port}", err=True)
    asyncio.run(serve(directory, nats_url, host, port, secure_cookies=secure_cookies))
