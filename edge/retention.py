"""The one periodic retention task: deletes what the configured retention no longer keeps.

Each pass, in its own short writer transaction per table: outbox records already sent
(`retention.outbox_sent_days`), session memory (`memory.retention_days`), jobs in a final
state (`retention.jobs_days`), finished workflow runs with their steps (`retention.runs_days`),
expired webhook delivery ids (the replay cache), unlabelled hard examples kept on site
(`retention.candidates_days`) and feedback votes with their rated queries' embeddings
(`retention.feedback_days`; `on_feedback_purged` then tells the feedback book to read its
votes again). Pending outbox records, unfinished jobs
and runs, and the audit log are never touched. A failed pass (e.g. the disk is full) is
logged, counted and retried at the next interval. Started with a `Supervisor` (the agent
does), the loop is the supervised task "retention": anything else that breaks it restarts
it after a back-off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from aivos.edge.settings import MemorySettings, RetentionSettings
from aivos.edge.store import Store
from aivos.edge.store._codec import iso_ago
from aivos.edge.store.feedback import purge_before as purge_feedback
from aivos.edge.store.reviewed import purge_unlabelled
from aivos.edge.supervise import Supervisor
from aivos.edge.workflows.journal import purge_finished_runs
from aivos.shared.metrics import Registry

__all__ = ["Retention", "Purged"]

log = logging.getLogger(__name__)


class Purged(msgspec.Struct, frozen=True, kw_only=True):
    """Rows deleted by one pass."""

    outbox: int = 0
    memory: int = 0
    jobs: int = 0
    runs: int = 0
    deliveries: int = 0
    candidates: int = 0
    feedback: int = 0


class Retention:
    def __init__(
        self,
        store: Store,
        settings: RetentionSettings,
        memory: MemorySettings,
        *,
        registry: Registry | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.memory = memory
        self._task: asyncio.Task[None] | None = None
        # the agent's feedback book re-reads its votes when old ones were deleted
        self.on_feedback_purged: Callable[[], None] | None = None
        self._supervisor: Supervisor | None = None
        registry = registry or Registry()
        self._deleted = registry.counter(
            "aivos_retention_deleted_total", "Rows deleted by the retention task, by table."
        )
        self._failures = registry.counter(
            "aivos_retention_failures_total", "Retention passes that failed (retried later)."
        )

    async def run_once(self) -> Purged:
        """One pass over every table; returns what it deleted."""
        s, store = self.settings, self.store
        purged = Purged(
            outbox=await store.purge_sent(iso_ago(s.outbox_sent_days)),
            memory=await store.purge_memory(self.memory.retention_days),
            jobs=await store.purge_jobs(iso_ago(s.jobs_days)),
            runs=await store.transact(lambda c: purge_finished_runs(c, iso_ago(s.runs_days))),
            deliveries=await store.purge_deliveries(),
            candidates=await store.transact(
                lambda c: purge_unlabelled(c, iso_ago(s.candidates_days))
            ),
            feedback=await store.transact(lambda c: purge_feedback(c, iso_ago(s.feedback_days))),
        )
        if purged.feedback and self.on_feedback_purged is not None:
            self.on_feedback_purged()
        for table, n in msgspec.structs.asdict(purged).items():
            if n:
                self._deleted.inc(n, table=table)
        return purged

    def start(self, supervisor: Supervisor | None = None) -> None:
        if supervisor is not None:
            self._supervisor = supervisor
            supervisor.start("retention", self._loop)
        elif self._task is None:
            self._task = asyncio.create_task(self._loop(), name="aivos-retention")

    async def stop(self) -> None:
        if self._supervisor is not None:
            await self._supervisor.stop("retention")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                purged = await self.run_once()
                log.debug("retention pass: %s", purged)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retried at the next interval
                self._failures.inc()
                log.warning("retention pass failed: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.interval_s)
