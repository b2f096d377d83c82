"""The running agent: owns the model, batcher, store, knowledge index and uplink, and
implements what the HTTP handlers ask for. Handlers stay thin; this is the one place
that sees the whole request path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import msgspec
from litestar.response import ServerSentEventMessage

from aivos.edge.answers import fallback_answer, local_answer
from aivos.edge.api.errors import ApiError
from aivos.edge.api.schemas import (
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
from aivos.edge.batcher import MicroBatcher
from aivos.edge.callbacks import CallbackSender, validate_callback_url
from aivos.edge.escalation import Escalator, Prepared
from aivos.edge.fleet import EdgeFleetClient, active_bundle_dir
from aivos.edge.intent.runtime import IntentModel, Prediction
from aivos.edge.jobrunner import EscalationJobRunner
from aivos.edge.knowledge.index import KnowledgeIndex
from aivos.edge.observability import AgentMetrics
from aivos.edge.router import Route, RouterPolicy, load_router_policy, route
from aivos.edge.settings import EdgeSettings
from aivos.edge.stats import RollingStats
from aivos.edge.store import AuditRecord, Store
from aivos.edge.uplink.link import Uplink
from aivos.edge.uplink.sync import OutboxDrainer
from aivos.edge.workflows import WorkflowEngine
from aivos.shared.errors import AivosError, NotFound, QuotaExceeded, ResidencyDenied
from aivos.shared.ids import new_id
from aivos.shared.residency import DataClass, ExitGate, ResidencyPolicy
from aivos.shared.tracing import current_trace_id, setup_tracing, tracer, tracing_enabled

__all__ = ["Agent"]

log = logging.getLogger(__name__)
_tracer = tracer(__name__)


async def _outcome(write: Awaitable[Any]) -> Any:
    """The write's result, or the exception it raised (as gather(return_exceptions=True))."""
    try:
        return await write
    except Exception as exc:
        return exc


def _child_span(name: str) -> AbstractContextManager[Any]:
    """A step's span inside a request, skipped when spans are not exported: the request's
    root span still carries the trace id, and every span costs event-loop time per request."""
    return _tracer.start_as_current_span(name) if tracing_enabled() else nullcontext()


class _Classified(msgspec.Struct):
    """One query through the batch worker: the model's prediction and the passages retrieved
    with its embedding (retrieval runs in the worker thread, off the event loop)."""

    prediction: Prediction
    model_version: str
    passages: list[PassageOut]
    retrieval_ns: tuple[int, int]  # wall-clock start and end, for the edge.retrieval span


class _Understood(msgspec.Struct):
    """What the model and the router made of one request."""

    request_id: str
    started: float
    prediction: Prediction
    model_version: str
    passages: list[PassageOut]
    route: Route


class Agent:
    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.metrics = AgentMetrics()
        self.stats = RollingStats()
        self.policy: RouterPolicy = settings.router
        self.residency: ResidencyPolicy = settings.residency
        self.gate = ExitGate(settings.residency, registry=self.metrics.registry)
        self.uplink = Uplink(settings.uplink.nats_url, settings.site_id)
        self.escalator = Escalator(self.uplink, self.gate, max_tokens=settings.uplink.max_tokens)
        self.model: IntentModel
        self.store: Store
        self.index: KnowledgeIndex
        self.batcher: MicroBatcher[_Classified]
        # (model, index) as one value: a batch worker reads both at once, so a swap can never
        # pair a query embedded by one model with an index embedded by another
        self._serving: tuple[IntentModel, KnowledgeIndex]
        self.jobs: EscalationJobRunner
        self.callbacks = CallbackSender(settings.jobs.callback_timeout_s)
        self._background: set[asyncio.Task[Any]] = set()
        self._swap_lock = asyncio.Lock()
        self._started = False
        self.drainer: OutboxDrainer
        self.workflows: WorkflowEngine
        self.fleet: EdgeFleetClient | None = None
        self._drain_task: asyncio.Task[None] | None = None

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        data = settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        if settings.tracing.otlp_endpoint:
            setup_tracing(f"aivos-edge-{settings.site_id}", settings.tracing.otlp_endpoint)
        threads = settings.model.intra_op_threads or None
        # a bundle installed by a fleet rollout wins over the configured one
        bundle = active_bundle_dir(data) or settings.bundle_path
        self.model = await asyncio.to_thread(
            IntentModel.load, bundle, settings.model.providers, threads
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
            sync_memory=self.gate.allows(DataClass.MEMORY),
        )
        self.tokens = self.store.tokens
        self.index = await asyncio.to_thread(KnowledgeIndex.open, data / "knowledge", self.model)
        self._serving = (self.model, self.index)
        self.batcher = MicroBatcher(
            self._classify_batch,
            max_batch=settings.model.max_batch,
            max_wait_ms=settings.model.max_wait_ms,
            concurrency=settings.model.batch_workers,
        )
        self.batcher.stats.observer = self.metrics.observe_batch
        await self.batcher.start()
        self.jobs = EscalationJobRunner(
            self.store,
            self.escalator,
            budget_s=settings.uplink.job_budget_ms / 1000,
            retry_interval_s=settings.uplink.retry_interval_s,
            notify=self._notify,
        )
        self.uplink.on_up(self.jobs.wake)
        self.drainer = OutboxDrainer(
            self.store, self.gate, settings.site_id, registry=self.metrics.registry
        )
        self.uplink.on_up(self._sync_up)
        self.workflows = WorkflowEngine(
            self.store,
            msgspec.structs.replace(settings.workflows, site_id=settings.site_id),
            index=self.index,
            nc_provider=lambda: self.uplink.nc if self.uplink.connected else None,
            masker=self.gate.masker,
            registry=self.metrics.registry,
        )
        await self.workflows.start()
        self.metrics.bind(self)
        self._started = True
        await self.uplink.start()
        self._spawn(self._resume_jobs())
        self._spawn(self.jobs.run())
        if settings.uplink.nats_url:
            self.fleet = EdgeFleetClient(self)
            await self.fleet.start()
        if settings.uplink.nats_url and not self.escalator.allowed():
            log.warning(
                "uplink configured but residency.classes.escalation_prompt is local-only: nothing will escalate"
            )
        log.info(
            "agent started",
            extra={
                "fields": {"model_version": self.model.version, "provider": self.model.provider}
            },
        )

    def _sync_up(self) -> None:
        """On every (re)connect: make sure the outbox drainer runs, and poke it."""
        if self._drain_task is None and self.uplink.nc is not None:
            self._drain_task = asyncio.create_task(self.drainer.run(self.uplink.nc))
        self.drainer.wake(link=True)

    async def stop(self) -> None:
        if self.fleet is not None:
            await self.fleet.stop()
        if self._started:
            await self.workflows.stop()
            await self.drainer.stop()
        if self._drain_task is not None:
            self._drain_task.cancel()
            await asyncio.gather(self._drain_task, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.uplink.stop()
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
            link=self.uplink.state,
        )

    # ----- fleet hooks (remote config, model swap, heartbeats) -------------------------------

    def _classify_batch(self, texts: list[str]) -> list[_Classified]:
        """Runs in a batch worker thread: classify, then retrieve for each query."""
        model, index = self._serving  # one model and its index per batch, even mid-swap
        k = self.settings.knowledge.top_k
        out = []
        for prediction in model.classify_batch(texts):
            started = time.time_ns()
            passages = self._retrieve(index, prediction.embedding, k)
            out.append(_Classified(prediction, model.version, passages, (started, time.time_ns())))
        return out

    async def swap_model(self, model: IntentModel) -> IntentModel:
        """Make `model` live atomically; in-flight batches finish on the old one.

        The knowledge index is re-embedded first when the embedding changes."""
        async with self._swap_lock:
            self.policy.validate_against(list(model.labels))
            old = self.model
            if model.embedding_version != old.embedding_version:
                new_index = await asyncio.to_thread(
                    KnowledgeIndex.open, self.settings.data_path / "knowledge", model
                )
                old_index, self.index = self.index, new_index
                self.model = model
                self._serving = (model, new_index)
                self.workflows.index = new_index  # retrieve steps must not search a closed index
                await asyncio.to_thread(old_index.close)
            else:
                self.model = model
                self._serving = (model, self.index)
            log.info("model swapped", extra={"fields": {"from": old.version, "to": model.version}})
            return old

    def apply_remote_config(
        self, router: RouterPolicy | None = None, residency: ResidencyPolicy | None = None
    ) -> None:
        """Validate, then apply without a restart; raises (and changes nothing) when invalid."""
        if router is not None:
            router.validate_against(list(self.model.labels))
        if residency is not None:
            gate = ExitGate(residency, registry=None)
            self.gate, self.residency = gate, residency
            self.escalator.gate = gate
            self.store.sync_memory = gate.allows(DataClass.MEMORY)
        if router is not None:
            self.policy = router

    @property
    def link_state(self) -> str:
        return self.uplink.state

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

    def _retrieve(self, index: KnowledgeIndex, vector: Any, k: int) -> list[PassageOut]:
        # no len(index) check: it costs a SQLite count, and an empty index answers []
        if k <= 0:
            return []
        found = index.search_vector(vector, k)
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

    async def _understand(self, req: InferRequest) -> _Understood:
        started = time.perf_counter()
        self._check_text(req.text)
        batch_started = time.perf_counter()
        with _child_span("edge.model"):
            done = await self.batcher.submit(req.text)
        self.metrics.model_wait.observe(time.perf_counter() - batch_started)
        if tracing_enabled():  # retrieval ran in the batch worker: record it after the fact
            start_ns, end_ns = done.retrieval_ns
            _tracer.start_span("edge.retrieval", start_time=start_ns).end(end_time=end_ns)
        prediction = done.prediction
        with _child_span("edge.router"):
            decision = route(
                self.policy,
                prediction.intent,
                prediction.confidence,
                self.model.threshold,
                self.model.manifest.oos_label,
            )
        return _Understood(
            new_id(), started, prediction, done.model_version, done.passages, decision
        )

    def _memory_for(self, session_id: str | None) -> list[str]:
        if not session_id:
            return []
        turns = [f"{t.role}: {t.text}" for t in self.store.turns(session_id)]
        facts = [f"{f.key}: {f.value}" for f in self.store.list_facts(session_id)]
        return facts + turns

    def _prepare(self, u: _Understood, req: InferRequest, stream: bool = False) -> Prepared | None:
        """The masked escalation, or None when the policy keeps prompts on site."""
        with _child_span("edge.policy_gate"):
            try:
                return self.escalator.prepare(
                    u.request_id,
                    req.text,
                    u.passages,
                    self._memory_for(req.session_id),
                    stream=stream,
                )
            except ResidencyDenied:
                return None

    async def _run_workflow(
        self, u: _Understood, req: InferRequest, workflow: Any
    ) -> InferResponse:
        """Intent-routed workflow: wait up to the budget, else answer with the run handle."""
        inputs = {"text": req.text, "session_id": req.session_id, **(req.metadata or {})}
        result = await self.workflows.start_run(
            workflow,
            inputs,
            wait_s=self.settings.workflows.default_wait_s,
            trigger="intent",
            trace_id=current_trace_id(),
        )
        answer = result.response or (
            f"Your request is being handled (run {result.run_id}, state {result.state}). "
            f"Follow it at {result.status_url}."
        )
        return await self._finish(
            u, req, answer, "workflow", None, {}, f"workflow:{workflow.name}", run_id=result.run_id
        )

    def _escalation_context(self, u: _Understood, req: InferRequest) -> dict[str, Any]:
        """What the job runner needs to escalate this request later (stays on site)."""
        return {
            "text": req.text,
            "session_id": req.session_id,
            "request_id": u.request_id,
            "passages": [msgspec.to_builtins(p) for p in u.passages],
            "memory": self._memory_for(req.session_id),
        }

    async def _fallback_job(self, u: _Understood, req: InferRequest) -> str:
        job = await self.store.create_job(
            "escalation", self._escalation_context(u, req), state="waiting_for_uplink"
        )
        self.jobs.wake()
        return job.id

    async def infer(self, req: InferRequest) -> InferResponse:
        with _tracer.start_as_current_span("edge.http.infer"):
            return await self._infer(req)

    async def _infer(self, req: InferRequest) -> InferResponse:
        u = await self._understand(req)
        decision = u.route.decision
        workflow = (
            self.workflows.workflow_for_intent(u.prediction.intent)
            if decision != "refuse"
            else None
        )
        if workflow is not None and u.route.reason != "out_of_scope":
            return await self._run_workflow(u, req, workflow)
        prepared = self._prepare(u, req) if decision == "escalate" else None
        if prepared is None or not self.escalator.available:
            if prepared is not None:
                self.metrics.escalations.inc(outcome="link_down")
            return await self._complete_without_stream(u, req, prepared)
        try:
            with _tracer.start_as_current_span("edge.escalate"):
                answer, _ = await self.escalator.complete(
                    prepared, self.settings.uplink.escalation_budget_ms / 1000
                )
        except AivosError as exc:
            self.metrics.escalations.inc(outcome=exc.code)
            return await self._fall_back(u, req, prepared, f"fallback:{exc.code}")
        self.metrics.escalations.inc(outcome="answered")
        return await self._finish(
            u, req, answer, "cloud", None, prepared.pii_counts, u.route.reason
        )

    async def _fall_back(
        self, u: _Understood, req: InferRequest, prepared: Prepared, reason: str
    ) -> InferResponse:
        """The deterministic local answer plus a durable job that completes the escalation."""
        job_id = await self._fallback_job(u, req)
        answer = fallback_answer(u.passages, job_id)
        return await self._finish(u, req, answer, "fallback", job_id, prepared.pii_counts, reason)

    async def _finish(
        self,
        u: _Understood,
        req: InferRequest,
        answer: str,
        answered_by: str,
        job_id: str | None,
        pii_counts: dict[str, int],
        reason: str,
        run_id: str | None = None,
    ) -> InferResponse:
        latency_ms = (time.perf_counter() - u.started) * 1000
        response = InferResponse(
            request_id=u.request_id,
            intent=u.prediction.intent,
            confidence=round(float(u.prediction.confidence), 4),
            decision=u.route.decision,
            answer=answer,
            passages=u.passages,
            model_version=u.model_version,
            latency_ms=round(latency_ms, 3),
            job_id=job_id,
            answered_by=answered_by,  # type: ignore[arg-type]
            truncated=u.prediction.truncated,
            run_id=run_id,
        )
        try:
            await self._record(req, response, reason, pii_counts)
        except Exception:
            self.stats.record_error()
            raise
        self.metrics.observe_request(response.decision, latency_ms / 1000)
        self.stats.record(response.decision, latency_ms / 1000)
        return response

    async def infer_events(self, req: InferRequest) -> AsyncIterator[ServerSentEventMessage]:
        """Server-Sent Events: `meta` at once, `token` chunks as generated, `done` with the
        full response (the same body /v1/infer returns), or `error`."""
        try:
            u = await self._understand(req)
        except ApiError as exc:
            yield _sse("error", {"error": {"code": exc.code, "message": exc.message}})
            return
        yield _sse(
            "meta",
            {
                "request_id": u.request_id,
                "intent": u.prediction.intent,
                "confidence": round(float(u.prediction.confidence), 4),
                "decision": u.route.decision,
                "passages": [msgspec.to_builtins(p) for p in u.passages],
            },
        )
        prepared = self._prepare(u, req, stream=True) if u.route.decision == "escalate" else None
        if prepared is None or not self.escalator.available:
            response = await self._complete_without_stream(u, req, prepared)
            if response.answer:
                yield _sse("token", {"text": response.answer})
            yield _sse("done", msgspec.to_builtins(response))
            return
        answer = ""
        try:
            async for item in self.escalator.stream(
                prepared, self.settings.uplink.escalation_budget_ms / 1000
            ):
                if isinstance(item, str):
                    yield _sse("token", {"text": item})
                else:
                    answer = item[0]
            self.metrics.escalations.inc(outcome="answered")
            response = await self._finish(
                u, req, answer, "cloud", None, prepared.pii_counts, u.route.reason
            )
        except AivosError as exc:
            self.metrics.escalations.inc(outcome=exc.code)
            response = await self._fall_back(u, req, prepared, f"fallback:{exc.code}")
            yield _sse("token", {"text": ("\n\n" if answer else "") + (response.answer or "")})
        yield _sse("done", msgspec.to_builtins(response))

    async def _complete_without_stream(
        self, u: _Understood, req: InferRequest, prepared: Prepared | None
    ) -> InferResponse:
        decision = u.route.decision
        if decision == "local":
            return await self._finish(
                u,
                req,
                local_answer(u.prediction.intent, u.passages, u.route.template),
                "local",
                None,
                {},
                u.route.reason,
            )
        if decision == "refuse":
            return await self._finish(
                u, req, self.policy.refuse_message, "refusal", None, {}, u.route.reason
            )
        if prepared is None:
            return await self._finish(
                u,
                req,
                fallback_answer(u.passages, None),
                "fallback",
                None,
                {},
                "escalation_denied_by_policy",
            )
        return await self._fall_back(u, req, prepared, "fallback:link_down")

    async def _record(
        self, req: InferRequest, resp: InferResponse, reason: str, pii_counts: dict[str, int]
    ) -> None:
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
            pii_counts=pii_counts,
            trace_id=current_trace_id(),
            detail={
                "reason": reason,
                "answered_by": resp.answered_by,
                "n_passages": len(resp.passages),
                "job_id": resp.job_id,
                "site": self.settings.site_id,
            },
        )
        writes: list[Awaitable[Any]] = [
            self.store.append_audit(audit, sync=self.gate.allows(DataClass.AUDIT))
        ]
        if req.session_id and self.settings.memory.turns > 0:
            writes.append(self.store.add_turn(req.session_id, "user", req.text))
            writes.append(self.store.add_turn(req.session_id, "assistant", resp.answer or ""))
        # one write (no session) is awaited directly: gather() would wrap it in a task
        results = (
            [await _outcome(writes[0])]
            if len(writes) == 1
            else await asyncio.gather(*writes, return_exceptions=True)
        )
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, QuotaExceeded):
                    self.metrics.outbox_refused.inc()
                raise result
        self.drainer.wake()

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
        req = InferRequest(
            text=request["text"],
            session_id=request.get("session_id"),
            metadata=request.get("metadata"),
        )
        try:
            u = await self._understand(req)
            if u.route.decision != "escalate" or not self.escalator.allowed():
                response = await self._complete_without_stream(u, req, None)
                await self.store.update_job(
                    job_id, state="done", result=msgspec.to_builtins(response)
                )
            else:
                context = self._escalation_context(u, req)
                response = await self._finish(
                    u, req, fallback_answer(u.passages, job_id), "fallback", job_id, {}, "async_job"
                )
                await self.store.update_job(
                    job_id,
                    state="waiting_for_uplink",
                    result={**msgspec.to_builtins(response), "escalation": context},
                )
                self.jobs.wake()
                return
        except Exception as exc:
            log.warning("job %s failed: %s", job_id, type(exc).__name__)
            await self.store.update_job(job_id, state="failed", error=str(exc))
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
        done = await self.batcher.submit(query)
        passages = (
            done.passages
            if k == self.settings.knowledge.top_k
            else self._retrieve(self.index, done.prediction.embedding, k)
        )
        return SearchOut(
            query=query,
            passages=passages,
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


def _sse(event: str, data: Any) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=msgspec.json.encode(data).decode())
