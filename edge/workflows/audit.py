"""The audit rows a workflow run leaves: one per step outcome (written in the step's own
transaction), one when a run starts waiting for an operator, one per operator action, and
one per refused inbound event."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from aivos.edge.store import AuditRecord, Store
from aivos.edge.store import audit as _audit
from aivos.edge.workflows.rows import RunRow, StepResult
from aivos.shared.errors import QuotaExceeded
from aivos.shared.ids import new_id

__all__ = [
    "step_finished",
    "step_waiting",
    "operator_action",
    "event_refused",
    "append",
    "append_in",
]


def step_finished(run: RunRow, result: StepResult) -> AuditRecord:
    return AuditRecord(
        id=new_id(),
        kind="workflow_step",
        trace_id=run.trace_id,
        decision=result.state,
        latency_ms=result.duration_ms,
        detail={
            "workflow": run.workflow,
            "run_id": run.id,
            "seq": result.seq,
            "step": result.step_id,
            "step_kind": result.kind,
            "attempts": result.attempts,
            "error": result.error.split(":")[0] if result.error else None,
            "run_state": result.run_state,
        },
    )


def step_waiting(run: RunRow, workflow: str, seq: int, step_id: str) -> AuditRecord:
    return AuditRecord(
        id=new_id(),
        kind="workflow_step",
        trace_id=run.trace_id,
        decision="waiting",
        detail={
            "workflow": workflow,
            "run_id": run.id,
            "seq": seq,
            "step": step_id,
            "step_kind": "approve",
        },
    )


def operator_action(run: RunRow, action: str, detail: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        id=new_id(),
        kind="operator_action",
        trace_id=run.trace_id,
        decision=action,
        detail={"workflow": run.workflow, "run_id": run.id, **detail},
    )


def event_refused(source: str, reason: str, size: int) -> AuditRecord:
    return AuditRecord(
        id=new_id(),
        kind="auth_failure",
        decision="webhook_refused",
        detail={"source": source[:64], "reason": reason, "bytes": size},
    )


async def append(store: Store, record: AuditRecord) -> None:
    """Append `record` in its own transaction (synced through the outbox when it has room)."""
    try:
        await store.append_audit(record)
    except QuotaExceeded:
        # the outbox is full: keep the local audit row, it syncs with later records
        await store.append_audit(record, sync=False)


def append_in(store: Store, conn: sqlite3.Connection, record: AuditRecord) -> None:
    """Append `record` inside the caller's writer transaction (the store facade's
    `append_audit`, composed: audit row + outbox record)."""
    row = _audit.append(conn, record)
    # outbox full: the local audit row stays; it is not lost, only not synced
    with contextlib.suppress(QuotaExceeded):
        store.outbox.enqueue(conn, "audit", row, subject=row.kind, record_id=f"audit-{row.id}")
