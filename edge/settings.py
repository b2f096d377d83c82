"""Typed settings of the edge agent, built once at start-up (TOML file + `AIVOS_*` env)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from aivos.edge.fleet.options import FleetOptions
from aivos.edge.router import RouterPolicy
from aivos.edge.workflows.settings import WorkflowSettings
from aivos.shared.config import load_config
from aivos.shared.paths import default_bundle_dir
from aivos.shared.residency import ResidencyPolicy, recommended_policy

__all__ = [
    "EdgeSettings",
    "ServerSettings",
    "ModelSettings",
    "LimitSettings",
    "KnowledgeSettings",
    "MemorySettings",
    "OutboxSettings",
    "JobSettings",
    "UplinkSettings",
    "StoreSettings",
    "RetentionSettings",
    "CacheSettings",
    "load_edge_settings",
]

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[int, Meta(gt=0)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class ServerSettings(_Section, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    json_logs: bool = True
    log_level: str = "INFO"


class ModelSettings(_Section, frozen=True, forbid_unknown_fields=True):
    bundle: str | None = None  # directory; None = the default bundle
    # Execution providers in order of preference: "cpu", "openvino", "qnn" or any
    # onnxruntime provider name; CPU is always tried last. The one in use is proven by a real
    # query at start-up and reported in /readyz, heartbeats and `aivos doctor`
    # (docs/accelerators.md).
    providers: list[str] = msgspec.field(default_factory=lambda: ["CPUExecutionProvider"])
    # Per provider (short or full name), handed to onnxruntime as strings, e.g.
    # [model.provider_options.openvino] device_type = "CPU", precision = "FP32", cache_dir = "..."
    provider_options: dict[str, dict[str, str | int | float | bool]] = msgspec.field(
        default_factory=dict
    )
    # One thread per ORT call: waking a second intra-op thread costs more than it saves on
    # short queries. One batch in flight per core: on a 2-core box one batch worker saturates
    # at ~420 req/s (the model thread alone ~2.3 ms per query), two reach 660 and carry a
    # paced 600 req/s (docs/performance.md, Dec 3).
    intra_op_threads: Annotated[int, Meta(ge=0)] = 1  # 0 = onnxruntime's choice
    max_batch: Annotated[int, Meta(ge=1, le=256)] = 32
    max_wait_ms: Annotated[float, Meta(ge=0, le=50)] = 0.0
    concurrent_batches: Annotated[int, Meta(ge=0, le=64)] = 0  # 0 = one per CPU core
    # Correct misspelt query words before the intent classifier sees them (the text kept,
    # masked, escalated and shown stays as written): edge/intent/spelling.py, docs/models.md.
    spelling: bool = True

    @property
    def batch_workers(self) -> int:
        return self.concurrent_batches or max(1, os.cpu_count() or 1)


class LimitSettings(_Section, frozen=True, forbid_unknown_fields=True):
    max_body_bytes: Positive = 64 * 1024
    max_text_chars: Positive = 4000
    rate_per_second: Annotated[float, Meta(gt=0)] = 2000.0  # per token
    rate_burst: Positive = 4000
    # per client address: open routes (/healthz, /readyz, /schema, webhooks) and failed
    # bearer authentications; a valid token has only its own limit above
    anon_rate_per_second: Annotated[float, Meta(gt=0)] = 20.0
    anon_rate_burst: Positive = 40


class KnowledgeSettings(_Section, frozen=True, forbid_unknown_fields=True):
    top_k: Annotated[int, Meta(ge=0, le=20)] = 3
    min_score: Annotated[float, Meta(ge=-1, le=1)] = 0.25
    # a local route is answered from a passage only at or above this score; below it the
    # request escalates when the site has a generator (router.settle, docs/models.md)
    answer_min_score: Annotated[float, Meta(ge=-1, le=1)] = 0.3
    # how far `POST /v1/feedback` votes can move a passage (edge/feedback.py); 0 = off
    feedback_weight: Annotated[float, Meta(ge=0, le=1)] = 0.1
    feedback_tau: Annotated[float, Meta(ge=0, lt=1)] = 0.7  # vote similarity floor, same file


class MemorySettings(_Section, frozen=True, forbid_unknown_fields=True):
    turns: Annotated[int, Meta(ge=0, le=200)] = 10
    retention_days: Annotated[float, Meta(gt=0)] = 30.0
    max_facts_per_session: Annotated[int, Meta(ge=1, le=100_000)] = 200


class OutboxSettings(_Section, frozen=True, forbid_unknown_fields=True):
    quota: Positive = 100_000
    # what a full outbox does (docs/store.md): "defer" = decisions go on, audit rows are
    # kept and queued deferred, other records dropped (counted), an alarm is raised;
    # "refuse" = a write that must sync fails (507 quota_exceeded)
    when_full: Literal["defer", "refuse"] = "defer"


class JobSettings(_Section, frozen=True, forbid_unknown_fields=True):
    # the only hosts job callbacks may target: "host" (any port) or "host:port";
    # loopback (127.0.0.1, ::1, localhost) too only when listed
    callback_allow_hosts: list[str] = msgspec.field(default_factory=list)
    callback_timeout_s: Annotated[float, Meta(gt=0, le=60)] = 5.0
    # file holding the key callbacks are signed with (X-Aivos-Signature, the webhook
    # scheme); None = DATA_DIR/callback-secret, created on first start (mode 0600)
    callback_secret_file: str | None = None


class UplinkSettings(_Section, frozen=True, forbid_unknown_fields=True):
    nats_url: str | None = None  # the site's leaf node (or the hub); None = offline box
    region: str = "local"
    escalation_budget_ms: Annotated[int, Meta(ge=50, le=600_000)] = 8000  # synchronous answers
    job_budget_ms: Annotated[int, Meta(ge=50, le=600_000)] = 60_000  # background job completion
    max_tokens: Annotated[int, Meta(ge=1, le=4096)] = 128
    retry_interval_s: Annotated[float, Meta(gt=0)] = 2.0


class TracingSettings(_Section, frozen=True, forbid_unknown_fields=True):
    otlp_endpoint: str | None = None  # e.g. http://collector:4318/v1/traces; None = no export


class StoreSettings(_Section, frozen=True, forbid_unknown_fields=True):
    # /readyz reports the store not writable below this much free space on its file system
    min_free_mb: Annotated[float, Meta(ge=0)] = 64.0


class RetentionSettings(_Section, frozen=True, forbid_unknown_fields=True):
    """What the periodic retention task deletes (memory uses `memory.retention_days`)."""

    interval_s: Annotated[float, Meta(gt=0)] = 3600.0
    outbox_sent_days: Annotated[float, Meta(gt=0)] = 7.0  # records already synced
    jobs_days: Annotated[float, Meta(gt=0)] = 30.0  # jobs done, failed or cancelled
    runs_days: Annotated[float, Meta(gt=0)] = 90.0  # finished workflow runs and their steps
    # hard examples the residency policy keeps on site, not yet labelled (`aivos candidates`)
    candidates_days: Annotated[float, Meta(gt=0)] = 30.0
    # feedback votes, each with the rated query's embedding (edge/feedback.py): derived from
    # what a customer typed, so it does not stay for ever; re-ranking learns from this window
    feedback_days: Annotated[float, Meta(gt=0)] = 180.0


class CacheSettings(_Section, frozen=True, forbid_unknown_fields=True):
    """The result cache of repeated queries (edge/cache.py); session requests use it only
    when the router policy sets `cache_sessions`."""

    max_entries: Annotated[int, Meta(ge=0, le=1_000_000)] = 4096  # 0 = no cache
    max_text_chars: Annotated[int, Meta(ge=1, le=4000)] = 512


class EdgeSettings(_Section, frozen=True, forbid_unknown_fields=True):
    data_dir: str = "./var/edge"
    site_id: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")] = "site-1"
    router_policy: str | None = None  # path to a router policy TOML; else [router]
    server: ServerSettings = ServerSettings()
    model: ModelSettings = ModelSettings()
    limits: LimitSettings = LimitSettings()
    router: RouterPolicy = RouterPolicy()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    memory: MemorySettings = MemorySettings()
    outbox: OutboxSettings = OutboxSettings()
    jobs: JobSettings = JobSettings()
    uplink: UplinkSettings = UplinkSettings()
    # Classes without a rule stay on site (deny by default). The shipped rules let escalation
    # prompts and audit leave masked and keep memory local; override with [residency].
    residency: ResidencyPolicy = msgspec.field(default_factory=recommended_policy)
    workflows: WorkflowSettings = WorkflowSettings()
    fleet: FleetOptions = FleetOptions()
    tracing: TracingSettings = TracingSettings()
    store: StoreSettings = StoreSettings()
    retention: RetentionSettings = RetentionSettings()
    cache: CacheSettings = CacheSettings()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def bundle_path(self) -> Path:
        return Path(self.model.bundle) if self.model.bundle else default_bundle_dir()


def load_edge_settings(config: Path | None = None, **overrides: object) -> EdgeSettings:
    """File < `AIVOS_*` environment < CLI overrides (dotted keys, e.g. `server.port`)."""
    extra: dict[str, object] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = extra
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[leaf] = value
    return load_config(EdgeSettings, config, extra=extra, ignore_env_keys=_non_settings_env())


# Variables read by the CLI itself, not settings keys.
NON_SETTINGS_ENV = ("AIVOS_HOME", "AIVOS_TOKEN", "AIVOS_URL", "AIVOS_OPERATOR_TOKEN")


def _non_settings_env() -> tuple[str, ...]:
    """`AIVOS_*` variables that are not edge settings: the CLI's own, and every name
    without a section (`__`) that is not a top-level setting — other tools' variables
    (`AIVOS_CLOUD_DB`, `aivos up`'s `AIVOS_UP_*` install logs) share the prefix and must not
    stop the agent. A misspelt *section* key (`AIVOS_SERVER__PROT`) is still refused."""
    top = set(EdgeSettings.__struct_fields__)
    other = (
        key
        for key in os.environ
        if key.startswith("AIVOS_") and "__" not in key and key[6:].lower() not in top
    )
    return (*NON_SETTINGS_ENV, *other)
