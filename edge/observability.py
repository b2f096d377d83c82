"""The agent's Prometheus series: requests and latency by decision, model latency, batch
sizes, queue depth, outbox depth, and psutil CPU/memory/disk read at scrape time."""

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
    ) -> None:
        """The gauges read at scrape time, from the running agent's parts."""
        r = self.registry
        r.gauge("aivos_queue_depth", "Requests waiting for the model.", queue_depth)
        r.gauge("aivos_outbox_depth", "Records waiting to leave the site.", outbox_depth)
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
