"""`aivos edge serve`: run the branch-site agent."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import uvicorn

from aivos.shared.cli_options import (
    bundle_option,
    config_option,
    data_dir_option,
    host_option,
    nats_option,
    port_option,
)
from aivos.shared.logs import configure_logging

__all__ = ["serve_cmd"]

log = logging.getLogger("aivos.edge")


@click.command("serve")
@data_dir_option("All agent state lives here.", required=True)
@bundle_option()
@config_option("TOML settings file.")
@host_option("Bind address (default 127.0.0.1).", default=None)
@port_option("Port (default 8080; 0 picks a free one).", default=None)
@nats_option("NATS URL of the site leaf node (or the hub).", default=None)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Serve HTTPS with this certificate (PEM; with --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Private key (PEM) of --tls-cert.",
)
def serve_cmd(
    data_dir: Path,
    bundle: Path | None,
    config_path: Path | None,
    host: str | None,
    port: int | None,
    nats_url: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Serve the local API until interrupted (plain HTTP, or HTTPS with --tls-cert and
    --tls-key; the bind address stays 127.0.0.1 unless --host or the config changes it)."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    from aivos.edge.api.app import create_app
    from aivos.edge.batcher import limit_blas_threads
    from aivos.edge.settings import load_edge_settings

    limit_blas_threads()  # here, in the main thread: see its docstring
    settings = load_edge_settings(
        config_path,
        **{
            "data_dir": str(data_dir),
            "model.bundle": str(bundle) if bundle else None,
            "server.host": host,
            "server.port": port,
            "uplink.nats_url": nats_url,
        },
    )
    configure_logging(settings.server.log_level, settings.server.json_logs)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        access_log=False,
        # nothing in the agent reads the client address (tokens identify callers), so the
        # X-Forwarded-For middleware would only cost ~1 % of the event loop per request
        proxy_headers=False,
        lifespan="on",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    _ReadyLoggingServer(config).run()


class _ReadyLoggingServer(uvicorn.Server):
    """Logs one line with the bound URL once the agent accepts connections."""

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            scheme = "https" if self.config.is_ssl else "http"
            log.info(
                "edge agent ready at %s://%s:%s",
                scheme,
                host,
                port,
                extra={"fields": {"url": f"{scheme}://{host}:{port}"}},
            )
