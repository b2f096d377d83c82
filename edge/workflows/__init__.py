"""Durable workflows at the edge: declarative TOML automations per intent or event.

    engine = WorkflowEngine(store, WorkflowSettings(...), index=index, nc_provider=lambda: nc,
                            masker=default_masker(), registry=metrics_registry)
    await engine.start()                          # loads workflows, resumes unfinished runs
    wf = engine.workflow_for_intent("transactions")
    result = await engine.start_run(wf, {"text": ..., "account_id": ...}, wait_s=2.0)
    result.done, result.response, result.status_url
    await engine.approve(run_id, by="operator-name") / reject / cancel / retry
    await engine.stop()

See docs/workflows.md for the file format and edge/workflows/demo/ for the example.
"""

from aivos.edge.workflows.engine import EventRefused, RunConflict, WorkflowEngine
from aivos.edge.workflows.generation import CloudGenerator, NatsGenerator
from aivos.edge.workflows.loader import WorkflowSet, load_workflow, load_workflows, parse_workflow
from aivos.edge.workflows.secrets import Secrets
from aivos.edge.workflows.settings import (
    ConnectorSettings,
    WorkflowSettings,
    load_workflow_settings,
)
from aivos.edge.workflows.spec import Workflow
from aivos.edge.workflows.views import EventAccepted, RunDetail, RunResult, RunSummary, StepView

__all__ = [
    "WorkflowEngine",
    "RunConflict",
    "EventRefused",
    "CloudGenerator",
    "NatsGenerator",
    "WorkflowSet",
    "Workflow",
    "load_workflow",
    "load_workflows",
    "parse_workflow",
    "Secrets",
    "ConnectorSettings",
    "WorkflowSettings",
    "load_workflow_settings",
    "RunResult",
    "RunSummary",
    "RunDetail",
    "StepView",
    "EventAccepted",
]
