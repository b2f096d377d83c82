"""The one place a request is recorded: its audit row (and its session's turns) written
durably before the caller is answered, then counted in the metrics and rolling stats."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable
from typing import Any

import msgspec

from aivos.edge.candidates import CandidateKeeper, candidate_reason
from aivos.edge.observability import AgentMetrics
from aivos.edge.results import InferResult, Outcome, Query, Understood
from aivos.edge.stats import RollingStats
from aivos.edge.store import AuditRecord, AuditRow, Store
from aivos.edge.uplink.sync import OutboxDrainer
from aivos.shared.errors import QuotaExceeded
from aivos.shared.residency import DataClass, ExitGate
from aivos.shared.tracing import current_trace_id

__all__ = ["Recorder"]


async def _outcome(write: Awaitable[Any]) -> Any:
    """The write's result, or the exception it raised (as gather(return_exceptions=True))."""
    try:
        return await write
    except Exception as exc:
        return exc


class Recorder:
    """`gate` is replaced by the agent when a remote config changes the residency policy."""

    def __init__(
        self,
        store: Store,
        drainer: OutboxDrainer,
        gate: ExitGate,
        metrics: AgentMetrics,
        stats: RollingStats,
        *,
        site_id: str,
        memory_turns: int,
    ) -> None:
        self.store = store
        self.drainer = drainer
        self.gate = gate
        self.metrics = metrics
        self.stats = stats
        self._site = site_id
        self._turns = memory_turns
        # hard examples for the review loop: queued only where the policy lets them leave
        self.candidates = CandidateKeeper(store)

    async def record(self, u: Understood, query: Query, outcome: Outcome) -> InferResult:
        """Durably audit the request (and its session's turns), then count it."""
        latency_ms = (time.perf_counter() - u.started) * 1000
        result = InferResult(
            request_id=u.request_id,
            intent=u.prediction.intent,
            confidence=round(float(u.prediction.confidence), 4),
            decision=u.route.decision,
            answer=outcome.answer,
            passages=u.passages,
            model_version=u.model_version,
            latency_ms=round(latency_ms, 3),
            job_id=outcome.job_id,
            answered_by=outcome.answered_by,
            # the question was cut to the intent model's length, or the generated answer was
            truncated=u.prediction.truncated or outcome.cut,
            run_id=outcome.run_id,
            generator=outcome.generator,
        )
        # a hard example leaves the site under the policy, or stays for the site's own review
        candidate = None
        reason = candidate_reason(u, self.candidates.band)
        if reason is not None:
            candidate = self.candidates.payload(u, query.text, result, outcome, reason)
        try:
            await self._write(query, result, outcome, candidate)
        except Exception:
            self.stats.record_error()
            raise
        self.metrics.observe_request(result.decision, latency_ms / 1000)
        self.stats.record(result.decision, latency_ms / 1000)
        return result

    def candidate_feedback(self, conn: sqlite3.Connection, row: AuditRow, helpful: bool) -> None:
        """`FeedbackBook` hook, inside the vote's transaction: a rated candidate's rating
        follows it to the cloud."""
        if row.detail.get("candidate"):
            self.candidates.feedback_write(self.gate, conn, row.id, helpful)

    async def _write(
        self,
        query: Query,
        result: InferResult,
        outcome: Outcome,
        candidate: dict[str, Any] | None = None,
    ) -> None:
        """The audit row and the turns are issued together so they land in one group
        commit. A fallback's job is written in the audit row's own op: committed before the
        answer, as the row that names it, and never one without the other; so is a hard
        example, after the row and in a savepoint of its own (edge/candidates.py), so that
        its failure costs only itself. A generated answer's row names the model that
        produced it (`detail.generator`); a hard example's row names why it is one
        (`detail.candidate`)."""
        detail: dict[str, Any] = {
            "reason": outcome.reason,
            "answered_by": result.answered_by,
            "n_passages": len(result.passages),
            "job_id": result.job_id,
            "site": self._site,
        }
        if outcome.generator is not None:
            detail["generator"] = msgspec.to_builtins(outcome.generator)
        if outcome.cut:
            detail["answer_cut"] = True
        if candidate is not None:
            detail["candidate"] = candidate["reason"]
        audit = AuditRecord(
            id=result.request_id,
            kind="decision",
            intent=result.intent,
            confidence=result.confidence,
            decision=result.decision,
            model_version=result.model_version,
            latency_ms=result.latency_ms,
            pii_counts=outcome.pii_counts,
            trace_id=current_trace_id(),
            detail=detail,
        )
        # best effort in the row's op: a full outbox drops the candidate, never the row
        hard_example = (
            None if candidate is None else self.candidates.keep_write(self.gate, candidate)
        )
        writes: list[Awaitable[Any]] = [
            self.store.append_audit(
                audit,
                sync=self.gate.allows(DataClass.AUDIT),
                before=outcome.job_write,
                after=hard_example,
            )
        ]
        if query.session_id and self._turns > 0:
            writes.append(self.store.add_turn(query.session_id, "user", query.text))
            writes.append(self.store.add_turn(query.session_id, "assistant", result.answer or ""))
        # one write (no session) is awaited directly: gather() would wrap it in a task
        results = (
            [await _outcome(writes[0])]
            if len(writes) == 1
            else await asyncio.gather(*writes, return_exceptions=True)
        )
        if hard_example is not None and not isinstance(results[0], BaseException):
            # committed with the row: counted, even when a turn failed
            self.candidates.settle(hard_example)
        for written in results:
            if isinstance(written, BaseException):
                if isinstance(written, QuotaExceeded):
                    self.metrics.outbox_refused.inc()
                raise written
        self.drainer.wake()
