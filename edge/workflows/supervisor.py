"""`RunSupervisor`: one asyncio task per active run, and the operations that start, wait
for, decide, cancel and retry runs.

A run's state lives in the journal; a task only drives it. `resume_all` (at start) gives
every run left `running` or `waiting_approval` a task again. A task that crashes (a full
disk failing a journal write, say) is started again after a back-off, exactly as a
restart would resume it from the journal: a run is never left `running` with no task.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aivos.edge.store import Store
from aivos.edge.workflows import audit
from aivos.edge.workflows.driver import RunDriver
from aivos.edge.workflows.errors import RunConflict
from aivos.edge.workflows.journal import RunJournal
from aivos.edge.workflows.metrics import WorkflowMetrics
from aivos.edge.workflows.owners import set_run_owner
from aivos.edge.workflows.rows import ACTIVE, TERMINAL, RunRow
from aivos.edge.workflows.signals import RunSignals
from aivos.edge.workflows.spec import Workflow
from aivos.edge.workflows.views import RunResult, result_of
from aivos.shared.errors import NotFound
from aivos.shared.ids import new_id

__all__ = ["RunSupervisor"]

log = logging.getLogger(__name__)

_REDRIVE_FIRST_S = 0.5  # back-off before a crashed run is driven again, doubling per crash
_REDRIVE_MAX_S = 30.0


class RunSupervisor:
    def __init__(
        self,
        journal: RunJournal,
        signals: RunSignals,
        driver: RunDriver,
        metrics: WorkflowMetrics,
        *,
        store: Store | None = None,
    ) -> None:
        self._store = store  # for the runs' owners (owners.py); None: runs have no owner
        self._journal = journal
        self._signals = signals
        self._driver = driver
        self._metrics = metrics
        self.tasks: dict[str, asyncio.Task[None]] = {}  # run id -> the task driving it
        self._crashes: dict[str, int] = {}  # run id -> crashes in a row (back-off)
        self._redrive: dict[str, asyncio.TimerHandle] = {}
        self._stopped = False

    def resume_all(self) -> None:
        for run in self._journal.active_runs():
            self._spawn(run.id)

    async def stop(self) -> None:
        """Stop driving runs (they stay persisted and resume at the next start)."""
        self._stopped = True
        for handle in self._redrive.values():
            handle.cancel()
        self._redrive.clear()
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()
        await self._journal.settle_all()

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
        handle to poll. With `dedup_key`, a second start returns the first run. `owner`:
        the token the run is started for (recorded before its id is returned)."""
        run_id = new_id()
        run = await self._journal.create_run(
            run_id=run_id,
            workflow=workflow.name,
            digest=workflow.digest,
            trigger=trigger,
            inputs=inputs,
            cursor=workflow.steps[0].id,
            trace_id=trace_id or new_id(),
            dedup_key=dedup_key,
        )
        if run.id != run_id:  # a redelivery
            return await self.wait(run.id, wait_s)
        self._metrics.runs_started.inc(workflow=workflow.name, trigger=trigger.split(":")[0])
        self._spawn(run_id, run)
        if owner is not None and self._store is not None:
            await self._journal.sync(run_id)  # the run's row is on disk
            await self._store.transact(lambda c: set_run_owner(c, run_id, owner))
        return await self.wait(run_id, wait_s)

    async def wait(self, run_id: str, wait_s: float, *, return_on_pause: bool = True) -> RunResult:
        """Wait up to `wait_s` for the run to finish (or to pause for an operator)."""
        task = self.tasks.get(run_id)
        if task is not None and wait_s > 0:
            paused = self._signals.paused(run_id)
            if not return_on_pause:
                paused = asyncio.Event()
            pause_wait = asyncio.ensure_future(paused.wait())
            try:
                await asyncio.wait(
                    {task, pause_wait}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                pause_wait.cancel()
        await self._journal.sync(run_id)  # a handle names a run that is on disk
        return result_of(self._journal.get_run(run_id))

    async def decide(self, run_id: str, decision: str, by: str, note: str | None) -> RunResult:
        run = self._journal.get_run(run_id)
        if run.state != "waiting_approval":
            raise RunConflict(f"run {run_id} is {run.state}, not waiting for approval")
        if not await self._journal.decide(run_id, run.seq + 1, decision, by, note):
            raise RunConflict(f"run {run_id} was already decided")
        await self._audit(run, "approval", {"decision": decision, "operator": by})
        event = self._signals.approval_waiter(run_id)
        if event is not None:
            event.set()
        else:
            self._spawn(run_id)
        return await self.wait(run_id, 0.5)

    async def cancel(self, run_id: str, by: str) -> RunResult:
        run = self._journal.get_run(run_id)
        if run.state in TERMINAL:
            raise RunConflict(f"run {run_id} is already {run.state}")
        task = self.tasks.pop(run_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # writes the run already submitted land first, so "cancelled" is the last word
        await self._journal.settle(run_id)
        await self._journal.end_run(
            run_id, state="cancelled", cursor=run.cursor, error=f"cancelled by {by}"
        )
        self._metrics.runs.inc(workflow=run.workflow, state="cancelled")
        await self._audit(run, "cancel", {"operator": by})
        return result_of(self._journal.get_run(run_id))

    async def retry(self, run_id: str, by: str, *, wait_s: float = 0.0) -> RunResult:
        """Run a failed, timed-out or cancelled run again from the step that stopped it
        (completed steps are not repeated; a side effect re-sends its idempotency key)."""
        run = self._journal.get_run(run_id)
        if run.state not in ("failed", "timed_out", "cancelled"):
            raise RunConflict(f"run {run_id} is {run.state}; only stopped runs can be retried")
        if run.cursor is None:
            raise RunConflict(f"run {run_id} has no step left to retry")
        await self._journal.reopen(run_id)
        await self._audit(run, "retry", {"operator": by})
        self._spawn(run_id)
        return await self.wait(run_id, wait_s)

    async def _audit(self, run: RunRow, action: str, detail: dict[str, Any]) -> None:
        await self._journal.audit(audit.operator_action(run, action, detail))

    def _spawn(self, run_id: str, new_run: RunRow | None = None) -> None:
        if run_id in self.tasks:
            return
        task = asyncio.create_task(
            self._driver.drive(run_id, new_run), name=f"workflow-run-{run_id}"
        )
        self.tasks[run_id] = task

        def done(t: asyncio.Task[None], rid: str = run_id) -> None:
            if self.tasks.get(rid) is t:
                del self.tasks[rid]
            self._signals.forget(rid)
            if t.cancelled():
                return
            if t.exception() is None:
                self._crashes.pop(rid, None)
                return
            crashes = self._crashes[rid] = self._crashes.get(rid, 0) + 1
            delay = min(_REDRIVE_MAX_S, _REDRIVE_FIRST_S * 2 ** (crashes - 1))
            log.error(
                "workflow run %s crashed (%d in a row); driving it again in %.1fs",
                rid,
                crashes,
                delay,
                exc_info=t.exception(),
            )
            if not self._stopped:
                loop = asyncio.get_running_loop()
                self._redrive[rid] = loop.call_later(delay, self._drive_again, rid)

        task.add_done_callback(done)

    def _drive_again(self, run_id: str) -> None:
        """A crashed run, resumed from the journal (a run that ended meanwhile is left alone
        by the driver)."""
        self._redrive.pop(run_id, None)
        if self._stopped:
            return
        try:
            run = self._journal.get_run(run_id)
        except NotFound:  # its creation never reached the disk: nothing was acknowledged
            self._crashes.pop(run_id, None)
            return
        if run.state in ACTIVE:
            self._spawn(run_id)
        else:
            self._crashes.pop(run_id, None)
