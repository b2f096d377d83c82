"""What starts a run besides a call to `start_run`: a signed inbound webhook event
(``POST /v1/events/<source>``) and messages on the site-local NATS trigger subjects
(``aivos.evt.<site>.<name>``). Both deduplicate redeliveries by their delivery / message id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import msgspec

from aivos.edge.workflows import audit
from aivos.edge.workflows.errors import EventRefused
from aivos.edge.workflows.journal import RunJournal
from aivos.edge.workflows.loader import WorkflowSet
from aivos.edge.workflows.metrics import WorkflowMetrics
from aivos.edge.workflows.secrets import Secrets
from aivos.edge.workflows.settings import WorkflowSettings
from aivos.edge.workflows.signatures import ReplayGuard, SignatureError, verify
from aivos.edge.workflows.spec import Workflow
from aivos.edge.workflows.views import EventAccepted, RunResult
from aivos.shared.errors import StepFailed
from aivos.shared.subjects import event_subject

__all__ = ["Triggers", "StartRun"]

log = logging.getLogger(__name__)


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
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._metrics = metrics
        self._start_run = start_run
        self._nc_provider = nc_provider
        self._replay = ReplayGuard()
        self._workflows = workflows  # the loaded set (raises before the engine starts)
        self._secrets = secrets
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()  # set once the NATS triggers listen

    def start(self) -> None:
        """Listen on the NATS trigger subjects, if any workflow has one."""
        if self._workflows().by_nats and self._nc_provider is not None:
            self._task = asyncio.create_task(self._nats_loop(self._nc_provider))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def accept_event(
        self, source: str, body: bytes, headers: Mapping[str, str], *, wait_s: float = 0.0
    ) -> EventAccepted:
        """A signed inbound webhook: verify, then start every workflow bound to the event.

        Raises EventRefused (and audits it) when the signature is missing or wrong."""
        secrets = self._secrets()
        secret = secrets.webhooks.get(source) if secrets else None
        try:
            verify(
                secret.secret if secret else None,
                headers.get("x-aivos-signature"),
                headers.get("x-aivos-timestamp"),
                body,
                tolerance_s=self._settings.webhook_tolerance_s,
                guard=self._replay,
            )
        except SignatureError as exc:
            self._metrics.webhooks_refused.inc(reason=exc.reason)
            await self._journal.audit(audit.event_refused(source, exc.reason, len(body)))
            raise EventRefused(exc.reason) from exc
        try:
            payload = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError as exc:
            raise StepFailed("bad_event", "the event body is not JSON") from exc
        if not isinstance(payload, dict):
            raise StepFailed("bad_event", "the event body must be a JSON object")
        event_type = headers.get("x-aivos-event") or payload.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise StepFailed("bad_event", "no event type (X-Aivos-Event header or `type` field)")
        name = f"{source}.{event_type}"
        delivery = headers.get("x-aivos-delivery")
        runs = []
        for wf in self._workflows().by_event.get(name, []):
            dedup = f"evt:{source}:{delivery}:{wf.name}" if delivery else None
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
        subscribed_on: Any = None
        while True:
            nc = nc_provider()
            if nc is not None and nc is not subscribed_on and getattr(nc, "is_connected", False):
                try:
                    for name, wfs in by_nats.items():
                        subject = event_subject(self._settings.site_id, name)
                        await nc.subscribe(subject, cb=self._nats_handler(name, wfs))
                    subscribed_on = nc
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
