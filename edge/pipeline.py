"""The request path: understand -> route -> act -> record.

* understand: check the text, classify it and retrieve passages (one batch worker trip),
  route the prediction through the router policy;
* decide: what the route means now: a local answer, a refusal, an intent-bound workflow,
  an escalation to the cloud, or a fallback (escalation denied by the residency policy, or
  the link is down);
* act: each branch ends in one `Outcome`;
* record: `Recorder.record`, the one place that audits a request (and its session's
  turns), counts it and builds the `InferResult`.

`infer` (one answer) and `events` (the same answer streamed) share `decide`; an accepted
`/v1/jobs` request goes through `infer_job`, which defers an escalation to the job itself.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeAlias

import msgspec

from aivos.edge.answers import fallback_answer, local_answer
from aivos.edge.batcher import MicroBatcher
from aivos.edge.escalation import Escalator, Prepared
from aivos.edge.jobrunner import EscalationJobRunner
from aivos.edge.observability import AgentMetrics
from aivos.edge.recorder import Recorder
from aivos.edge.results import (
    InferResult,
    Outcome,
    Query,
    StreamDone,
    StreamEvent,
    StreamMeta,
    StreamToken,
    Understood,
)
from aivos.edge.router import RouterPolicy, route
from aivos.edge.serving import Classified, Serving
from aivos.edge.settings import EdgeSettings
from aivos.edge.store import Store
from aivos.edge.workflows import WorkflowEngine
from aivos.shared.errors import AivosError, EmptyText, ResidencyDenied, TextTooLong
from aivos.shared.ids import new_id
from aivos.shared.tracing import current_trace_id, tracer, tracing_enabled

__all__ = ["Pipeline", "check_text"]

_tracer = tracer(__name__)


def check_text(text: str, limit: int) -> str:
    """`text` if a query may carry it; else TextTooLong or EmptyText."""
    if len(text) > limit:
        raise TextTooLong(len(text), limit)
    if not text.strip():
        raise EmptyText()
    return text


def _child_span(name: str) -> AbstractContextManager[Any]:
    """A step's span inside a request, skipped when spans are not exported: the request's
    root span still carries the trace id, and every span costs event-loop time per request."""
    return _tracer.start_as_current_span(name) if tracing_enabled() else nullcontext()


class _RunWorkflow(msgspec.Struct, frozen=True):
    workflow: Any


class _Escalate(msgspec.Struct, frozen=True):
    prepared: Prepared


class _LinkDown(msgspec.Struct, frozen=True):
    prepared: Prepared


_Plan: TypeAlias = Outcome | _RunWorkflow | _Escalate | _LinkDown


class Pipeline:
    """`policy` is replaced by the agent when a remote config changes the router policy."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        serving: Serving,
        batcher: MicroBatcher[Classified],
        escalator: Escalator,
        escalations: EscalationJobRunner,
        workflows: WorkflowEngine,
        store: Store,
        recorder: Recorder,
        metrics: AgentMetrics,
        policy: RouterPolicy,
    ) -> None:
        self.serving = serving
        self.batcher = batcher
        self.escalator = escalator
        self.escalations = escalations
        self.workflows = workflows
        self.store = store  # read: the session's memory for an escalation
        self.recorder = recorder
        self.metrics = metrics
        self.policy = policy
        self._max_text = settings.limits.max_text_chars
        self._budget_s = settings.uplink.escalation_budget_ms / 1000
        self._workflow_wait_s = settings.workflows.default_wait_s

    async def infer(self, query: Query) -> InferResult:
        with _tracer.start_as_current_span("edge.http.infer"):
            u = await self.understand(query)
            plan = self.decide(u, query)
            if isinstance(plan, _LinkDown):  # counted for this endpoint only, as it always was
                self.metrics.escalations.inc(outcome="link_down")
            return await self.recorder.record(u, query, await self._act(u, query, plan))

    async def events(self, query: Query) -> AsyncGenerator[StreamEvent, None]:
        """`StreamMeta` at once, `StreamToken`s as generated, then `StreamDone` with the
        result `infer` would have returned. A rejected text raises before the first event."""
        u = await self.understand(query)
        yield StreamMeta(
            request_id=u.request_id,
            intent=u.prediction.intent,
            confidence=round(float(u.prediction.confidence), 4),
            decision=u.route.decision,
            passages=u.passages,
        )
        plan = self.decide(u, query, stream=True)
        if isinstance(plan, _Escalate):
            async for event in self._stream_escalation(u, query, plan.prepared):
                yield event
            return
        result = await self.recorder.record(u, query, await self._act(u, query, plan))
        if result.answer:
            yield StreamToken(result.answer)
        yield StreamDone(result)

    async def infer_job(
        self, query: Query, job_id: str
    ) -> tuple[InferResult, dict[str, Any] | None]:
        """An accepted job: its result now, and when the route escalates (and the policy lets
        the prompt leave) the escalation context the job runner completes it with later."""
        u = await self.understand(query)
        outcome = self._settled(u)
        if outcome is None:
            if not self.escalator.allowed():
                outcome = _denied(u)
            else:
                context = self.escalation_context(u, query)
                deferred = Outcome(
                    fallback_answer(u.passages, job_id), "fallback", "async_job", job_id=job_id
                )
                return await self.recorder.record(u, query, deferred), context
        return await self.recorder.record(u, query, outcome), None

    async def understand(self, query: Query) -> Understood:
        started = time.perf_counter()
        check_text(query.text, self._max_text)
        batch_started = time.perf_counter()
        with _child_span("edge.model"):
            done = await self.batcher.submit(query.text)
        self.metrics.model_wait.observe(time.perf_counter() - batch_started)
        if tracing_enabled():  # retrieval ran in the batch worker: record it after the fact
            start_ns, end_ns = done.retrieval_ns
            _tracer.start_span("edge.retrieval", start_time=start_ns).end(end_time=end_ns)
        prediction = done.prediction
        model = self.serving.model
        with _child_span("edge.router"):
            decision = route(
                self.policy,
                prediction.intent,
                prediction.confidence,
                model.threshold,
                model.manifest.oos_label,
            )
        return Understood(
            new_id(), started, prediction, done.model_version, done.passages, decision
        )

    def decide(self, u: Understood, query: Query, *, stream: bool = False) -> _Plan:
        """What the route means now. A workflow bound to the intent wins over the route's
        decision, except for refusals and out-of-scope queries (streams run no workflows)."""
        if not stream and u.route.decision != "refuse" and u.route.reason != "out_of_scope":
            workflow = self.workflows.workflow_for_intent(u.prediction.intent)
            if workflow is not None:
                return _RunWorkflow(workflow)
        settled = self._settled(u)
        if settled is not None:
            return settled
        prepared = self._prepare(u, query, stream)
        if prepared is None:
            return _denied(u)
        if not self.escalator.available:
            return _LinkDown(prepared)
        return _Escalate(prepared)

    def _settled(self, u: Understood) -> Outcome | None:
        """The answer when the route keeps the request on site; None when it escalates."""
        decision = u.route.decision
        if decision == "local":
            answer = local_answer(u.prediction.intent, u.passages, u.route.template)
            return Outcome(answer, "local", u.route.reason)
        if decision == "refuse":
            return Outcome(self.policy.refuse_message, "refusal", u.route.reason)
        return None

    def _prepare(self, u: Understood, query: Query, stream: bool) -> Prepared | None:
        """The masked escalation, or None when the policy keeps prompts on site."""
        with _child_span("edge.policy_gate"):
            try:
                return self.escalator.prepare(
                    u.request_id,
                    query.text,
                    u.passages,
                    self._memory_for(query.session_id),
                    stream=stream,
                )
            except ResidencyDenied:
                return None

    async def _act(self, u: Understood, query: Query, plan: _Plan) -> Outcome:
        """Carry out a plan; every branch ends in one `Outcome`."""
        if isinstance(plan, Outcome):
            return plan
        if isinstance(plan, _RunWorkflow):
            return await self._run_workflow(query, plan.workflow)
        if isinstance(plan, _LinkDown):
            return await self._fall_back(u, query, plan.prepared, "fallback:link_down")
        return await self._escalate(u, query, plan.prepared)

    async def _stream_escalation(
        self, u: Understood, query: Query, prepared: Prepared
    ) -> AsyncIterator[StreamEvent]:
        """The cloud's tokens as they come. When generation fails (or the answer cannot be
        recorded) the fallback follows the tokens already sent."""
        answer = ""
        try:
            async for item in self.escalator.stream(prepared, self._budget_s):
                if isinstance(item, str):
                    yield StreamToken(item)
                else:
                    answer = item[0]
            self.metrics.escalations.inc(outcome="answered")
            outcome = Outcome(answer, "cloud", u.route.reason, pii_counts=prepared.pii_counts)
            result = await self.recorder.record(u, query, outcome)
        except AivosError as exc:
            self.metrics.escalations.inc(outcome=exc.code)
            outcome = await self._fall_back(u, query, prepared, f"fallback:{exc.code}")
            result = await self.recorder.record(u, query, outcome)
            yield StreamToken(("\n\n" if answer else "") + (result.answer or ""))
        yield StreamDone(result)

    async def _escalate(self, u: Understood, query: Query, prepared: Prepared) -> Outcome:
        try:
            with _tracer.start_as_current_span("edge.escalate"):
                answer, _ = await self.escalator.complete(prepared, self._budget_s)
        except AivosError as exc:
            self.metrics.escalations.inc(outcome=exc.code)
            return await self._fall_back(u, query, prepared, f"fallback:{exc.code}")
        self.metrics.escalations.inc(outcome="answered")
        return Outcome(answer, "cloud", u.route.reason, pii_counts=prepared.pii_counts)

    async def _fall_back(
        self, u: Understood, query: Query, prepared: Prepared, reason: str
    ) -> Outcome:
        """The deterministic local answer plus a durable job that completes the escalation."""
        job_id = await self.escalations.enqueue(self.escalation_context(u, query))
        return Outcome(
            fallback_answer(u.passages, job_id),
            "fallback",
            reason,
            job_id=job_id,
            pii_counts=prepared.pii_counts,
        )

    async def _run_workflow(self, query: Query, workflow: Any) -> Outcome:
        """Intent-routed workflow: wait up to the budget, else answer with the run handle."""
        inputs = {"text": query.text, "session_id": query.session_id, **(query.metadata or {})}
        run = await self.workflows.start_run(
            workflow,
            inputs,
            wait_s=self._workflow_wait_s,
            trigger="intent",
            trace_id=current_trace_id(),
        )
        answer = run.response or (
            f"Your request is being handled (run {run.run_id}, state {run.state}). "
            f"Follow it at {run.status_url}."
        )
        return Outcome(answer, "workflow", f"workflow:{workflow.name}", run_id=run.run_id)

    def escalation_context(self, u: Understood, query: Query) -> dict[str, Any]:
        """What the job runner needs to escalate this request later (stays on site)."""
        return {
            "text": query.text,
            "session_id": query.session_id,
            "request_id": u.request_id,
            "passages": [msgspec.to_builtins(p) for p in u.passages],
            "memory": self._memory_for(query.session_id),
        }

    def _memory_for(self, session_id: str | None) -> list[str]:
        if not session_id:
            return []
        turns = [f"{t.role}: {t.text}" for t in self.store.turns(session_id)]
        facts = [f"{f.key}: {f.value}" for f in self.store.list_facts(session_id)]
        return facts + turns


def _denied(u: Understood) -> Outcome:
    """Escalation refused by the residency policy: what the site's documents say, no job."""
    return Outcome(fallback_answer(u.passages, None), "fallback", "escalation_denied_by_policy")
