"""Run the console with uvicorn, in-process (`serve`) or from the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

import uvicorn

from aivos.cloud.console.app import ConsoleSettings, create_app

__all__ = ["serve"]


async def serve(
    data_dir: str | Path,
    nats_url: str,
    host: str = "127.0.0.1",
    port: int = 8600,
    ready_event: asyncio.Event | None = None,
    *,
    secure_cookies: bool = False,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    db: str | None = None,
    js_replicas: int = 1,
) -> None:
    """Serve the console until cancelled; sets `ready_event` once it accepts requests.
    With `tls_cert` and `tls_key` it serves HTTPS (and its cookies are Secure). With `db`
    (a ``postgresql://`` URL) the registry and the ingest records are in that database."""
    settings = ConsoleSettings(
        data_dir=Path(data_dir),
        nats_url=nats_url,
        secure_cookies=secure_cookies or tls_cert is not None,
        db=db,
        js_replicas=js_replicas,
    )
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if ready_event is not None:
            ready_event.set()
        await task
    finally:
        server.should_exit = True
        if not task.done():
            await task
