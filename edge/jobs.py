"""Asynchronous requests: accepted at once, answered in the background through the request
pipeline, polled by id, and reported to the caller's callback URL when they finish.

A request whose route escalates is answered with a fallback and left `waiting_for_uplink`
under the same id; the escalation job runner completes it (and notifies) when it can.

A job whose run cannot be recorded (a full disk: `DiskFull` from the request pipeline or
from storing its outcome) stays `queued` and is retried every `retry_interval_s` until the
store takes writes again; an outcome already computed is kept (in memory) and only stored
on retry, so the request is not answered twice. After a restart, `resume` runs every job
still `queued`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import msgspec

from aivos.edge.callbacks import CallbackSender, validate_callback_url
from aivos.edge.jobrunner import EscalationJobRunner
from aivos.edge.pipeline import Pipeline, check_text
from aivos.edge.results import Query, StoredQuery
from aivos.edge.store import Job, Store
from aivos.shared.errors import DiskFull, JobNotFound, NotFound, StoreClosed

__all__ = ["AsyncJobs", "JobStatus", "JobSubmission", "job_status"]

log = logging.getLogger(__name__)


class JobSubmission(Query, Protocol):
    @property
    def callback_url(self) -> str | None: ...


class JobStatus(msgspec.Struct, frozen=True):
    """A job as its poller and its callback see it."""

    job_id: str
    status: str
    created_at: str
    updated_at: str
    result: dict[str, Any] | None = None
    error: str | None = None


def job_status(job: Job) -> JobStatus:
    return JobStatus(
        job_id=job.id,
        status=job.state,
        created_at=job.created_at,
        updated_at=job.updated_at,
        result=job.result,
        error=job.error,
    )


class _Outcome(msgspec.Struct, frozen=True):
    """How a job's run ended, as `store.update_job` takes it."""

    state: str
    fields: dict[str, Any]


class AsyncJobs:
    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        escalations: EscalationJobRunner,
        callbacks: CallbackSender,
        *,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        max_text_chars: int,
        callback_allow_hosts: list[str],
        retry_interval_s: float = 2.0,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.escalations = escalations
        self.callbacks = callbacks
        self._spawn = spawn
        self._max_text = max_text_chars
        self._allow_hosts = callback_allow_hosts
        self._retry_s = retry_interval_s
        self._outcomes: dict[str, _Outcome] = {}  # computed, not yet stored (disk full)
        self._stalled: set[str] = set()  # queued jobs whose run could not be recorded
        self._retrying = False

    async def submit(self, req: JobSubmission) -> JobStatus:
        """Accept a request (it runs in the background); raises for a bad text or callback."""
        check_text(req.text, self._max_text)
        if req.callback_url is not None:
            validate_callback_url(req.callback_url, self._allow_hosts)
        job = await self.store.create_job(
            "infer",
            {"text": req.text, "session_id": req.session_id, "metadata": req.metadata},
            callback_url=req.callback_url,
        )
        self._spawn(self.run(job.id))
        return job_status(job)

    @property
    def stalled(self) -> int:
        """Queued jobs whose run could not be recorded yet (waiting for disk space)."""
        return len(self._stalled)

    def status(self, job_id: str) -> JobStatus:
        try:
            return job_status(self.store.get_job(job_id))
        except NotFound as exc:
            raise JobNotFound(job_id) from exc

    async def run(self, job_id: str) -> None:
        """Answer a queued job and store its outcome; one that cannot be recorded yet (a
        full disk) stays queued and is retried later."""
        try:
            await self._run(job_id)
        except StoreClosed:
            log.info("job %s left queued: the store is closing (resumed at start)", job_id)
        except Exception as exc:
            log.warning("job %s not recorded (%s); retrying", job_id, type(exc).__name__)
            self._stalled.add(job_id)
            if not self._retrying:
                self._retrying = True
                self._spawn(self._retry_stalled())

    async def _run(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job.state != "queued":
            self._outcomes.pop(job_id, None)
            return
        outcome = self._outcomes.get(job_id)
        if outcome is None:
            outcome = await self._answer(job)  # DiskFull: nothing recorded, run again later
            self._outcomes[job_id] = outcome
        await self.store.update_job(job_id, state=outcome.state, **outcome.fields)
        self._outcomes.pop(job_id, None)
        if outcome.state == "waiting_for_uplink":
            self.escalations.wake()
            return
        try:
            await self.notify(job_id)
        except Exception as exc:  # the job is finished in the store; the callback is extra
            log.warning("job %s: notification failed (%s)", job_id, type(exc).__name__)

    async def _answer(self, job: Job) -> _Outcome:
        request = job.request
        query = StoredQuery(
            text=request["text"],
            session_id=request.get("session_id"),
            metadata=request.get("metadata"),
        )
        try:
            result, escalation = await self.pipeline.infer_job(query, job.id)
        except (DiskFull, StoreClosed):
            raise
        except Exception as exc:
            log.warning("job %s failed: %s", job.id, type(exc).__name__)
            return _Outcome("failed", {"error": str(exc)})
        if escalation is None:
            return _Outcome("done", {"result": msgspec.to_builtins(result)})
        waiting = {**msgspec.to_builtins(result), "escalation": escalation}
        return _Outcome("waiting_for_uplink", {"result": waiting})

    async def _retry_stalled(self) -> None:
        """Every `retry_interval_s`, run again the jobs that could not be recorded."""
        try:
            while self._stalled:
                await asyncio.sleep(self._retry_s)
                for job_id in sorted(self._stalled):
                    self._stalled.discard(job_id)
                    await self.run(job_id)  # back in `_stalled` if it fails again
        finally:
            self._retrying = False

    async def notify(self, job_id: str) -> None:
        """POST the job's status to its callback URL, if it has one (signed, re-checked
        against the allow-list: edge/callbacks.py)."""
        job = self.store.get_job(job_id)
        if job.callback_url:
            await self.callbacks.send(job.callback_url, job_status(job))

    async def resume(self) -> None:
        """Jobs accepted before a restart and not yet processed run now."""
        for job in self.store.list_jobs("queued", limit=10_000):
            await self.run(job.id)
