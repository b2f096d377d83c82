"""The agent's Prometheus series: requests and latency by decision, model latency, batch
sizes, queue depth, outbox depth and its full-outbox alarm, and psutil CPU/memory/disk read
at scrape time. Background tasks add theirs through the supervisor (edge/supervise.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil

from aivos.shared.metrics import Registry

__all__ = ["AgentMetrics"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class AgentMetrics:
    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = r.counter("aivos_requests_total", "Inference requests by decision.")
        self.latency = r.histogram(
            "aivos_request_latency_seconds", "End-to-end /v1/infer latency by decision."
        )
        self.model_latency = r.histogram(
            "aivos_model_latency_seconds",
            "Time per batch in a batch worker: the intent model, then knowledge retrieval.",
        )
        self.model_wait = r.histogram(
            "aivos_model_wait_seconds",
            "Per request: queueing for a batch worker plus the batch's model and retrieval.",
        )
        self.batch_size = r.histogram(
            "aivos_batch_size", "Requests per onnxruntime call.", _BATCH_BUCKETS
        )
        self.escalations = r.counter("aivos_escalations_total", "Escalation outcomes.")
        self.outbox_refused = r.counter(
            "aivos_outbox_refused_total", "Records refused because the outbox is full."
        )
        self._process = psutil.Process()

    def bind(
        self,
        *,
        queue_depth: Callable[[], int],
        outbox_depth: Callable[[], int],
        knowledge_chunks: Callable[[], int],
        data_path: Path,
        outbox_full: Callable[[], bool] | None = None,
        outbox_deferred: Callable[[], int] | None = None,
        outbox_dropped: Callable[[], int] | None = None,
    ) -> None:
        """The gauges read at scrape time, from the running agent's parts."""
        r = self.registry
        r.gauge("aivos_queue_depth", "Requests waiting for the model.", queue_depth)
        r.gauge("aivos_outbox_depth", "Records waiting to leave the site.", outbox_depth)
        if outbox_full is not None:
            r.gauge(
                "aivos_outbox_full",
                "1 while the outbox holds its quota: audit is deferred, other records dropped.",
                lambda: float(outbox_full()),
            )
        if outbox_deferred is not None:
            r.gauge(
                "aivos_outbox_deferred_records",
                "Audit records queued deferred (no payload copy) since start: outbox full.",
                outbox_deferred,
            )
        if outbox_dropped is not None:
            r.gauge(
                "aivos_outbox_dropped_records",
                "Memory/telemetry records not queued since start because the outbox was full.",
                outbox_dropped,
            )
        r.gauge("aivos_knowledge_chunks", "Passages in the knowledge index.", knowledge_chunks)
        r.gauge("aivos_cpu_percent", "System CPU utilisation.", lambda: psutil.cpu_percent(None))
        r.gauge(
            "aivos_memory_percent", "System memory in use.", lambda: psutil.virtual_memory().percent
        )
        r.gauge(
            "aivos_process_rss_bytes",
            "Agent resident memory.",
            lambda: self._process.memory_info().rss,
        )
        r.gauge(
            "aivos_disk_percent",
            "Disk use of the data directory's filesystem.",
            lambda: psutil.disk_usage(str(data_path)).percent,
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.model_latency.observe(seconds)

    def observe_request(self, decision: str, seconds: float) -> None:
        self.requests.inc(decision=decision)
        self.latency.observe(seconds, decision=decision)

    def render(self) -> str:
        return self.registry.render()
