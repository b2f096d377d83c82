"""Asynchronous requests: accepted at once, answered in the background through the request
pipeline, polled by id, and reported to the caller's callback URL when they finish.

A request whose route escalates is answered with a fallback and left `waiting_for_uplink`
under the same id; the escalation job runner completes it (and notifies) when it can.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import msgspec

from aivos.edge.callbacks import CallbackSender, validate_callback_url
from aivos.edge.jobrunner import EscalationJobRunner
from aivos.edge.pipeline import Pipeline, check_text
from aivos.edge.results import Query, StoredQuery
from aivos.edge.store import Job, Store
from aivos.shared.errors import JobNotFound, NotFound

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
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.escalations = escalations
        self.callbacks = callbacks
        self._spawn = spawn
        self._max_text = max_text_chars
        self._allow_hosts = callback_allow_hosts

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

    def status(self, job_id: str) -> JobStatus:
        try:
            return job_status(self.store.get_job(job_id))
        except NotFound as exc:
            raise JobNotFound(job_id) from exc

    async def run(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job.state != "queued":
            return
        request = job.request
        query = StoredQuery(
            text=request["text"],
            session_id=request.get("session_id"),
            metadata=request.get("metadata"),
        )
        try:
            result, escalation = await self.pipeline.infer_job(query, job_id)
            if escalation is None:
                await self.store.update_job(
                    job_id, state="done", result=msgspec.to_builtins(result)
                )
            else:
                await self.store.update_job(
                    job_id,
                    state="waiting_for_uplink",
                    result={**msgspec.to_builtins(result), "escalation": escalation},
                )
                self.escalations.wake()
                return
        except Exception as exc:
            log.warning("job %s failed: %s", job_id, type(exc).__name__)
            await self.store.update_job(job_id, state="failed", error=str(exc))
        await self.notify(job_id)

    async def notify(self, job_id: str) -> None:
        """POST the job's status to its callback URL, if it has one."""
        job = self.store.get_job(job_id)
        if job.callback_url:
            await self.callbacks.send(job.callback_url, job_status(job))

    async def resume(self) -> None:
        """Jobs accepted before a restart and not yet processed run now."""
        for job in self.store.list_jobs("queued", limit=10_000):
            await self.run(job.id)
