"""The request path: understand -> route -> act -> record.

* understand: check the text, classify it and retrieve passages (one batch worker trip, or
  a hit in the result cache of repeated queries), route the prediction through the router
  policy, then settle the route on answerability (`router.settle`);
* decide: what the route means now: a local answer, a refusal, an intent-bound workflow,
  an escalation to the cloud, or a fallback (escalation denied by the residency policy, or
  the link is down);
* act: each branch ends in one `Outcome`;
* record: `Recorder.record`, the one place that audits a request (and its session's
  turns), counts it and builds the `InferResult`; a fallback's durable job is written in
  the audit row's transaction (`Outcome.job_write`), and the job runner woken after it.

`infer` (one answer) and `events` (the same answer streamed) share `decide`; an accepted
`/v1/jobs` request goes through `infer_job`, which defers an escalation to the job itself.

Every request acts for a `Caller` (the client token): its session must be its own (a new
one becomes its own; another token's is `SessionNotFound`), the jobs and workflow runs it
causes are recorded as its own, and an intent-bound workflow's inputs come from
`request_inputs` (the token's bound attributes for trusted fields, never free metadata).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeAlias

import msgspec

from aivos.edge.answers import fallback_answer, local_answer
from aivos.edge.batcher import MicroBatcher
from aivos.edge.cache import ResultCache, file_stamp
from aivos.edge.escalation import Escalator, Prepared, generator_of
from aivos.edge.feedback import FeedbackBook
from aivos.edge.jobrunner import EscalationJobRunner
from aivos.edge.observability import AgentMetrics
from aivos.edge.recorder import Recorder
from aivos.edge.results import (
    SITE,
    Caller,
    InferResult,
    Outcome,
    Query,
    StreamDone,
    StreamEvent,
    StreamMeta,
    StreamToken,
    Understood,
)
from aivos.edge.router import (
    RouterPolicy,
    knowledge_may_answer,
    model_class_for,
    route,
    settle,
)
from aivos.edge.serving import Classified, Serving
from aivos.edge.sessions import Sessions
from aivos.edge.settings import EdgeSettings
from aivos.edge.store import Store
from aivos.edge.store import jobs as _jobs
from aivos.edge.workflows import WorkflowEngine
from aivos.edge.workflows.inputs import InputsUnavailable, request_inputs
from aivos.shared.errors import AivosError, EmptyText, ResidencyDenied, TextTooLong
from aivos.shared.ids import new_id
from aivos.shared.tracing import current_trace_id, tracer, tracing_enabled

__all__ = ["Pipeline", "check_text"]

_tracer = tracer(__name__)
log = logging.getLogger(__name__)

# route reasons a workflow bound to the intent does not run for
_NO_WORKFLOW = ("out_of_scope", "open_ended", "knowledge")


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
    inputs: dict[str, Any]


class _Escalate(msgspec.Struct, frozen=True):
    prepared: Prepared


class _LinkDown(msgspec.Struct, frozen=True):
    """Escalation allowed but the link is down: nothing leaves now, so nothing is masked now
    (the job runner masks the prompt when the job escalates, and records its PII counts)."""


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
        self.sessions = Sessions(store)  # whose session a request may use
        self.recorder = recorder
        self.metrics = metrics
        self.policy = policy
        self._max_text = settings.limits.max_text_chars
        self._budget_s = settings.uplink.escalation_budget_ms / 1000
        self._workflow_wait_s = settings.workflows.default_wait_s
        self._answer_min_score = settings.knowledge.answer_min_score
        self._has_uplink = settings.uplink.nats_url is not None
        # feedback votes re-rank retrieval (edge/feedback.py); cached results are dropped
        # when the bundle, the knowledge index or the votes change (edge/cache.py)
        self.feedback = FeedbackBook(
            store, weight=settings.knowledge.feedback_weight, tau=settings.knowledge.feedback_tau
        )
        self.feedback.on_vote = recorder.candidate_feedback  # ratings of hard examples sync
        if settings.knowledge.feedback_weight > 0:
            serving.use_feedback(self.feedback)
        self._manifest: tuple[object, str] = (None, "")  # (index, its manifest path)
        self.cache: ResultCache[Classified] = ResultCache(
            settings.cache.max_entries,
            max_text_chars=settings.cache.max_text_chars,
            registry=metrics.registry,
        )

    async def admit(self, query: Query, caller: Caller) -> None:
        """Raise SessionNotFound when the query names another token's session; a new session
        becomes the caller's."""
        if query.session_id:
            await self.sessions.claim(query.session_id, caller)

    async def infer(self, query: Query, caller: Caller = SITE) -> InferResult:
        with _tracer.start_as_current_span("edge.http.infer"):
            await self.admit(query, caller)
            u = await self.understand(query)
            plan = self.decide(u, query, caller=caller)
            if isinstance(plan, _LinkDown):  # counted for this endpoint only, as it always was
                self.metrics.escalations.inc(outcome="link_down")
            outcome = await self._act(u, query, plan, caller)
            return await self._record(u, query, outcome)

    async def events(
        self, query: Query, caller: Caller = SITE
    ) -> AsyncGenerator[StreamEvent, None]:
        """`StreamMeta` at once, `StreamToken`s as generated, then `StreamDone` with the
        result `infer` would have returned. A rejected text raises before the first event."""
        await self.admit(query, caller)
        u = await self.understand(query)
        yield StreamMeta(
            request_id=u.request_id,
            intent=u.prediction.intent,
            confidence=round(float(u.prediction.confidence), 4),
            decision=u.route.decision,
            passages=u.passages,
        )
        plan = self.decide(u, query, stream=True, caller=caller)
        if isinstance(plan, _Escalate):
            async for event in self._stream_escalation(u, query, plan.prepared, caller):
                yield event
            return
        result = await self._record(u, query, await self._act(u, query, plan, caller))
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
                return await self._record(u, query, deferred), context
        return await self._record(u, query, outcome), None

    async def understand(self, query: Query) -> Understood:
        started = time.perf_counter()
        check_text(query.text, self._max_text)
        key = self._cache_key(query)
        done = self.cache.get(key) if key is not None else None
        if done is None:
            batch_started = time.perf_counter()
            with _child_span("edge.model"):
                done = await self.batcher.submit(query.text)
            self.metrics.model_wait.observe(time.perf_counter() - batch_started)
            if tracing_enabled():  # retrieval ran in the batch worker: record it after the fact
                start_ns, end_ns = done.retrieval_ns
                _tracer.start_span("edge.retrieval", start_time=start_ns).end(end_time=end_ns)
            if key is not None and done.model_version == key[1]:
                self.cache.put(key, done)
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
            decision = settle(
                decision,
                query.text,
                max((p.score for p in done.passages), default=None),
                answer_min_score=self._answer_min_score,
                generator=self._has_uplink and self.escalator.allowed(),
                answer_out_of_scope=knowledge_may_answer(self.policy, prediction.intent),
            )
        request_id = new_id()
        if done.passages and done.model_version == model.version:
            # a vote on this request is weighted by its query's similarity (edge/feedback.py)
            self.feedback.remember(request_id, prediction.embedding, model.embedding_version)
        return Understood(
            request_id, started, prediction, done.model_version, done.passages, decision
        )

    def decide(
        self, u: Understood, query: Query, *, stream: bool = False, caller: Caller = SITE
    ) -> _Plan:
        """What the route means now. An intent-bound workflow whose required inputs the caller
        cannot supply (e.g. a token not bound to an account) does not start. A workflow bound
        to the intent, or matched by its examples (`_workflow_for`), wins over the route's
        decision, except for refusals and open-ended requests, and out-of-scope ones for an
        intent binding (streams run no workflows)."""
        if not stream and u.route.decision != "refuse":
            workflow = self._workflow_for(u)
            if workflow is not None:
                try:
                    inputs = request_inputs(
                        workflow,
                        text=query.text,
                        session_id=query.session_id,
                        metadata=query.metadata,
                        bound=caller.bound,
                    )
                except InputsUnavailable as exc:
                    log.info("workflow %s not started: %s", workflow.name, exc)
                else:
                    return _RunWorkflow(workflow, inputs)
        settled = self._settled(u)
        if settled is not None:
            return settled
        if not self.escalator.available and self.escalator.allowed():
            # masking (the PII tagger over the prompt and passages) is the costliest step of
            # an escalation; with the link down the prompt does not leave, so skip it here
            return _LinkDown()
        prepared = self._prepare(u, query, stream)
        if prepared is None:
            return _denied(u)
        if not self.escalator.available:  # the link went down while masking
            return _LinkDown()
        return _Escalate(prepared)

    def _workflow_for(self, u: Understood) -> Any:
        """The workflow bound to the predicted intent (when the route allows one), else the
        one whose `trigger.examples` the request's embedding matches: a site's own request
        the intent set lacks starts even when it is out of scope (not when open-ended)."""
        if u.route.reason not in _NO_WORKFLOW:
            workflow = self.workflows.workflow_for_intent(u.prediction.intent)
            if workflow is not None:
                return workflow
        if u.route.reason == "open_ended":
            return None
        return self.workflows.workflow_for_embedding(u.prediction.embedding)

    def _cache_key(self, query: Query) -> tuple[str, str] | None:
        """The result-cache key of this query, None when it is not cached (a session request
        unless the policy allows it, a long text, the cache off). Drops the cache first when
        the bundle, the knowledge index or the feedback votes changed."""
        cache = self.cache
        if not cache.enabled or (query.session_id and not self.policy.cache_sessions):
            return None
        version = self.serving.model.version
        index = self.serving.index
        if index is not self._manifest[0]:  # the path of the live index's manifest, as a str
            self._manifest = (index, str(index.manifest_path))
        index_stamp = file_stamp(self._manifest[1])
        cache.check_scope((version, index_stamp, self.feedback.generation))
        return cache.key(query.text, version)

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
                    model_class=model_class_for(self.policy, u.prediction.intent),
                    intent=u.prediction.intent,
                )
            except ResidencyDenied:
                return None

    async def _act(self, u: Understood, query: Query, plan: _Plan, caller: Caller) -> Outcome:
        """Carry out a plan; every branch ends in one `Outcome`."""
        if isinstance(plan, Outcome):
            return plan
        if isinstance(plan, _RunWorkflow):
            return await self._run_workflow(plan.workflow, plan.inputs, caller)
        if isinstance(plan, _LinkDown):
            return self._fall_back(u, query, {}, "fallback:link_down", caller)
        return await self._escalate(u, query, plan.prepared, caller)

    async def _stream_escalation(
        self, u: Understood, query: Query, prepared: Prepared, caller: Caller
    ) -> AsyncIterator[StreamEvent]:
        """The cloud's tokens as they come. When generation fails (or the answer cannot be
        recorded) the fallback follows the tokens already sent."""
        answer = ""
        generator = None
        cut = False
        try:
            async for item in self.escalator.stream(prepared, self._budget_s):
                if isinstance(item, str):
                    yield StreamToken(item)
                else:
                    answer, generator, cut = item[0], generator_of(item[1]), item[1].cut
            self.metrics.escalations.inc(outcome="answered")
            outcome = Outcome(
                answer,
                "cloud",
                u.route.reason,
                pii_counts=prepared.pii_counts,
                generator=generator,
                cut=cut,
            )
            result = await self._record(u, query, outcome)
        except AivosError as exc:
            self.metrics.escalations.inc(outcome=exc.code)
            outcome = self._fall_back(u, query, prepared.pii_counts, f"fallback:{exc.code}", caller)
            result = await self._record(u, query, outcome)
            yield StreamToken(("\n\n" if answer else "") + (result.answer or ""))
        yield StreamDone(result)

    async def _escalate(
        self, u: Understood, query: Query, prepared: Prepared, caller: Caller
    ) -> Outcome:
        try:
            with _tracer.start_as_current_span("edge.escalate"):
                answer, done = await self.escalator.complete(prepared, self._budget_s)
        except AivosError as exc:
            self.metrics.escalations.inc(outcome=exc.code)
            return self._fall_back(u, query, prepared.pii_counts, f"fallback:{exc.code}", caller)
        self.metrics.escalations.inc(outcome="answered")
        return Outcome(
            answer,
            "cloud",
            u.route.reason,
            pii_counts=prepared.pii_counts,
            generator=generator_of(done),
            cut=done.cut,
        )

    def _fall_back(
        self,
        u: Understood,
        query: Query,
        pii_counts: dict[str, int],
        reason: str,
        caller: Caller,
    ) -> Outcome:
        """The deterministic local answer plus a durable job that completes the escalation
        (the caller's own: its id is in the answer, for `GET /v1/jobs/{id}`). `pii_counts`:
        what was masked for an attempt that failed ({} when nothing was masked).

        The job is not written here: the recorder writes it in the audit row's transaction
        (`Outcome.job_write`), so the request waits for one durable commit, not two in a row
        (the second showed in the p99 of a paced load where a link-down share of requests
        falls back); the job is still on disk before the answer, and never without its row."""
        context, owner = self.escalation_context(u, query), caller.token_id
        job_id = new_id()

        def job_write(c: sqlite3.Connection) -> None:
            # the job and its owner in one insert, as `escalations.enqueue` would make it
            # before recording the owner in a second one
            _jobs.create(
                c, "escalation", context, state="waiting_for_uplink", owner=owner, job_id=job_id
            )

        return Outcome(
            fallback_answer(u.passages, job_id),
            "fallback",
            reason,
            job_id=job_id,
            pii_counts=pii_counts,
            job_write=job_write,
        )

    async def _record(self, u: Understood, query: Query, outcome: Outcome) -> InferResult:
        """`Recorder.record`, then the job runner woken for a fallback's job: it is only in
        the store once the audit row's transaction committed. That commit happens even when
        the request is cancelled meanwhile (a client that went away), so the recording is
        shielded and wakes the runner itself when it is done."""
        if outcome.job_write is None:
            return await self.recorder.record(u, query, outcome)
        recording = asyncio.ensure_future(self.recorder.record(u, query, outcome))
        # registered before shield's own callback: the runner is woken before the answer
        recording.add_done_callback(self._wake_for_job)
        return await asyncio.shield(recording)

    def _wake_for_job(self, recording: asyncio.Future[InferResult]) -> None:
        """Wake the job runner once a fallback's recording committed (its job exists); a
        failed one wrote no job (its exception is also read here, for a cancelled caller)."""
        if not recording.cancelled() and recording.exception() is None:
            self.escalations.wake()

    async def _run_workflow(self, workflow: Any, inputs: dict[str, Any], caller: Caller) -> Outcome:
        """Intent-routed workflow: wait up to the budget, else answer with the run handle."""
        run = await self.workflows.start_run(
            workflow,
            inputs,
            wait_s=self._workflow_wait_s,
            trigger="intent",
            trace_id=current_trace_id(),
            owner=caller.token_id,
        )
        answer = run.response or (
            f"Your request is being handled (run {run.run_id}, state {run.state}). "
            f"Follow it at {run.status_url}."
        )
        return Outcome(answer, "workflow", f"workflow:{workflow.name}", run_id=run.run_id)

    def escalation_context(self, u: Understood, query: Query) -> dict[str, Any]:
        """What the job runner needs to escalate this request later (stays on site), with
        the cloud model class the policy names for the intent now."""
        return {
            "text": query.text,
            "session_id": query.session_id,
            "request_id": u.request_id,
            "passages": [msgspec.to_builtins(p) for p in u.passages],
            "memory": self._memory_for(query.session_id),
            "model_class": model_class_for(self.policy, u.prediction.intent),
            "intent": u.prediction.intent,  # the cloud's per-intent token budgets
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
