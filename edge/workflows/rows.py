"""What the run journal stores: a run (`workflow_runs`), a step (`workflow_steps`), and the
`StepResult` the driver hands it when a step ends.

A run's `seq` is the number of steps it has finished; the step in flight (if any) is the
row with `seq = run.seq + 1`. `cursor` is the id of the next step to run (NULL: no more).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from aivos.shared.sqlite import decode_row

__all__ = ["RunRow", "StepRow", "StepResult", "TERMINAL", "ACTIVE", "run_row", "step_row"]

TERMINAL = ("succeeded", "failed", "rejected", "cancelled", "timed_out")
ACTIVE = ("running", "waiting_approval")


class RunRow(msgspec.Struct, kw_only=True):
    id: str
    workflow: str
    digest: str
    trigger: str
    state: str
    inputs: dict[str, Any]
    cursor: str | None
    seq: int
    response: str | None
    error: str | None
    trace_id: str
    dedup_key: str | None
    active_s: float
    deadline_missed: bool
    created_at: str
    updated_at: str
    finished_at: str | None


class StepRow(msgspec.Struct, kw_only=True):
    run_id: str
    seq: int
    step_id: str
    kind: str
    state: str  # running | waiting | done | failed
    attempts: int
    input: Any
    output: Any
    error: str | None
    idem_key: str | None
    attempt_log: list[dict[str, Any]]
    started_at: str
    finished_at: str | None
    duration_ms: float | None
    wait_until: float | None
    decision: str | None
    decided_by: str | None
    note: str | None


class StepResult(msgspec.Struct, frozen=True, kw_only=True):
    """How one step ended and where its run goes next: recorded in one transaction."""

    seq: int
    step_id: str
    kind: str
    state: str  # done | failed
    input: Any = None
    output: Any = None
    error: str | None = None
    attempts: int
    attempt_log: list[dict[str, Any]]
    duration_ms: float
    cursor: str | None  # the next step (the failed one when the run stops on it)
    active_s: float
    advance: bool  # the step counts as finished (else it stays in flight, for /retry)
    run_state: str = "running"
    response: str | None = None
    run_error: str | None = None
    deadline_missed: bool = False


def run_row(row: sqlite3.Row) -> RunRow:
    return decode_row(row, RunRow, json=("inputs",), deadline_missed=bool(row["deadline_missed"]))


def step_row(row: sqlite3.Row) -> StepRow:
    attempt_log = msgspec.json.decode(row["attempt_log"]) if row["attempt_log"] else None
    return decode_row(row, StepRow, json=("input", "output"), attempt_log=attempt_log or [])
