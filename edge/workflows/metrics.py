"""Prometheus series of the workflow engine."""

from __future__ import annotations

from collections.abc import Callable

from aivos.shared.metrics import Registry

__all__ = ["WorkflowMetrics"]


class WorkflowMetrics:
    def __init__(self, registry: Registry, pending: Callable[[], float]) -> None:
        self.runs_started = registry.counter(
            "aivos_workflow_runs_started_total", "Workflow runs started, by workflow and trigger."
        )
        self.runs = registry.counter(
            "aivos_workflow_runs_total", "Workflow runs finished, by workflow and final state."
        )
        self.steps = registry.counter(
            "aivos_workflow_steps_total", "Workflow steps executed, by kind and outcome."
        )
        self.retries = registry.counter(
            "aivos_workflow_retries_total", "Connector attempts retried, by step kind."
        )
        self.deadline_misses = registry.counter(
            "aivos_workflow_deadline_misses_total", "Runs that missed their deadline, by workflow."
        )
        self.approvals_pending = registry.gauge(
            "aivos_workflow_approvals_pending", "Runs waiting for an operator decision.", pending
        )
        self.webhooks_refused = registry.counter(
            "aivos_workflow_webhooks_refused_total", "Inbound events refused, by reason."
        )
