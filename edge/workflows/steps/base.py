"""What every step kind gets and returns.

A step kind is an async function ``run(step, call, env) -> Outcome``: `step` is its spec
Struct (from `spec.py`), `call` this execution of it in one run, `env` the engine's services.
It raises `StepFailed` (or another `AivosError`) when the step fails; the driver decides
what happens next (`on_error`, fallback) and records it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from aivos.edge.workflows.connectors import HttpCaller
from aivos.edge.workflows.generation import CloudGenerator
from aivos.edge.workflows.journal import RunJournal
from aivos.edge.workflows.metrics import WorkflowMetrics
from aivos.edge.workflows.rows import RunRow, StepRow
from aivos.edge.workflows.signals import RunSignals
from aivos.edge.workflows.spec import Workflow
from aivos.shared.residency import Masker

__all__ = ["Outcome", "StepCall", "StepEnv", "StepFn"]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """A step that succeeded: its output (what later steps read as ``steps.<id>``), the
    input worth showing, and any change of course."""

    output: Any
    input: Any = None
    next: str | None = None  # jump target (default: the step's `next`, or the following)
    response: str | None = None  # the run's answer (a `respond` step)
    terminal: str | None = None  # end the run in this state (a rejection without on_reject)


@dataclass(slots=True)
class StepCall:
    """One execution of one step in one run."""

    workflow: Workflow
    run: RunRow
    seq: int
    prior: StepRow | None  # this step's row from before a restart / retry, if it had begun
    ctx: dict[str, Any]  # what templates and conditions read: inputs, run, steps
    approvals: dict[str, str]  # approve-step id -> decision, in this run
    attempt_log: list[dict[str, Any]]  # appended to by steps that call out


class StepEnv:
    """The engine's services that step kinds use."""

    def __init__(
        self,
        *,
        journal: RunJournal,
        signals: RunSignals,
        metrics: WorkflowMetrics,
        generator: CloudGenerator,
        masker: Masker,
        nc_provider: Callable[[], Any] | None,
        site_id: str,
        index: Any = None,
    ) -> None:
        self.journal = journal
        self.signals = signals
        self.metrics = metrics
        self.generator = generator
        self.masker = masker
        self.nc_provider = nc_provider
        self.site_id = site_id
        self.index = index  # the knowledge index (`retrieve`); swapped when it is rebuilt
        self.http_caller: HttpCaller | None = None  # opened by WorkflowEngine.start()

    @property
    def http(self) -> HttpCaller:
        assert self.http_caller is not None, "WorkflowEngine.start() has not run"
        return self.http_caller


StepFn = Callable[[Any, StepCall, StepEnv], Awaitable[Outcome]]
