"""What starts a run besides a call to `start_run`: a signed inbound webhook event
(``POST /v1/events/<source>``) and messages on the site-local NATS trigger subjects
(``aivos.evt.<site>.<name>``). Both deduplicate redeliveries by their delivery / message id.

A webhook is verified (signatures.py), then its delivery id is claimed in the store's replay
cache (a captured request is refused even after a restart). Refusals never write per request:
they are counted (metric by reason) and rolled up into at most one `auth_failure` audit row
per `rollup_s`, so unauthenticated callers cannot fill the outbox.

Started with a `Supervisor` (the agent's), the NATS subscription loop and the rollup loop are
the supervised tasks "workflow-triggers" and "workflow-rollup": an exception that escapes
either restarts it after a back-off (and shows in `/readyz` and the metrics meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import msgspec

from aivos.edge.store import AuditRecord
from aivos.edge.store._codec import now_iso
from aivos.edge.supervise import Supervisor
from aivos.edge.workflows.errors import EventRefused
from aivos.edge.workflows.journal import RunJournal
from aivos.edge.workflows.loader import WorkflowSet
from aivos.edge.workflows.metrics import WorkflowMetrics
from aivos.edge.workflows.secrets import Secrets
from aivos.edge.workflows.settings import WorkflowSettings
from aivos.edge.workflows.signatures import SignatureError, verify
from aivos.edge.workflows.spec import Workflow
from aivos.edge.workflows.views import EventAccepted, RunResult
from aivos.shared.errors import StepFailed
from aivos.shared.ids import new_id
from aivos.shared.subjects import event_subject

__all__ = ["Triggers", "StartRun", "NATS_TASK", "ROLLUP_TASK"]

log = logging.getLogger(__name__)

NATS_TASK = "workflow-triggers"
ROLLUP_TASK = "workflow-rollup"


class StartRun(Protocol):
    def __call__(
        self,
        workflow: Workflow,
        inputs: dict[str, Any],
        *,
        wait_s: float,
        trigger: str = ...,
        dedup_key: str | None = ...,
    ) -> Awaitable[RunResult]: ...


class Triggers:
    def __init__(
        self,
        settings: WorkflowSettings,
        journal: RunJournal,
        metrics: WorkflowMetrics,
        start_run: StartRun,
        nc_provider: Callable[[], Any] | None,
        *,
        workflows: Callable[[], WorkflowSet],
        secrets: Callable[[], Secrets | None],
        rollup_s: float = 60.0,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._metrics = metrics
        self._start_run = start_run
        self._nc_provider = nc_provider
        self._rollup_s = rollup_s
        self._refused: Counter[str] = Counter()  # by reason, since the last rollup row
        self._refused_sources: Counter[str] = Counter()  # known sources only, else "unknown"
        self._refused_since: str | None = None
        self._rollup_task: asyncio.Task[None] | None = None
        self._workflows = workflows  # the loaded set (raises before the engine starts)
        self._secrets = secrets
        self._task: asyncio.Task[None] | None = None
        self._supervisor = supervisor
        # the connection the subjects are subscribed on: kept across a restart of the loop,
        # so a restart does not subscribe the same connection twice
        self._subscribed_on: Any = None
        self.subscribed = asyncio.Event()  # set once the NATS triggers listen

    def start(self) -> None:
        """Listen on the NATS trigger subjects, if any workflow has one; roll up refusals."""
        nc_provider = self._nc_provider
        listen = bool(self._workflows().by_nats) and nc_provider is not None
        if self._supervisor is not None:
            if listen and nc_provider is not None:
                self._supervisor.start(NATS_TASK, lambda: self._nats_loop(nc_provider))
            self._supervisor.start(ROLLUP_TASK, self._rollup_loop)
            return
        if listen and nc_provider is not None:
            self._task = asyncio.create_task(self._nats_loop(nc_provider))
        self._rollup_task = asyncio.create_task(self._rollup_loop())

    async def stop(self) -> None:
        if self._supervisor is not None:
            await self._supervisor.stop(NATS_TASK)
            await self._supervisor.stop(ROLLUP_TASK)
        for task in (self._task, self._rollup_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._rollup_task = None
        try:
            await self.flush_refused()
        except Exception as exc:  # e.g. the disk is full: the metric still counted them
            log.warning("webhook refusal rollup not written: %s", type(exc).__name__)

    def _refuse(self, source: str, known: bool, exc: SignatureError) -> EventRefused:
        self._metrics.webhooks_refused.inc(reason=exc.reason)
        if not self._refused:
            self._refused_since = now_iso()
        self._refused[exc.reason] += 1
        self._refused_sources[source if known else "unknown"] += 1
        log.debug("webhook refused (%s)", exc.reason)
        return EventRefused(exc.reason)

    async def flush_refused(self) -> None:
        """Write one `auth_failure` audit row for the refusals counted since the last one."""
        if not self._refused:
            return
        total = sum(self._refused.values())
        record = AuditRecord(
            id=new_id(),
            kind="auth_failure",
            decision="webhooks_refused",
            detail={
                "count": total,
                "by_reason": dict(self._refused),
                "by_source": dict(self._refused_sources),
                "since": self._refused_since,
            },
        )
        await self._journal.audit(record)
        # only what was counted up to the write is cleared (later refusals stay pending)
        self._refused.clear()
        self._refused_sources.clear()
        self._refused_since = None

    async def _rollup_loop(self) -> None:
        while True:
            await asyncio.sleep(self._rollup_s)
            try:
                await self.flush_refused()
            except Exception as exc:  # kept, retried at the next tick
                log.warning("webhook refusal rollup not written: %s", type(exc).__name__)

    async def accept_event(
        self, source: str, body: bytes, headers: Mapping[str, str], *, wait_s: float = 0.0
    ) -> EventAccepted:
        """A signed inbound webhook: verify, claim its delivery id, then start every
        workflow bound to the event.

        Raises EventRefused (counted, rolled up into the audit log) when the source is
        unknown, the signature is missing, malformed, stale or wrong, or the delivery was
        already accepted."""
        secrets = self._secrets()
        secret = secrets.webhooks.get(source) if secrets else None
        tolerance = self._settings.webhook_tolerance_s
        try:
            signed = verify(secret.secret if secret else None, headers, body, tolerance_s=tolerance)
            fresh = await self._journal.claim_delivery(
                source, signed.delivery_id, signed.timestamp + tolerance + 1
            )
            if not fresh:
                raise SignatureError("replayed")
        except SignatureError as exc:
            raise self._refuse(source, secret is not None, exc) from exc
        try:
            return await self._start_event(source, signed.event, signed.delivery_id, body, wait_s)
        except BaseException:
            # nothing (or not everything) started: let the sender's retry through; runs
            # already started are not repeated (their dedup key is the delivery id)
            await asyncio.shield(self._journal.release_delivery(source, signed.delivery_id))
            raise

    async def _start_event(
        self, source: str, event_type: str, delivery: str, body: bytes, wait_s: float
    ) -> EventAccepted:
        try:
            payload = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError as exc:
            raise StepFailed("bad_event", "the event body is not JSON") from exc
        if not isinstance(payload, dict):
            raise StepFailed("bad_event", "the event body must be a JSON object")
        name = f"{source}.{event_type}"
        runs = []
        for wf in self._workflows().by_event.get(name, []):
            dedup = f"evt:{source}:{delivery}:{wf.name}"
            inputs = {**payload, "event": name}
            runs.append(
                await self._start_run(
                    wf, inputs, wait_s=wait_s, trigger=f"event:{name}", dedup_key=dedup
                )
            )
        return EventAccepted(event=name, runs=runs)

    async def _nats_loop(self, nc_provider: Callable[[], Any]) -> None:
        """Subscribe the site-local trigger subjects; re-subscribe on a new connection."""
        by_nats = self._workflows().by_nats
        while True:
            nc = nc_provider()
            fresh = nc is not None and nc is not self._subscribed_on
            if fresh and getattr(nc, "is_connected", False):
                try:
                    for name, wfs in by_nats.items():
                        subject = event_subject(self._settings.site_id, name)
                        await nc.subscribe(subject, cb=self._nats_handler(name, wfs))
                    self._subscribed_on = nc
                    self.subscribed.set()
                    log.info("workflow triggers subscribed on %d subjects", len(by_nats))
                except Exception as exc:  # retried on the next tick
                    log.warning("workflow trigger subscription failed: %s", type(exc).__name__)
            await asyncio.sleep(self._settings.nats_retry_s)

    def _nats_handler(self, name: str, wfs: list[Workflow]) -> Callable[[Any], Any]:
        async def handle(msg: Any) -> None:
            try:
                payload = msgspec.json.decode(msg.data) if msg.data else {}
            except msgspec.DecodeError:
                log.warning("non-JSON message on workflow trigger %s dropped", name)
                return
            if not isinstance(payload, dict):
                return
            msg_id = (msg.headers or {}).get("Nats-Msg-Id")
            for wf in wfs:
                dedup = f"nats:{name}:{msg_id}:{wf.name}" if msg_id else None
                await self._start_run(
                    wf,
                    {**payload, "event": name},
                    wait_s=0,
                    trigger=f"nats:{name}",
                    dedup_key=dedup,
                )

        return handle
