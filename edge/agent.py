"""The running agent: owns the model, batcher, store, knowledge index and uplink, and
implements what the HTTP handlers ask for. Handlers stay thin; this is the one place
that sees the whole request path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from edge.answers import fallback_answer, local_answer
from edge.api.errors import ApiError
from edge.api.schemas import (
    DocumentOut,
    FactOut,
    InferRequest,
    InferResponse,
    JobAccepted,
    JobOut,
    JobRequest,
    KnowledgeIn,
    PassageOut,
    ReadyOut,
    SearchOut,
    SessionOut,
    TurnOut,
)
from edge.batcher import MicroBatcher
from edge.callbacks import CallbackSender, validate_callback_url
from edge.intent.runtime import IntentModel, Prediction
from edge.knowledge.index import KnowledgeIndex
from edge.observability import AgentMetrics
from edge.router import RouterPolicy, load_router_policy, route
from edge.settings import EdgeSettings
from edge.store import AuditRecord, Store
from shared.errors import NotFound, QuotaExceeded
from shared.ids import new_id

__all__ = ["Agent"]

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.metrics = AgentMetrics()
        self.policy: RouterPolicy = settings.router
        self.model: IntentModel
        self.store: Store
        self.index: KnowledgeIndex
        self.batcher: MicroBatcher[Prediction]
        self.callbacks = CallbackSender(settings.jobs.callback_timeout_s)
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        data = settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        threads = settings.model.intra_op_threads or None
        self.model = await asyncio.to_thread(
            IntentModel.load, settings.bundle_path, settings.model.providers, threads
        )
        if settings.router_policy:
            self.policy = load_router_policy(Path(settings.router_policy))
        self.policy.validate_against(list(self.model.labels))
        self.store = await asyncio.to_thread(
            Store.open,
            data,
            outbox_quota=settings.outbox.quota,
            memory_retention_days=settings.memory.retention_days,
            memory_turns_keep=max(1, settings.memory.turns),
        )
        self.tokens = self.store.tokens
        self.index = await asyncio.to_thread(KnowledgeIndex.open, data / "knowledge", self.model)
        self.batcher = MicroBatcher(
            self.model.classify_batch,
            max_batch=settings.model.max_batch,
            max_wait_ms=settings.model.max_wait_ms,
            concurrency=settings.model.concurrent_batches,
        )
        self.batcher.stats.observer = self.metrics.observe_batch
        await self.batcher.start()
        self.metrics.bind(self)
        self._started = True
        self._spawn(self._resume_jobs())
        log.info(
            "agent started",
            extra={
                "fields": {"model_version": self.model.version, "provider": self.model.provider}
            },
        )

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._started:
            await self.batcher.close()
            await asyncio.to_thread(self.index.close)
            await asyncio.to_thread(self.store.close)
        await self.callbacks.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def readiness(self) -> ReadyOut:
        checks = {"model": False, "db": False, "index": False}
        if self._started:
            checks["model"] = True
            checks["index"] = self.index is not None
            checks["db"] = await self.store.check_writable()
        return ReadyOut(
            ready=all(checks.values()),
            checks=checks,
            model_version=self.model.version if self._started else None,
            provider=self.model.provider if self._started else None,
        )

    # ----- inference -------------------------------------------------------------------------

    def _check_text(self, text: str) -> str:
        if len(text) > self.settings.limits.max_text_chars:
            raise ApiError(
                413,
                "text_too_long",
                f"text has {len(text)} characters; the limit is {self.settings.limits.max_text_chars}",
            )
        if not text.strip():
            raise ApiError(400, "empty_text", "text must contain non-whitespace characters")
        return text

    async def _understand(self, text: str) -> tuple[Prediction, list[PassageOut], float]:
        started = time.perf_counter()
        prediction = await self.batcher.submit(text)
        model_s = time.perf_counter() - started
        passages = self._retrieve(prediction.embedding, self.settings.knowledge.top_k)
        return prediction, passages, model_s

    def _retrieve(self, vector: Any, k: int) -> list[PassageOut]:
        if k <= 0 or len(self.index) == 0:
            return []
        found = self.index.search_vector(vector, k)
        floor = self.settings.knowledge.min_score
        return [
            PassageOut(
                text=p.text,
                source=p.source,
                score=round(float(p.score), 4),
                doc_id=p.doc_id,
                chunk_id=p.chunk_id,
            )
            for p in found
            if p.score >= floor
        ]

    async def infer(self, req: InferRequest) -> InferResponse:
        started = time.perf_counter()
        text = self._check_text(req.text)
        request_id = new_id()
        prediction, passages, model_s = await self._understand(text)
        decision = route(
            self.policy,
            prediction.intent,
            prediction.confidence,
            self.model.threshold,
            self.model.manifest.oos_label,
        )
        job_id: str | None = None
        if decision.decision == "local":
            answer, answered_by = (
                local_answer(prediction.intent, passages, decision.template),
                "local",
            )
        elif decision.decision == "refuse":
            answer, answered_by = self.policy.refuse_message, "refusal"
        else:
            job = await self.store.create_job(
                "escalation",
                {"text": text, "session_id": req.session_id, "request_id": request_id},
                state="waiting_for_uplink",
            )
            job_id = job.id
            answer, answered_by = fallback_answer(passages, job_id), "fallback"
        latency_ms = (time.perf_counter() - started) * 1000
        response = InferResponse(
            request_id=request_id,
            intent=prediction.intent,
            confidence=round(float(prediction.confidence), 4),
            decision=decision.decision,
            answer=answer,
            passages=passages,
            model_version=self.model.version,
            latency_ms=round(latency_ms, 3),
            job_id=job_id,
            answered_by=answered_by,
            truncated=prediction.truncated,
        )
        await self._record(req, response, decision.reason)
        self.metrics.observe_request(response.decision, latency_ms / 1000, model_s)
        return response

    async def infer_events(self, req: InferRequest) -> AsyncIterator[str]:
        """SSE stream: one `result` event now (local answers have nothing more to stream)."""
        response = await self.infer(req)
        yield msgspec.json.encode(response).decode()

    async def _record(self, req: InferRequest, resp: InferResponse, reason: str) -> None:
        """Durably audit the decision (and the session's turns) before acknowledging.

        The writes are issued together so they land in the same group commit."""
        audit = AuditRecord(
            id=resp.request_id,
            kind="decision",
            intent=resp.intent,
            confidence=resp.confidence,
            decision=resp.decision,
            model_version=resp.model_version,
            latency_ms=resp.latency_ms,
            detail={
                "reason": reason,
                "answered_by": resp.answered_by,
                "n_passages": len(resp.passages),
                "job_id": resp.job_id,
            },
        )
        writes = [self.store.append_audit(audit)]
        if req.session_id and self.settings.memory.turns > 0:
            writes.append(self.store.add_turn(req.session_id, "user", req.text))
            writes.append(self.store.add_turn(req.session_id, "assistant", resp.answer or ""))
        results = await asyncio.gather(*writes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, QuotaExceeded):
                    self.metrics.outbox_refused.inc()
                raise result

    # ----- jobs ------------------------------------------------------------------------------

    async def submit_job(self, req: JobRequest) -> JobAccepted:
        self._check_text(req.text)
        if req.callback_url is not None:
            validate_callback_url(req.callback_url, self.settings.jobs.callback_allow_hosts)
        job = await self.store.create_job(
            "infer",
            {"text": req.text, "session_id": req.session_id, "metadata": req.metadata},
            callback_url=req.callback_url,
        )
        job_id = job.id
        self._spawn(self._run_job(job_id))
        return JobAccepted(job_id=job_id, status="queued", status_url=f"/v1/jobs/{job_id}")

    async def _run_job(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job.state != "queued":
            return
        request = job.request
        try:
            result = await self.infer(
                InferRequest(
                    text=request["text"],
                    session_id=request.get("session_id"),
                    metadata=request.get("metadata"),
                )
            )
        except Exception as exc:
            log.warning("job %s failed: %s", job_id, type(exc).__name__)
            await self.store.update_job(job_id, state="failed", error=str(exc))
            await self._notify(job_id)
            return
        payload = msgspec.to_builtins(result)
        if result.decision == "escalate":
            await self.store.update_job(job_id, state="waiting_for_uplink", result=payload)
            return
        await self.store.update_job(job_id, state="done", result=payload)
        await self._notify(job_id)

    async def _notify(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job.callback_url:
            await self.callbacks.send(job.callback_url, _job_out(job))

    async def _resume_jobs(self) -> None:
        """Jobs accepted before a restart and not yet processed run now."""
        for job in self.store.list_jobs("queued", limit=10_000):
            await self._run_job(job.id)

    async def get_job(self, job_id: str) -> JobOut:
        try:
            return _job_out(self.store.get_job(job_id))
        except NotFound as exc:
            raise ApiError(404, "job_not_found", f"no job {job_id}") from exc

    # ----- knowledge -------------------------------------------------------------------------

    async def add_document(self, data: KnowledgeIn) -> DocumentOut:
        if not data.text.strip():
            raise ApiError(400, "empty_document", "document text is empty")
        info = await asyncio.to_thread(self.index.add_document, data.source, data.text, data.title)
        return _doc_out(info)

    async def list_documents(self) -> list[DocumentOut]:
        return [_doc_out(d) for d in await asyncio.to_thread(self.index.list_documents)]

    async def delete_document(self, doc_id: str) -> None:
        if not await asyncio.to_thread(self.index.delete_document, doc_id):
            raise ApiError(404, "document_not_found", f"no document {doc_id}")

    async def search(self, query: str, k: int) -> SearchOut:
        self._check_text(query)
        prediction = await self.batcher.submit(query)
        return SearchOut(
            query=query,
            passages=self._retrieve(prediction.embedding, k),
            embedding_version=self.model.embedding_version,
        )

    # ----- memory ----------------------------------------------------------------------------

    async def get_session(self, session_id: str) -> SessionOut:
        turns = self.store.turns(session_id)
        facts = self.store.list_facts(session_id)
        return SessionOut(
            session_id=session_id,
            turns=[TurnOut(role=t.role, text=t.text, ts=t.ts) for t in turns],
            facts=[FactOut(key=f.key, value=f.value, updated_at=f.updated_at) for f in facts],
        )

    async def forget_session(self, session_id: str) -> None:
        await self.store.delete_session(session_id)

    async def put_fact(self, session_id: str, key: str, value: str) -> FactOut:
        fact = await self.store.put_fact(session_id, key, value)
        return FactOut(key=fact.key, value=fact.value, updated_at=fact.updated_at)

    async def get_fact(self, session_id: str, key: str) -> FactOut:
        fact = self.store.get_fact(session_id, key)
        if fact is not None:
            return FactOut(key=fact.key, value=fact.value, updated_at=fact.updated_at)
        raise ApiError(404, "fact_not_found", f"no fact {key!r} in session {session_id}")

    async def delete_fact(self, session_id: str, key: str) -> None:
        if not await self.store.delete_fact(session_id, key):
            raise ApiError(404, "fact_not_found", f"no fact {key!r} in session {session_id}")


def _doc_out(info: Any) -> DocumentOut:
    return DocumentOut(
        doc_id=info.doc_id,
        source=info.source,
        title=info.title,
        n_chunks=info.n_chunks,
        added_at=info.added_at,
    )


def _job_out(job: Any) -> JobOut:
    return JobOut(
        job_id=job.id,
        status=job.state,
        created_at=job.created_at,
        updated_at=job.updated_at,
        result=job.result,
        error=job.error,
    )
