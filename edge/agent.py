"""The running agent: opens the model, store, knowledge index, batcher and uplink in `start`,
wires the request pipeline, jobs, documents and sessions to them, and closes everything in
`stop`. It is the `FleetHost` the fleet client runs in: model swaps, remote config and
heartbeat readings go through it.

Its long-running loops (escalation jobs, outbox sync, retention, workflow triggers, the fleet
client's loops) run under one `Supervisor`: a loop that raises restarts after a back-off, and
readiness lists each with its state. A box with no uplink URL is *standalone*: it queues
nothing for sync. With an uplink, a full outbox never fails a decision (`outbox.when_full =
"defer"`): it raises the `outbox_full` alarm in readiness and the metrics instead.

    agent = Agent(settings)
    await agent.start()
    result = await agent.pipeline.infer(query)     # or agent.jobs / documents / sessions
    await agent.stop()
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec

from aivos.edge.batcher import MicroBatcher
from aivos.edge.callbacks import CallbackSender, load_callback_secret
from aivos.edge.documents import Documents
from aivos.edge.escalation import Escalator
from aivos.edge.fleet import Backlog, EdgeFleetClient, FleetOptions, active_bundle_dir
from aivos.edge.intent.runtime import IntentModel
from aivos.edge.jobrunner import EscalationJobRunner
from aivos.edge.jobs import AsyncJobs
from aivos.edge.knowledge.index import KnowledgeIndex
from aivos.edge.observability import AgentMetrics
from aivos.edge.pipeline import Pipeline
from aivos.edge.recorder import Recorder
from aivos.edge.results import InferResult, Query
from aivos.edge.retention import Retention
from aivos.edge.router import RouterPolicy, load_router_policy, served_score, warn_threshold_scale
from aivos.edge.serving import Classified, Serving
from aivos.edge.sessions import Sessions
from aivos.edge.settings import EdgeSettings
from aivos.edge.stats import RollingStats
from aivos.edge.store import Store
from aivos.edge.supervise import Supervisor
from aivos.edge.uplink.link import Uplink
from aivos.edge.uplink.sync import OutboxDrainer
from aivos.edge.workflows import WorkflowEngine
from aivos.shared.metrics import Registry
from aivos.shared.residency import DataClass, ExitGate, ResidencyPolicy, SpanPrefill
from aivos.shared.tracing import setup_tracing

__all__ = ["Agent", "Readiness"]

log = logging.getLogger(__name__)


class Readiness(msgspec.Struct, frozen=True):
    ready: bool
    checks: dict[str, bool]
    model_version: str | None = None
    provider: str | None = None
    link: str | None = None  # uplink state (informational: an offline box is still ready)
    # why the box answers but is not whole (a full outbox, a background task restarting);
    # a degraded box stays ready: decisions never wait on sync or background work
    degraded: list[str] = []
    tasks: dict[str, str] = {}  # supervised background task -> running | restarting | stopped
    sync: str = "uplink"  # "uplink", or "standalone" (no uplink: nothing queued for sync)


_frozen = False


def _freeze_startup_heap() -> None:
    """Move what start-up allocated (modules, the app, the model's and index's Python
    objects) out of the garbage collector's view, once per process: a full collection then
    walks only what requests left behind, instead of pausing the event loop for the whole
    heap (~0.1 s here) every few thousand requests."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


class Agent:
    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.metrics = AgentMetrics()
        self.stats = RollingStats()
        # the policies in force; a remote config replaces them (apply_remote_config)
        self.policy: RouterPolicy = settings.router
        self.residency: ResidencyPolicy = settings.residency
        self.gate = ExitGate(settings.residency, registry=self.metrics.registry)
        self.uplink = Uplink(settings.uplink.nats_url, settings.site_id)
        self.escalator = Escalator(self.uplink, self.gate, max_tokens=settings.uplink.max_tokens)
        # the knowledge base's passages searched into the gate's span cache in the background
        self.span_prefill = SpanPrefill()
        self.callbacks = CallbackSender(
            settings.jobs.callback_timeout_s, allow_hosts=settings.jobs.callback_allow_hosts
        )
        self.supervisor = Supervisor(registry=self.metrics.registry)
        self.fleet: EdgeFleetClient | None = None
        # opened in start()
        self.store: Store
        self.tokens: Any  # the store's token table: the API authenticates with it
        self.serving: Serving
        self.batcher: MicroBatcher[Classified]
        self.escalations: EscalationJobRunner
        self.drainer: OutboxDrainer
        self.workflows: WorkflowEngine
        self.recorder: Recorder
        self.pipeline: Pipeline
        self.jobs: AsyncJobs
        self.documents: Documents
        self.sessions: Sessions
        self.retention: Retention
        self._background: set[asyncio.Task[Any]] = set()
        self._swap_lock = asyncio.Lock()
        self._started = False

    @property
    def standalone(self) -> bool:
        """No uplink configured: nothing is queued for a sync that would never happen."""
        return not self.settings.uplink.nats_url

    async def start(self) -> None:
        settings = self.settings
        data = settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        if settings.tracing.otlp_endpoint:
            setup_tracing(f"aivos-edge-{settings.site_id}", settings.tracing.otlp_endpoint)
        # a bundle installed by a fleet rollout wins over the configured one
        bundle = active_bundle_dir(data) or settings.bundle_path
        model = await asyncio.to_thread(self.load_model, bundle)
        # the masker's lazily built tables, loaded now rather than by the first escalation
        await asyncio.to_thread(self.gate.masker.warm_up)
        if settings.router_policy:
            self.policy = load_router_policy(Path(settings.router_policy))
        self.policy.validate_against(list(model.labels))
        warn_threshold_scale(self.policy, served_score(model), "policy loaded")
        self.store = await asyncio.to_thread(
            Store.open,
            data,
            outbox_quota=settings.outbox.quota,
            memory_retention_days=settings.memory.retention_days,
            memory_turns_keep=max(1, settings.memory.turns),
            sync_memory=self.gate.allows(DataClass.MEMORY),
            max_facts_per_session=settings.memory.max_facts_per_session,
            min_free_bytes=int(settings.store.min_free_mb * 1024 * 1024),
            outbox_when_full=settings.outbox.when_full,
            standalone=self.standalone,
        )
        if self.standalone:
            log.warning("standalone: no uplink configured; nothing is queued for sync")
        self.tokens = self.store.tokens
        secret_file = settings.jobs.callback_secret_file
        self.callbacks.secret = await asyncio.to_thread(
            load_callback_secret, Path(secret_file) if secret_file else data / "callback-secret"
        )
        index = await asyncio.to_thread(KnowledgeIndex.open, data / "knowledge", model)
        knowledge = settings.knowledge
        self.serving = Serving(model, index, top_k=knowledge.top_k, min_score=knowledge.min_score)
        self.batcher = MicroBatcher(
            self.serving.classify_batch,
            max_batch=settings.model.max_batch,
            max_wait_ms=settings.model.max_wait_ms,
            concurrency=settings.model.batch_workers,
        )
        self.batcher.stats.observer = self.metrics.observe_batch
        await self.batcher.start()
        self.escalations = EscalationJobRunner(
            self.store,
            self.escalator,
            budget_s=settings.uplink.job_budget_ms / 1000,
            retry_interval_s=settings.uplink.retry_interval_s,
            notify=self._notify,
        )
        self.uplink.on_up(self.escalations.wake)
        self.drainer = OutboxDrainer(
            self.store, self.gate, settings.site_id, registry=self.metrics.registry
        )
        self.uplink.on_up(self._sync_up)
        self.workflows = WorkflowEngine(
            self.store,
            msgspec.structs.replace(settings.workflows, site_id=settings.site_id),
            index=index,
            nc_provider=lambda: self.uplink.nc if self.uplink.connected else None,
            masker=self.gate.masker,
            registry=self.metrics.registry,
            supervisor=self.supervisor,
        )
        await self.workflows.start()
        self.workflows.examples = await self.workflows.embed_examples(model)
        self.retention = Retention(
            self.store, settings.retention, settings.memory, registry=self.metrics.registry
        )
        self.retention.start(self.supervisor)
        self._wire()
        self._started = True
        self._prefill_spans()
        await self.uplink.start()
        self._spawn(self.jobs.resume())
        self.supervisor.start("escalations", self.escalations.run)
        if settings.uplink.nats_url:
            self.fleet = EdgeFleetClient(self, settings.fleet, supervisor=self.supervisor)
            await self.fleet.start()
        if settings.uplink.nats_url and not self.escalator.allowed():
            log.warning(
                "uplink configured but residency.classes.escalation_prompt is local-only: nothing will escalate"
            )
        _freeze_startup_heap()
        log.info(
            "agent started",
            extra={"fields": {"model_version": model.version, "provider": model.provider}},
        )

    def _wire(self) -> None:
        """The request path and the API's facades, over the opened resources."""
        settings = self.settings
        self.recorder = Recorder(
            self.store,
            self.drainer,
            self.gate,
            self.metrics,
            self.stats,
            site_id=settings.site_id,
            memory_turns=settings.memory.turns,
        )
        self.recorder.candidates.serve(served_score(self.serving.model))
        self.pipeline = Pipeline(
            settings,
            serving=self.serving,
            batcher=self.batcher,
            escalator=self.escalator,
            escalations=self.escalations,
            workflows=self.workflows,
            store=self.store,
            recorder=self.recorder,
            metrics=self.metrics,
            policy=self.policy,
        )
        self.retention.on_feedback_purged = self.pipeline.feedback.reload
        self.jobs = AsyncJobs(
            self.store,
            self.pipeline,
            self.escalations,
            self.callbacks,
            spawn=self._spawn,
            max_text_chars=settings.limits.max_text_chars,
            callback_allow_hosts=settings.jobs.callback_allow_hosts,
        )
        max_chars = settings.limits.max_text_chars
        self.documents = Documents(
            self.serving, self.batcher, max_text_chars=max_chars, on_added=self._prefill_spans
        )
        self.sessions = Sessions(self.store)
        self.metrics.bind(
            queue_depth=lambda: self.batcher.queue_depth,
            outbox_depth=lambda: self.store.outbox_depth(),
            knowledge_chunks=lambda: len(self.serving.index),
            data_path=settings.data_path,
            outbox_full=self.store.outbox_full,
            outbox_deferred=lambda: self.store.outbox_deferred_total,
            outbox_dropped=lambda: sum(self.store.outbox_dropped_total.values()),
        )

    def _prefill_spans(self) -> None:
        """Warm the exit gate's span cache with the live index's passages, off the request
        path (`SpanPrefill`): at start, and whenever the index or the gate is replaced or a
        document added. Texts already cached are not searched again."""
        self.span_prefill.start(self.gate.masker, self.serving.index.passage_texts)

    def _sync_up(self) -> None:
        """On every (re)connect: make sure the outbox drainer runs, and poke it."""
        nc = self.uplink.nc
        if nc is not None:
            self.supervisor.start("sync", lambda: self.drainer.run(nc))
        self.drainer.wake(link=True)

    async def _notify(self, job_id: str) -> None:
        await self.jobs.notify(job_id)

    async def stop(self) -> None:
        if self.fleet is not None:
            await self.fleet.stop()
        if self._started:
            await self.retention.stop()
            await self.workflows.stop()
            await self.drainer.stop()
        await self.supervisor.stop_all()
        await asyncio.to_thread(self.span_prefill.stop)  # it reads the index closed below
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.uplink.stop()
        if self._started:
            await self.batcher.close()
            await asyncio.to_thread(self.serving.index.close)
            await asyncio.to_thread(self.store.close)
        await self.callbacks.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def infer(self, query: Query) -> InferResult:
        """One request through the pipeline (the HTTP handler calls the pipeline itself)."""
        return await self.pipeline.infer(query)

    async def readiness(self) -> Readiness:
        checks = {"model": False, "db": False, "index": False}
        if self._started:
            checks["model"] = True
            checks["index"] = self.serving.index is not None
            checks["db"] = await self.store.check_writable()
        model = self.serving.model if self._started else None
        return Readiness(
            ready=all(checks.values()),
            checks=checks,
            model_version=model.version if model else None,
            provider=model.provider if model else None,
            link=self.uplink.state,
            degraded=self._degraded() if self._started else [],
            tasks=self.supervisor.states(),
            sync="standalone" if self.standalone else "uplink",
        )

    def _degraded(self) -> list[str]:
        reasons = []
        if self.store.outbox_full():
            reasons.append(
                f"outbox_full: {self.store.outbox_depth()} records pending, quota "
                f"{self.store.outbox.quota}; "
                + (
                    "audit deferred, memory sync dropped"
                    if self.store.outbox.when_full == "defer"
                    else "writes that must sync are refused"
                )
            )
        for task in self.supervisor.down():
            reasons.append(f"task_restarting: {task.name} ({task.last_error})")
        return reasons

    # FleetHost: what the fleet client reads and calls

    @property
    def site_id(self) -> str:
        return self.settings.site_id

    @property
    def data_path(self) -> Path:
        return self.settings.data_path

    @property
    def fleet_options(self) -> FleetOptions:
        return self.settings.fleet

    @property
    def metrics_registry(self) -> Registry:
        return self.metrics.registry

    @property
    def model(self) -> IntentModel:
        return self.serving.model

    @property
    def index(self) -> KnowledgeIndex:
        return self.serving.index

    @property
    def link_state(self) -> str:
        return self.uplink.state

    def load_model(self, bundle: Path) -> IntentModel:
        model = self.settings.model
        return IntentModel.load(
            bundle,
            model.providers,
            model.intra_op_threads or None,
            provider_options=model.provider_options,
            spelling=model.spelling,
        )

    def backlog(self) -> Backlog:
        return Backlog(
            outbox_depth=self.store.outbox_depth(),
            job_backlog=len(self.store.list_jobs("waiting_for_uplink", limit=1_000_000)),
        )

    async def swap_model(self, model: IntentModel) -> IntentModel:
        """Make `model` live atomically; in-flight batches finish on the old one.

        The knowledge index is re-embedded first when the embedding changes."""
        async with self._swap_lock:
            self.policy.validate_against(list(model.labels))
            warn_threshold_scale(self.policy, served_score(model), "bundle swapped")
            old, index = self.serving.model, self.serving.index
            examples = await self.workflows.embed_examples(model)  # re-embedded on a new space
            if model.embedding_version != old.embedding_version:
                new_index = await asyncio.to_thread(
                    KnowledgeIndex.open, self.settings.data_path / "knowledge", model
                )
                self.serving.swap(model, new_index)
                self.workflows.index = new_index  # retrieve steps must not search a closed index
                self._prefill_spans()  # before the old index closes under the running one
                await asyncio.to_thread(index.close)
            else:
                self.serving.swap(model, index)
            self.recorder.candidates.serve(served_score(model))
            self.workflows.examples = examples
            log.info("model swapped", extra={"fields": {"from": old.version, "to": model.version}})
            return old

    def apply_remote_config(
        self, router: RouterPolicy | None = None, residency: ResidencyPolicy | None = None
    ) -> None:
        """Validate, then apply without a restart; raises (and changes nothing) when invalid.
        Every part that holds a policy gets the new one here."""
        if router is not None:
            router.validate_against(list(self.model.labels))
            warn_threshold_scale(router, served_score(self.model), "remote config applied")
        if residency is not None:
            gate = self.gate.with_policy(residency)  # counts into the same metrics
            self.gate, self.residency = gate, residency
            self.escalator.gate = gate
            self.recorder.gate = gate
            self._prefill_spans()  # the new gate's masker starts from an empty cache
            self.store.sync_memory = gate.allows(DataClass.MEMORY)
        if router is not None:
            self.policy = router
            self.pipeline.policy = router
