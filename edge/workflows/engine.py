"""`WorkflowEngine`: runs workflows durably on the agent's store.

The facade the agent, the HTTP controllers and the CLI use. It loads the workflows and
secrets at `start()` and composes the objects that do the work:

- `RunJournal` (journal.py): the runs' and steps' rows, and their audit rows.
- `RunSupervisor` (supervisor.py): one task per active run; start, wait, approve/reject,
  cancel, retry.
- `RunDriver` (driver.py): executes a run's steps, one `StepResult` recorded per step.
- `StepRunner` (steps/): the step kinds, one module each (`steps/runner.py` has the table).
- `Triggers` (triggers.py): inbound webhook events and NATS trigger subjects (its loops
  supervised by the `supervisor` passed in, the agent's).

Each run executes one step at a time. After every step the step's outcome and the run's
cursor are committed together (one writer transaction, in the same group commit as the
step's audit row). Steps with side effects (`http`, `emit`) first commit their idempotency
key, then call, then commit the result: a crash in between re-sends with the same key on
resume, and the receiver deduplicates. `start()` resumes every run left `running` or
`waiting_approval`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aivos.edge.store import Store
from aivos.edge.supervise import Supervisor
from aivos.edge.workflows.connectors import HttpCaller
from aivos.edge.workflows.driver import RunDriver
from aivos.edge.workflows.errors import EventRefused, RunConflict
from aivos.edge.workflows.examples import Embedder, ExampleMatcher
from aivos.edge.workflows.generation import CloudGenerator, NatsGenerator
from aivos.edge.workflows.journal import RunJournal
from aivos.edge.workflows.loader import WorkflowSet, load_workflows
from aivos.edge.workflows.metrics import WorkflowMetrics
from aivos.edge.workflows.owners import run_owner
from aivos.edge.workflows.rows import RunRow
from aivos.edge.workflows.secrets import Secrets
from aivos.edge.workflows.settings import WorkflowSettings
from aivos.edge.workflows.signals import RunSignals
from aivos.edge.workflows.spec import Workflow
from aivos.edge.workflows.steps import StepEnv, StepRunner
from aivos.edge.workflows.supervisor import RunSupervisor
from aivos.edge.workflows.triggers import Triggers
from aivos.edge.workflows.views import EventAccepted, RunDetail, RunResult, detail
from aivos.shared.errors import NotFound
from aivos.shared.metrics import Registry
from aivos.shared.residency import Masker, default_masker

__all__ = ["WorkflowEngine", "RunConflict", "EventRefused"]

log = logging.getLogger(__name__)


class WorkflowEngine:
    def __init__(
        self,
        store: Store,
        settings: WorkflowSettings,
        *,
        index: Any = None,
        nc_provider: Callable[[], Any] | None = None,
        masker: Masker | None = None,
        registry: Registry | None = None,
        generator: CloudGenerator | None = None,
        workflows: WorkflowSet | None = None,
        secrets: Secrets | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.nc_provider = nc_provider
        self.registry = registry or Registry()
        self.metrics = WorkflowMetrics(self.registry, self._pending)
        self._set = workflows
        self._secrets = secrets
        # example-triggered workflows in the live model's embedding space (examples.py)
        self.examples = ExampleMatcher([], "")
        self._journal = RunJournal(store)
        signals = RunSignals()
        self._env = StepEnv(
            journal=self._journal,
            signals=signals,
            metrics=self.metrics,
            generator=generator or NatsGenerator(nc_provider, settings.site_id),
            masker=masker or default_masker(),
            nc_provider=nc_provider,
            site_id=settings.site_id,
            index=index,
        )
        driver = RunDriver(self._journal, StepRunner(self._env), self.metrics, self._lookup)
        self._runs = RunSupervisor(self._journal, signals, driver, self.metrics, store=store)
        self._triggers = Triggers(
            settings,
            self._journal,
            self.metrics,
            self._runs.start_run,
            nc_provider,
            workflows=lambda: self.workflows,
            secrets=lambda: self._secrets,
            supervisor=supervisor,  # keeps the trigger loops alive (restart with back-off)
        )

    @property
    def workflows(self) -> WorkflowSet:
        if self._set is None:
            raise RuntimeError("WorkflowEngine.start() has not run")
        return self._set

    @property
    def http(self) -> HttpCaller:
        return self._env.http

    @property
    def index(self) -> Any:
        """The knowledge index `retrieve` steps search (the agent swaps it on a rebuild)."""
        return self._env.index

    @index.setter
    def index(self, value: Any) -> None:
        self._env.index = value

    @property
    def masker(self) -> Masker:
        return self._env.masker

    @masker.setter
    def masker(self, value: Masker) -> None:
        self._env.masker = value

    @property
    def generator(self) -> CloudGenerator:
        return self._env.generator

    @generator.setter
    def generator(self, value: CloudGenerator) -> None:
        self._env.generator = value

    @property
    def triggers_subscribed(self) -> asyncio.Event:
        """Set once the NATS triggers listen."""
        return self._triggers.subscribed

    @property
    def _tasks(self) -> dict[str, asyncio.Task[None]]:
        """The runs being driven now, by id (read by benchmarks/workflow_engine.py)."""
        return self._runs.tasks

    async def start(self, *, resume: bool = True) -> None:
        """Load secrets and workflows, then (with `resume`) resume every unfinished run."""
        if self._secrets is None:
            self._secrets = await asyncio.to_thread(Secrets.load, self.settings.secrets_file)
        if self._set is None:
            paths = self.settings.workflow_paths()
            self._set = await asyncio.to_thread(
                load_workflows, paths, connectors=self.settings.connectors
            )
        self._env.http_caller = HttpCaller(
            self.settings.connectors,
            self._secrets,
            max_connections=self.settings.max_http_connections,
        )
        if resume:
            self._runs.resume_all()
        self._triggers.start()
        log.info("workflow engine started: %d workflows", len(self.workflows))

    async def stop(self) -> None:
        """Stop driving runs (they stay persisted and resume at the next start)."""
        await self._triggers.stop()
        await self._runs.stop()
        if self._env.http_caller is not None:
            await self._env.http_caller.aclose()

    def _pending(self) -> float:
        try:
            return float(self._journal.count_waiting())
        except Exception:
            return 0.0

    def _lookup(self, name: str) -> Workflow | None:
        return self.workflows.by_name.get(name)

    def workflow_for_intent(self, intent: str) -> Workflow | None:
        return self.workflows.by_intent.get(intent)

    async def embed_examples(self, model: Embedder) -> ExampleMatcher:
        """The workflows' `trigger.examples` embedded with `model` and calibrated (in a
        thread); the current matcher when its embedding space is the model's. The caller
        installs it (`engine.examples = ...`) when the model goes live."""
        if self.examples.embedding_version == model.embedding_version:
            return self.examples
        return await asyncio.to_thread(ExampleMatcher.build, self.workflows.by_name.values(), model)

    def workflow_for_embedding(self, embedding: Any) -> Workflow | None:
        """The workflow whose examples a request's sentence embedding matches, if any."""
        found = self.examples.match(embedding) if len(self.examples) else None
        return None if found is None else self.workflows.by_name.get(found.workflow)

    def workflow(self, name: str) -> Workflow:
        wf = self.workflows.by_name.get(name)
        if wf is None:
            raise NotFound(f"no workflow {name!r}")
        return wf

    async def start_run(
        self,
        workflow: Workflow,
        inputs: dict[str, Any],
        *,
        wait_s: float,
        trigger: str = "api",
        trace_id: str | None = None,
        dedup_key: str | None = None,
        owner: str | None = None,
    ) -> RunResult:
        """Persist a new run, start it, and wait up to `wait_s` for it to finish.

        Returns the finished run's response, or (still running / waiting for approval) a
        handle to poll. With `dedup_key`, a second start returns the first run. `owner`: the
        id of the client token the run is for (None: the site's own run, operators only).
        A client request's inputs come from `request_inputs` (inputs.py), never raw metadata."""
        return await self._runs.start_run(
            workflow,
            inputs,
            wait_s=wait_s,
            trigger=trigger,
            trace_id=trace_id,
            dedup_key=dedup_key,
            owner=owner,
        )

    async def wait(self, run_id: str, wait_s: float, *, return_on_pause: bool = True) -> RunResult:
        """Wait up to `wait_s` for the run to finish (or to pause for an operator)."""
        return await self._runs.wait(run_id, wait_s, return_on_pause=return_on_pause)

    async def accept_event(
        self, source: str, body: bytes, headers: Mapping[str, str], *, wait_s: float = 0.0
    ) -> EventAccepted:
        """A signed inbound webhook: verify, then start every workflow bound to the event.

        Raises EventRefused (and audits it) when the signature is missing or wrong."""
        return await self._triggers.accept_event(source, body, headers, wait_s=wait_s)

    def get_run(self, run_id: str) -> RunRow:
        return self._journal.get_run(run_id)

    def run_owner(self, run_id: str) -> str | None:
        """The id of the token the run belongs to (None: the site's); NotFound if no run."""
        return run_owner(self.store.readers.get(), run_id)

    def list_runs(
        self,
        *,
        state: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        before: str | None = None,
        owner: str | None = None,
    ) -> list[RunRow]:
        """Runs newest first; with `owner`, only the runs of that token."""
        return self._journal.list_runs(
            state=state, workflow=workflow, limit=limit, before=before, owner=owner
        )

    def run_detail(self, run_id: str) -> RunDetail:
        run = self._journal.get_run(run_id)
        return detail(run, self._journal.steps_of(run_id), self.masker)

    async def approve(self, run_id: str, by: str, note: str | None = None) -> RunResult:
        return await self._runs.decide(run_id, "approved", by, note)

    async def reject(self, run_id: str, by: str, note: str | None = None) -> RunResult:
        return await self._runs.decide(run_id, "rejected", by, note)

    async def cancel(self, run_id: str, by: str) -> RunResult:
        return await self._runs.cancel(run_id, by)

    async def retry(self, run_id: str, by: str, *, wait_s: float = 0.0) -> RunResult:
        """Run a failed, timed-out or cancelled run again from the step that stopped it
        (completed steps are not repeated; a side effect re-sends its idempotency key)."""
        return await self._runs.retry(run_id, by, wait_s=wait_s)
