"""Completes escalation jobs once the uplink is back: claim, generate, store, notify.

A job is claimed (state `running`) before generation and finished in one write after it,
so a job is never completed twice; a job that was `running` when the agent died (or when
`run` failed and the supervisor restarted it) is put back to `waiting_for_uplink` by
`recover`, which `run` calls first. A job whose generation does not fit its budget would
miss it the same way on every attempt: each miss doubles the next attempt's budget (up to
`_MAX_BUDGET_GROWTH` times), so a long answer finishes instead of retrying for ever.
Telling the caller (`notify`, the job's callback) never fails the job or the runner: an
error there is logged and counted in `notify_failures`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from aivos.edge.candidates import CandidateKeeper
from aivos.edge.escalation import Escalator, generator_of
from aivos.edge.results import Passage
from aivos.edge.store import Job, Store
from aivos.shared.errors import (
    AivosError,
    DeadlineExceeded,
    GenerationFailed,
    LinkDown,
    ResidencyDenied,
)

__all__ = ["EscalationJobRunner"]

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 5
_MAX_BUDGET_GROWTH = 8  # the default 60 s job budget grows to 8 minutes at most
# kept in the job's result while it waits; taken out when it finishes
_DEADLINE_MISSES = "deadline_misses"


class EscalationJobRunner:
    def __init__(
        self,
        store: Store,
        escalator: Escalator,
        *,
        budget_s: float,
        retry_interval_s: float,
        notify: Callable[[str], Awaitable[None]],
        on_done: Callable[[Job, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.escalator = escalator
        self.budget_s = budget_s
        self.retry_interval_s = retry_interval_s
        self.notify = notify
        self.on_done = on_done
        # a finished job's answer follows its request's hard example to the cloud review
        self.candidates = CandidateKeeper(store)
        self._wake = asyncio.Event()
        self.completed = 0
        self.failed = 0
        self.notify_failures = 0

    def wake(self) -> None:
        self._wake.set()

    async def enqueue(self, context: dict[str, Any]) -> str:
        """A durable escalation job for a request answered with a fallback; its id."""
        job = await self.store.create_job("escalation", context, state="waiting_for_uplink")
        self.wake()
        return job.id

    async def recover(self) -> None:
        for job in self.store.list_jobs("running", limit=100_000):
            await self.store.update_job(job.id, state="waiting_for_uplink")

    async def run(self) -> None:
        await self.recover()
        while True:
            if self.escalator.available:
                progressed = await self._drain_once()
                if progressed:
                    continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.retry_interval_s)

    async def _drain_once(self) -> bool:
        job = await self.store.claim_job(states=("waiting_for_uplink",))
        if job is None:
            return False
        # escalation jobs carry their context as the request; async /v1/jobs jobs that
        # escalated keep it under result["escalation"]
        request = (job.result or {}).get("escalation") or job.request
        misses = int((job.result or {}).get(_DEADLINE_MISSES, 0))
        budget_s = self.budget_s * min(2**misses, _MAX_BUDGET_GROWTH)
        try:
            prepared = self.escalator.prepare(
                request["request_id"],
                request["text"],
                msgspec.convert(request.get("passages", []), list[Passage]),
                request.get("memory", []),
                priority="background",  # nobody waits on it: live requests go first
                model_class=request.get("model_class"),
                intent=request.get("intent"),
            )
            answer, done = await self.escalator.complete(prepared, budget_s)
        except ResidencyDenied as exc:
            await self._fail(job, f"policy: {exc}")
            return True
        except GenerationFailed as exc:
            if job.attempts >= _MAX_ATTEMPTS:
                await self._fail(job, f"generation failed: {exc}")
            else:
                await self.store.update_job(job.id, state="waiting_for_uplink", error=str(exc))
            return False
        except DeadlineExceeded:
            log.info(
                "job %s back to waiting_for_uplink (DeadlineExceeded after %.1f s)",
                job.id,
                budget_s,
            )
            waiting = {**(job.result or {}), _DEADLINE_MISSES: misses + 1}
            await self.store.update_job(
                job.id, state="waiting_for_uplink", result=waiting, error="DeadlineExceeded"
            )
            return False
        except (LinkDown, AivosError) as exc:  # no responders, saturated, link lost
            log.info("job %s back to waiting_for_uplink (%s)", job.id, type(exc).__name__)
            await self.store.update_job(
                job.id, state="waiting_for_uplink", error=type(exc).__name__
            )
            return False
        result = dict(job.result or {})
        result.pop(_DEADLINE_MISSES, None)
        result.update(
            {
                "answer": answer,
                "answered_by": "cloud",
                "backend": done.backend,
                "n_tokens": done.n_tokens,
                "pii_counts": prepared.pii_counts,
                "generator": msgspec.to_builtins(generator_of(done)),
            }
        )
        await self.store.update_job(job.id, state="done", result=result, error=None)
        self.completed += 1
        await self.candidates.attach_answer(self.escalator.gate, request["request_id"], answer)
        if self.on_done is not None:
            await self.on_done(job, result)
        await self._tell(job.id)
        return True

    async def _fail(self, job: Job, reason: str) -> None:
        self.failed += 1
        await self.store.update_job(job.id, state="failed", error=reason)
        await self._tell(job.id)

    async def _tell(self, job_id: str) -> None:
        """Notify; the job is already finished in the store, whatever happens here."""
        try:
            await self.notify(job_id)
        except Exception as exc:
            self.notify_failures += 1
            log.warning("job %s: notification failed (%s)", job_id, type(exc).__name__)
