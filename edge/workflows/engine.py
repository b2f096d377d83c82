"""`WorkflowEngine`: runs workflows durably on the agent's store.

Each run is an asyncio task that executes one step at a time. After every step the step's
outcome and the run's cursor are committed together (one writer transaction, in the same
group commit as the step's audit row). Steps with side effects (`http`, `emit`) first
commit their idempotency key, then call, then commit the result: a crash in between
re-sends with the same key on resume, and the receiver deduplicates. `start()` resumes
every run left `running` or `waiting_approval`.

The deadline (`deadline_s`) covers the automated steps; time spent waiting for an
operator does not count. A run that misses it, or whose step fails with
``on_error = "fallback"``, ends with the workflow's fallback answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from aivos.edge.store import AuditRecord, Store
from aivos.edge.store import audit as _audit
from aivos.edge.store._codec import now_iso as _codec_now
from aivos.edge.workflows import state as _state
from aivos.edge.workflows.connectors import HttpCaller, quote_segment
from aivos.edge.workflows.expr import parse_expr
from aivos.edge.workflows.generation import CloudGenerator, NatsGenerator, parse_fields
from aivos.edge.workflows.loader import WorkflowSet, load_workflows
from aivos.edge.workflows.metrics import WorkflowMetrics
from aivos.edge.workflows.safety import check_runtime
from aivos.edge.workflows.secrets import Secrets
from aivos.edge.workflows.settings import WorkflowSettings
from aivos.edge.workflows.signatures import ReplayGuard, SignatureError, verify
from aivos.edge.workflows.spec import (
    END,
    ApproveStep,
    BranchStep,
    EmitStep,
    GenerateStep,
    HttpStep,
    RespondStep,
    RetrieveStep,
    Step,
    Workflow,
    kind_of,
)
from aivos.edge.workflows.template import Template, render_value
from aivos.edge.workflows.views import EventAccepted, RunDetail, RunResult, detail, result_of
from aivos.shared.errors import AivosError, Conflict, NotFound, QuotaExceeded, StepFailed
from aivos.shared.ids import new_id
from aivos.shared.metrics import Registry
from aivos.shared.residency import Masker, default_masker
from aivos.shared.subjects import event_subject

__all__ = ["WorkflowEngine", "RunConflict", "EventRefused"]

log = logging.getLogger(__name__)


class RunConflict(Conflict):
    """The run is not in a state that allows this operation."""

    code = "run_conflict"


class EventRefused(AivosError):
    """An inbound event failed its signature check (`reason` is safe to audit)."""

    code = "event_refused"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _Deadline(Exception):
    pass


class _Outcome:
    __slots__ = ("output", "next", "response", "terminal", "input")

    def __init__(
        self,
        output: Any,
        *,
        next: str | None = None,
        response: str | None = None,
        terminal: str | None = None,
        input: Any = None,
    ) -> None:
        self.output = output
        self.next = next
        self.response = response
        self.terminal = terminal
        self.input = input


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
    ) -> None:
        self.store = store
        self.settings = settings
        self.index = index
        self.nc_provider = nc_provider
        self.masker = masker or default_masker()
        self.registry = registry or Registry()
        self.metrics = WorkflowMetrics(self.registry, self._pending)
        self.generator: CloudGenerator = generator or NatsGenerator(nc_provider, settings.site_id)
        self._set = workflows
        self._secrets = secrets
        self._http: HttpCaller | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._approval_events: dict[str, asyncio.Event] = {}
        self._paused: dict[str, asyncio.Event] = {}  # set while a run waits for an operator
        # step writes submitted but not yet awaited, per run (see _persist)
        self._unsynced: dict[str, list[asyncio.Future[Any]]] = {}
        self._replay = ReplayGuard()
        self._nats_task: asyncio.Task[None] | None = None
        self.triggers_subscribed = asyncio.Event()  # set once the NATS triggers listen
        self._started = False

    # ----- lifecycle -------------------------------------------------------------------------

    @property
    def workflows(self) -> WorkflowSet:
        if self._set is None:
            raise RuntimeError("WorkflowEngine.start() has not run")
        return self._set

    @property
    def http(self) -> HttpCaller:
        assert self._http is not None, "WorkflowEngine.start() has not run"
        return self._http

    async def start(self, *, resume: bool = True) -> None:
        """Load secrets and workflows, then (with `resume`) resume every unfinished run."""
        if self._secrets is None:
            self._secrets = await asyncio.to_thread(Secrets.load, self.settings.secrets_file)
        if self._set is None:
            paths = self.settings.workflow_paths()
            self._set = await asyncio.to_thread(
                load_workflows, paths, connectors=self.settings.connectors
            )
        self._http = HttpCaller(
            self.settings.connectors,
            self._secrets,
            max_connections=self.settings.max_http_connections,
        )
        self._started = True
        if resume:
            for run in _state.active_runs(self.store.readers.get()):
                self._spawn(run.id)
        if self.workflows.by_nats and self.nc_provider is not None:
            self._nats_task = asyncio.create_task(self._nats_loop())
        log.info("workflow engine started: %d workflows", len(self.workflows))

    async def stop(self) -> None:
        """Stop driving runs (they stay persisted and resume at the next start)."""
        tasks = list(self._tasks.values())
        if self._nats_task is not None:
            tasks.append(self._nats_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        unsynced = [f for pending in self._unsynced.values() for f in pending]
        self._unsynced.clear()
        await asyncio.gather(*unsynced, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
        self._started = False

    def _pending(self) -> float:
        try:
            return float(_state.count_waiting(self.store.readers.get()))
        except Exception:
            return 0.0

    # ----- starting runs ---------------------------------------------------------------------

    def workflow_for_intent(self, intent: str) -> Workflow | None:
        return self.workflows.by_intent.get(intent)

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
    ) -> RunResult:
        """Persist a new run, start it, and wait up to `wait_s` for it to finish.

        Returns the finished run's response, or (still running / waiting for approval) a
        handle to poll. With `dedup_key`, a second start returns the first run."""
        run_id = new_id()
        trace = trace_id or new_id()

        def insert(c: Any) -> _state.RunRow:
            return _state.insert_run(
                c,
                run_id=run_id,
                workflow=workflow.name,
                digest=workflow.digest,
                trigger=trigger,
                inputs=inputs,
                cursor=workflow.steps[0].id,
                trace_id=trace,
                dedup_key=dedup_key,
            )

        if dedup_key is not None:  # must know now whether this is a redelivery
            run = await self.store.transact(insert)
            if run.id != run_id:
                return await self.wait(run.id, wait_s)
        else:
            # pipelined like the step writes: durable before any side effect, pause or answer
            self._unsynced.setdefault(run_id, []).append(
                asyncio.ensure_future(self.store.transact(insert))
            )
            now = _codec_now()
            run = _state.RunRow(
                id=run_id,
                workflow=workflow.name,
                digest=workflow.digest,
                trigger=trigger,
                state="running",
                inputs=inputs,
                cursor=workflow.steps[0].id,
                seq=0,
                response=None,
                error=None,
                trace_id=trace,
                dedup_key=None,
                active_s=0.0,
                deadline_missed=False,
                created_at=now,
                updated_at=now,
                finished_at=None,
            )
        self.metrics.runs_started.inc(workflow=workflow.name, trigger=trigger.split(":")[0])
        self._spawn(run_id, run)
        return await self.wait(run_id, wait_s)

    async def wait(self, run_id: str, wait_s: float, *, return_on_pause: bool = True) -> RunResult:
        """Wait up to `wait_s` for the run to finish (or to pause for an operator)."""
        task = self._tasks.get(run_id)
        if task is not None and wait_s > 0:
            paused = self._paused.setdefault(run_id, asyncio.Event())
            if not return_on_pause:
                paused = asyncio.Event()
            pause_wait = asyncio.ensure_future(paused.wait())
            try:
                await asyncio.wait(
                    {task, pause_wait}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                pause_wait.cancel()
        await self._sync(run_id)  # a handle names a run that is on disk
        return result_of(self.get_run(run_id))

    def _spawn(self, run_id: str, new_run: _state.RunRow | None = None) -> None:
        if run_id in self._tasks:
            return
        task = asyncio.create_task(self._drive(run_id, new_run), name=f"workflow-run-{run_id}")
        self._tasks[run_id] = task

        def done(t: asyncio.Task[None], rid: str = run_id) -> None:
            if self._tasks.get(rid) is t:
                del self._tasks[rid]
            self._approval_events.pop(rid, None)
            self._paused.pop(rid, None)
            if not t.cancelled() and t.exception() is not None:
                log.error("workflow run %s crashed", rid, exc_info=t.exception())

        task.add_done_callback(done)

    # ----- reading runs ----------------------------------------------------------------------

    def get_run(self, run_id: str) -> _state.RunRow:
        return _state.get_run(self.store.readers.get(), run_id)

    def list_runs(
        self,
        *,
        state: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[_state.RunRow]:
        return _state.list_runs(
            self.store.readers.get(), state=state, workflow=workflow, limit=limit, before=before
        )

    def run_detail(self, run_id: str) -> RunDetail:
        conn = self.store.readers.get()
        run = _state.get_run(conn, run_id)
        return detail(run, _state.steps_of(conn, run_id), self.masker)

    # ----- operations ------------------------------------------------------------------------

    async def approve(self, run_id: str, by: str, note: str | None = None) -> RunResult:
        return await self._decide(run_id, "approved", by, note)

    async def reject(self, run_id: str, by: str, note: str | None = None) -> RunResult:
        return await self._decide(run_id, "rejected", by, note)

    async def _decide(self, run_id: str, decision: str, by: str, note: str | None) -> RunResult:
        run = self.get_run(run_id)
        if run.state != "waiting_approval":
            raise RunConflict(f"run {run_id} is {run.state}, not waiting for approval")
        seq = run.seq + 1
        ok = await self.store.transact(lambda c: _state.decide(c, run_id, seq, decision, by, note))
        if not ok:
            raise RunConflict(f"run {run_id} was already decided")
        await self._audit_op(run, "approval", {"decision": decision, "operator": by})
        event = self._approval_events.get(run_id)
        if event is not None:
            event.set()
        else:
            self._spawn(run_id)
        return await self.wait(run_id, 0.5)

    async def cancel(self, run_id: str, by: str) -> RunResult:
        run = self.get_run(run_id)
        if run.state in _state.TERMINAL:
            raise RunConflict(f"run {run_id} is already {run.state}")
        task = self._tasks.pop(run_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # writes the run already submitted land first, so "cancelled" is the last word
        await asyncio.gather(*self._unsynced.pop(run_id, []), return_exceptions=True)
        await self.store.transact(
            lambda c: _state.update_run(
                c, run_id, state="cancelled", cursor=run.cursor, error=f"cancelled by {by}"
            )
        )
        self.metrics.runs.inc(workflow=run.workflow, state="cancelled")
        await self._audit_op(run, "cancel", {"operator": by})
        return result_of(self.get_run(run_id))

    async def retry(self, run_id: str, by: str, *, wait_s: float = 0.0) -> RunResult:
        """Run a failed, timed-out or cancelled run again from the step that stopped it
        (completed steps are not repeated; a side effect re-sends its idempotency key)."""
        run = self.get_run(run_id)
        if run.state not in ("failed", "timed_out", "cancelled"):
            raise RunConflict(f"run {run_id} is {run.state}; only stopped runs can be retried")
        if run.cursor is None:
            raise RunConflict(f"run {run_id} has no step left to retry")
        await self.store.transact(
            lambda c: c.execute(
                "UPDATE workflow_runs SET state = 'running', error = NULL, response = NULL, "
                "active_s = 0, finished_at = NULL WHERE id = ?",
                (run_id,),
            )
        )
        await self._audit_op(run, "retry", {"operator": by})
        self._spawn(run_id)
        return await self.wait(run_id, wait_s)

    async def _audit_op(self, run: _state.RunRow, action: str, detail: dict[str, Any]) -> None:
        await self._append_audit(
            AuditRecord(
                id=new_id(),
                kind="operator_action",
                trace_id=run.trace_id,
                decision=action,
                detail={"workflow": run.workflow, "run_id": run.id, **detail},
            )
        )

    async def _append_audit(self, record: AuditRecord) -> None:
        try:
            await self.store.append_audit(record)
        except QuotaExceeded:
            # the outbox is full: keep the local audit row, it syncs with later records
            await self.store.append_audit(record, sync=False)

    # ----- events ----------------------------------------------------------------------------

    async def accept_event(
        self, source: str, body: bytes, headers: Mapping[str, str], *, wait_s: float = 0.0
    ) -> EventAccepted:
        """A signed inbound webhook: verify, then start every workflow bound to the event.

        Raises EventRefused (and audits it) when the signature is missing or wrong."""
        secret = self._secrets.webhooks.get(source) if self._secrets else None
        try:
            verify(
                secret.secret if secret else None,
                headers.get("x-aivos-signature"),
                headers.get("x-aivos-timestamp"),
                body,
                tolerance_s=self.settings.webhook_tolerance_s,
                guard=self._replay,
            )
        except SignatureError as exc:
            self.metrics.webhooks_refused.inc(reason=exc.reason)
            await self._append_audit(
                AuditRecord(
                    id=new_id(),
                    kind="auth_failure",
                    decision="webhook_refused",
                    detail={"source": source[:64], "reason": exc.reason, "bytes": len(body)},
                )
            )
            raise EventRefused(exc.reason) from exc
        try:
            payload = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError as exc:
            raise StepFailed("bad_event", "the event body is not JSON") from exc
        if not isinstance(payload, dict):
            raise StepFailed("bad_event", "the event body must be a JSON object")
        event_type = headers.get("x-aivos-event") or payload.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise StepFailed("bad_event", "no event type (X-Aivos-Event header or `type` field)")
        name = f"{source}.{event_type}"
        delivery = headers.get("x-aivos-delivery")
        runs = []
        for wf in self.workflows.by_event.get(name, []):
            dedup = f"evt:{source}:{delivery}:{wf.name}" if delivery else None
            inputs = {**payload, "event": name}
            runs.append(
                await self.start_run(
                    wf, inputs, wait_s=wait_s, trigger=f"event:{name}", dedup_key=dedup
                )
            )
        return EventAccepted(event=name, runs=runs)

    async def _nats_loop(self) -> None:
        """Subscribe the site-local trigger subjects; re-subscribe on a new connection."""
        assert self.nc_provider is not None
        subscribed_on: Any = None
        while True:
            nc = self.nc_provider()
            if nc is not None and nc is not subscribed_on and getattr(nc, "is_connected", False):
                try:
                    for name, wfs in self.workflows.by_nats.items():
                        subject = event_subject(self.settings.site_id, name)
                        await nc.subscribe(subject, cb=self._nats_handler(name, wfs))
                    subscribed_on = nc
                    self.triggers_subscribed.set()
                    log.info(
                        "workflow triggers subscribed on %d subjects", len(self.workflows.by_nats)
                    )
                except Exception as exc:  # retried on the next tick
                    log.warning("workflow trigger subscription failed: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.nats_retry_s)

    def _nats_handler(self, name: str, wfs: list[Workflow]) -> Callable[[Any], Any]:
        async def handle(msg: Any) -> None:
            try:
                payload = msgspec.json.decode(msg.data) if msg.data else {}
            except msgspec.DecodeError:
                log.warning("non-JSON message on workflow trigger %s dropped", name)
                return
            if not isinstance(payload, dict):
                return
            msg_id = (msg.headers or {}).get("Nats-Msg-Id")
            for wf in wfs:
                dedup = f"nats:{name}:{msg_id}:{wf.name}" if msg_id else None
                await self.start_run(
                    wf,
                    {**payload, "event": name},
                    wait_s=0,
                    trigger=f"nats:{name}",
                    dedup_key=dedup,
                )

        return handle

    # ----- driving a run ---------------------------------------------------------------------

    async def _drive(self, run_id: str, new_run: _state.RunRow | None = None) -> None:
        """Execute the run's steps from its cursor. `new_run`: a run just created in this
        process (its row may still be in the writer queue; it has no steps yet)."""
        conn = self.store.readers.get()
        run = new_run if new_run is not None else _state.get_run(conn, run_id)
        if run.state not in _state.ACTIVE:
            return
        wf = self.workflows.by_name.get(run.workflow)
        if wf is None:
            await self.store.transact(
                lambda c: _state.update_run(
                    c, run_id, state="failed", cursor=run.cursor, error="workflow_not_loaded"
                )
            )
            return
        if wf.digest != run.digest:
            log.warning("run %s resumes on a changed definition of %s", run_id, wf.name)
        ctx: dict[str, Any] = {
            "inputs": run.inputs,
            "run": {"id": run.id, "workflow": wf.name, "trace_id": run.trace_id},
            "steps": {},
        }
        approvals: dict[str, str] = {}
        for row in _state.steps_of(conn, run_id) if new_run is None else []:
            if row.seq <= run.seq:
                ctx["steps"][row.step_id] = row.output
                if row.kind == "approve" and isinstance(row.output, dict):
                    approvals[row.step_id] = str(row.output.get("decision"))
        active = run.active_s
        cursor = run.cursor
        seq = run.seq
        while cursor is not None and cursor != END:
            try:
                step = wf.step(cursor)
            except KeyError:
                missing: str = cursor

                def fail(c: Any, missing: str = missing) -> None:
                    _state.update_run(
                        c, run_id, state="failed", cursor=missing, error=f"step {missing!r} is gone"
                    )

                await self.store.transact(fail)
                return
            seq += 1
            # only the first step after a resume / retry can have been started before
            prior = (
                _state.in_flight(conn, run_id, seq)
                if seq == run.seq + 1 and new_run is None
                else None
            )
            if prior is not None and prior.step_id != step.id:
                prior = None
            log_entries: list[dict[str, Any]] = list(prior.attempt_log) if prior else []
            started = time.perf_counter()
            error: StepFailed | None = None
            missed = False
            outcome: _Outcome | None = None
            try:
                if isinstance(step, ApproveStep):
                    outcome = await self._approve(wf, step, run, seq, prior, ctx)
                else:
                    remaining = wf.deadline_s - active
                    if remaining <= 0:
                        raise _Deadline
                    try:
                        async with asyncio.timeout(remaining):
                            outcome = await self._execute(
                                wf, step, run, seq, prior, ctx, approvals, log_entries
                            )
                    except TimeoutError as exc:
                        raise _Deadline from exc
            except _Deadline:
                missed = True
                error = StepFailed("deadline", f"workflow deadline of {wf.deadline_s}s reached")
            except StepFailed as exc:
                error = exc
            except AivosError as exc:
                error = StepFailed(exc.code, str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("workflow step %s.%s failed unexpectedly", wf.name, step.id)
                error = StepFailed("internal", type(exc).__name__)
            elapsed = time.perf_counter() - started
            if not isinstance(step, ApproveStep):
                active += elapsed
            attempts = len(log_entries) if log_entries else 1
            if outcome is not None:
                ctx["steps"][step.id] = outcome.output
                if isinstance(step, ApproveStep):
                    approvals[step.id] = outcome.output["decision"]
                nxt = outcome.next or step.next or wf.following(step.id)
                terminal = outcome.terminal or ("succeeded" if nxt in (None, END) else "running")
                response = outcome.response
                if outcome.terminal == "rejected":
                    response = Template(wf.fallback).render(ctx)
                    nxt = None
                await self._persist(
                    run,
                    seq,
                    step,
                    "done",
                    outcome.input,
                    outcome.output,
                    None,
                    attempts,
                    log_entries,
                    elapsed,
                    None if terminal != "running" else nxt,
                    active,
                    advance=True,
                    run_state=terminal,
                    response=response,
                )
                cursor = None if terminal != "running" else nxt
                continue
            assert error is not None
            target = step.on_error
            if not missed and target != "fallback":
                nxt = wf.following(step.id) if target == "continue" else target
                output = {"error": error.reason}
                ctx["steps"][step.id] = output
                terminal = "succeeded" if nxt in (None, END) else "running"
                await self._persist(
                    run,
                    seq,
                    step,
                    "failed",
                    None,
                    output,
                    str(error),
                    attempts,
                    log_entries,
                    elapsed,
                    None if terminal != "running" else nxt,
                    active,
                    advance=True,
                    run_state=terminal,
                )
                cursor = None if terminal != "running" else nxt
                continue
            if missed:
                self.metrics.deadline_misses.inc(workflow=wf.name)
            await self._persist(
                run,
                seq,
                step,
                "failed",
                None,
                None,
                str(error),
                attempts,
                log_entries,
                elapsed,
                step.id,
                active,
                advance=False,
                run_state="timed_out" if missed else "failed",
                response=Template(wf.fallback).render(ctx),
                run_error=str(error),
                deadline_missed=missed,
            )
            return

    async def _persist(
        self,
        run: _state.RunRow,
        seq: int,
        step: Step,
        step_state: str,
        input: Any,
        output: Any,
        error: str | None,
        attempts: int,
        attempt_log: list[dict[str, Any]],
        elapsed: float,
        cursor: str | None,
        active: float,
        *,
        advance: bool,
        run_state: str = "running",
        response: str | None = None,
        run_error: str | None = None,
        deadline_missed: bool = False,
    ) -> None:
        kind = kind_of(step)
        duration_ms = round(elapsed * 1000, 3)

        def write(c: Any) -> None:
            _state.finish_step(
                c,
                run_id=run.id,
                seq=seq,
                step_id=step.id,
                kind=kind,
                state=step_state,
                input=input,
                output=output,
                error=error,
                attempts=attempts,
                attempt_log=attempt_log,
                duration_ms=duration_ms,
                cursor=cursor,
                active_s=active,
                advance=advance,
                run_state=run_state,
                response=response,
                run_error=run_error,
                deadline_missed=deadline_missed,
            )

        audit = AuditRecord(
            id=new_id(),
            kind="workflow_step",
            trace_id=run.trace_id,
            decision=step_state,
            latency_ms=duration_ms,
            detail={
                "workflow": run.workflow,
                "run_id": run.id,
                "seq": seq,
                "step": step.id,
                "step_kind": kind,
                "attempts": attempts,
                "error": error.split(":")[0] if error else None,
                "run_state": run_state,
            },
        )

        def write_and_audit(c: Any) -> None:
            write(c)
            self._audit_in(c, audit)

        future = asyncio.ensure_future(self.store.transact(write_and_audit))
        pending = self._unsynced.setdefault(run.id, [])
        pending.append(future)
        self.metrics.steps.inc(kind=kind, outcome=step_state)
        if run_state != "running":
            # the run ends or pauses here: everything it wrote is on disk before anyone
            # hears about it
            await self._sync(run.id)
            self.metrics.runs.inc(workflow=run.workflow, state=run_state)

    def _audit_in(self, conn: Any, record: AuditRecord) -> None:
        """The step's audit row, in the step's own transaction (the store facade's
        `append_audit`, composed: audit row + outbox record)."""
        row = _audit.append(conn, record)
        # outbox full: the local audit row stays; it is not lost, only not synced
        with contextlib.suppress(QuotaExceeded):
            self.store.outbox.enqueue(
                conn, "audit", row, subject=row.kind, record_id=f"audit-{row.id}"
            )

    async def _ordered(self, run_id: str) -> None:
        """Let this run's pipelined step writes reach the writer queue before a write that
        the caller awaits (tasks created earlier run their first step before we resume)."""
        if self._unsynced.get(run_id):
            await asyncio.sleep(0)

    async def _sync(self, run_id: str) -> None:
        """Wait until this run's pipelined step writes are committed (raising their error)."""
        pending = self._unsynced.pop(run_id, [])
        if pending:
            await asyncio.gather(*pending)

    # ----- step kinds ------------------------------------------------------------------------

    async def _execute(
        self,
        wf: Workflow,
        step: Step,
        run: _state.RunRow,
        seq: int,
        prior: _state.StepRow | None,
        ctx: dict[str, Any],
        approvals: dict[str, str],
        attempt_log: list[dict[str, Any]],
    ) -> _Outcome:
        if isinstance(step, RespondStep):
            text = Template(step.template).render(ctx)
            return _Outcome({"text": text}, response=text)
        if isinstance(step, BranchStep):
            result = parse_expr(step.when).evaluate(ctx)
            target = step.then if result else (step.otherwise or wf.following(step.id))
            return _Outcome({"result": result, "next": target or END}, next=target or END)
        if isinstance(step, RetrieveStep):
            return await self._retrieve(step, ctx)
        if isinstance(step, GenerateStep):
            return await self._generate(step, run, ctx)
        if isinstance(step, HttpStep | EmitStep):
            check_runtime(wf, step, ctx, approvals)
            return await self._side_effect(step, run, seq, prior, ctx, attempt_log)
        raise StepFailed("unknown_kind", kind_of(step))

    async def _retrieve(self, step: RetrieveStep, ctx: dict[str, Any]) -> _Outcome:
        query = Template(step.query).render(ctx)
        passages: list[dict[str, Any]] = []
        if self.index is not None and query.strip() and len(self.index) > 0:
            found = await asyncio.to_thread(self.index.search, query, step.k)
            passages = [
                {"text": p.text, "source": p.source, "score": round(float(p.score), 4)}
                for p in found
                if p.score >= step.min_score
            ]
        output = {
            "passages": passages,
            "top": passages[0]["text"] if passages else "",
            "count": len(passages),
        }
        return _Outcome(output, input={"query": query})

    async def _generate(
        self, step: GenerateStep, run: _state.RunRow, ctx: dict[str, Any]
    ) -> _Outcome:
        text = Template(step.template).render(ctx)
        by = "local"
        if step.mode == "cloud":
            masked = self.masker.mask(text)
            system = (
                self.masker.mask(Template(step.system).render(ctx), masked.mapping).text
                if step.system
                else None
            )
            try:
                generated = await self.generator(
                    masked.text,
                    system=system,
                    max_tokens=step.max_tokens,
                    timeout_s=step.timeout_s,
                    trace_id=run.trace_id,
                )
                text, by = Masker.restore(generated, masked.mapping), "cloud"
            except (AivosError, TimeoutError) as exc:
                log.info("generate step %s fell back: %s", step.id, type(exc).__name__)
                text, by = Template(step.fallback).render(ctx), "fallback"
        fields = parse_fields(text, step.fields)
        missing = [name for name in step.fields if name not in fields]
        if missing and by != "fallback":
            # model text that does not validate never fills a field: the operator-written
            # fallback does (it is checked against the same allow-list)
            fallback_fields = parse_fields(Template(step.fallback).render(ctx), step.fields)
            fields.update({k: v for k, v in fallback_fields.items() if k in missing})
        return _Outcome(
            {"text": text, "by": by, "fields": fields, "fields_missing_from_model": missing}
        )

    async def _side_effect(
        self,
        step: HttpStep | EmitStep,
        run: _state.RunRow,
        seq: int,
        prior: _state.StepRow | None,
        ctx: dict[str, Any],
        attempt_log: list[dict[str, Any]],
    ) -> _Outcome:
        path = Template(step.path).render(ctx, strict=True, escape=quote_segment)
        query: dict[str, str] = {}
        if isinstance(step, HttpStep):
            query = {k: Template(v).render(ctx, strict=True) for k, v in step.query.items()}
            body = render_value(step.body, ctx, strict=True) if step.body is not None else None
            request = {
                "method": step.method,
                "connector": step.connector,
                "path": path,
                "query": query,
                "body": body,
            }
        else:
            body = render_value(step.payload, ctx, strict=True)
            request = {"nats": step.nats, "webhook": step.webhook, "path": path, "payload": body}
        idem_key = prior.idem_key if prior is not None and prior.idem_key else f"{run.id}.{step.id}"
        if prior is None or prior.state != "running":
            # the key is durable BEFORE the call: a crash after the call re-sends the same key
            await self._ordered(run.id)
            await self.store.transact(
                lambda c: _state.begin_step(
                    c,
                    run_id=run.id,
                    seq=seq,
                    step_id=step.id,
                    kind=kind_of(step),
                    state="running",
                    input=request,
                    idem_key=idem_key,
                )
            )
        await self._sync(run.id)  # earlier steps committed with (or before) the key
        kind = kind_of(step)

        def on_retry() -> None:
            self.metrics.retries.inc(kind=kind)

        if isinstance(step, HttpStep):
            output = await self.http.call(
                step.connector,
                step.method,
                path,
                query=query,
                body=body,
                timeout_s=step.timeout_s,
                retries=step.retries,
                backoff_s=step.backoff_s,
                backoff_cap_s=step.backoff_cap_s,
                idem_key=idem_key,
                trace_id=run.trace_id,
                attempt_log=attempt_log,
                on_retry=on_retry,
            )
        elif step.webhook is not None:
            output = await self.http.call(
                step.webhook,
                "POST",
                path,
                body=body,
                timeout_s=step.timeout_s,
                retries=step.retries,
                backoff_s=step.backoff_s,
                backoff_cap_s=step.backoff_cap_s,
                idem_key=idem_key,
                trace_id=run.trace_id,
                attempt_log=attempt_log,
                on_retry=on_retry,
            )
        else:
            assert step.nats is not None
            output = await self._publish(step, body, idem_key, run.trace_id, attempt_log, on_retry)
        return _Outcome(output, input=request)

    async def _publish(
        self,
        step: EmitStep,
        payload: Any,
        idem_key: str,
        trace_id: str,
        attempt_log: list[dict[str, Any]],
        on_retry: Callable[[], None],
    ) -> dict[str, Any]:
        from aivos.edge.workflows.backoff import backoff_delay

        assert step.nats is not None
        subject = event_subject(self.settings.site_id, step.nats)
        data = msgspec.json.encode(payload)
        for attempt in range(1, step.retries + 2):
            entry: dict[str, Any] = {"attempt": len(attempt_log) + 1, "at": time.time()}
            nc = self.nc_provider() if self.nc_provider is not None else None
            try:
                if nc is None or not nc.is_connected:
                    raise StepFailed("link_down", "no site NATS connection", retryable=True)
                await nc.publish(
                    subject, data, headers={"Nats-Msg-Id": idem_key, "Aivos-Trace-Id": trace_id}
                )
                await nc.flush(timeout=step.timeout_s)
                entry["outcome"] = "ok"
                attempt_log.append(entry)
                return {"subject": subject, "bytes": len(data)}
            except StepFailed as exc:
                entry.update(outcome="link_down", error=exc.reason)
            except Exception as exc:
                entry.update(outcome="publish_error", error=type(exc).__name__)
            attempt_log.append(entry)
            if attempt <= step.retries:
                on_retry()
                await asyncio.sleep(backoff_delay(attempt, step.backoff_s, step.backoff_cap_s))
        raise StepFailed("publish_failed", f"could not publish to {subject}")

    async def _approve(
        self,
        wf: Workflow,
        step: ApproveStep,
        run: _state.RunRow,
        seq: int,
        prior: _state.StepRow | None,
        ctx: dict[str, Any],
    ) -> _Outcome:
        conn = self.store.readers.get()
        if prior is None or prior.state != "waiting":
            message = Template(step.message).render(ctx)
            review = {ref: render_value("{" + ref + "}", ctx, strict=False) for ref in step.review}
            wait_until = time.time() + step.timeout_s
            await self._ordered(run.id)
            await self.store.transact(
                lambda c: _state.begin_step(
                    c,
                    run_id=run.id,
                    seq=seq,
                    step_id=step.id,
                    kind="approve",
                    state="waiting",
                    input={"message": message, "review": review},
                    wait_until=wait_until,
                    run_state="waiting_approval",
                )
            )
            await self._sync(run.id)
            await self._append_audit(
                AuditRecord(
                    id=new_id(),
                    kind="workflow_step",
                    trace_id=run.trace_id,
                    decision="waiting",
                    detail={
                        "workflow": wf.name,
                        "run_id": run.id,
                        "seq": seq,
                        "step": step.id,
                        "step_kind": "approve",
                    },
                )
            )
        else:
            # resumed (restart, or /retry after a cancel): the run is waiting again
            await self.store.transact(
                lambda c: c.execute(
                    "UPDATE workflow_runs SET state = 'waiting_approval' WHERE id = ?", (run.id,)
                )
            )
        self._paused.setdefault(run.id, asyncio.Event()).set()
        event = self._approval_events.setdefault(run.id, asyncio.Event())
        default = "approved" if step.default == "approve" else "rejected"
        while True:
            row = _state.in_flight(conn, run.id, seq)
            assert row is not None
            if row.decision is not None:
                break
            left = (row.wait_until or 0) - time.time()
            if left <= 0:
                await self.store.transact(
                    lambda c: _state.decide(c, run.id, seq, default, "timeout", None)
                )
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=left)
            event.clear()
        self._paused.pop(run.id, None)
        output = {"decision": row.decision, "by": row.decided_by, "note": row.note}
        if row.decision == "approved":
            return _Outcome(output, input=row.input)
        if step.on_reject is not None:
            return _Outcome(output, next=step.on_reject, input=row.input)
        return _Outcome(output, terminal="rejected", input=row.input)
