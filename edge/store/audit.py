"""The hash-chained audit log.

Each row stores `prev_hash` (the previous row's `hash`, or 64 zeros for the first) and
`hash = sha256(canonical JSON of the row's fields including seq and prev_hash)`. Editing a
row breaks its hash; deleting or reordering rows breaks a `prev_hash` link or the seq
sequence; deleting rows from the end is caught by the chain head kept in `audit_head`.
Rows hold counts of masked PII and small structured detail, never raw PII.

`append()` runs inside a writer transaction and reads the chain head in that same
transaction, so the chain stays consistent under group commit.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

import msgspec

from aivos.edge.store._codec import canonical_json, now_iso
from aivos.shared.errors import DataError
from aivos.shared.sqlite import decode_row, row_dict

__all__ = [
    "AUDIT_KINDS",
    "GENESIS_HASH",
    "AuditRecord",
    "AuditRow",
    "VerifyResult",
    "append",
    "count",
    "get",
    "recent",
    "row_hash",
    "verify",
]

AUDIT_KINDS = ("decision", "workflow_step", "auth_failure", "operator_action", "job")
GENESIS_HASH = "0" * 64

_FIELDS = (
    "seq",
    "id",
    "ts",
    "kind",
    "intent",
    "confidence",
    "decision",
    "model_version",
    "latency_ms",
    "pii_counts",
    "trace_id",
    "detail",
    "prev_hash",
)
_COLUMNS = ", ".join((*_FIELDS, "hash"))


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a caller audits. `id` is the request id (or workflow step / record id), unique."""

    id: str
    kind: str = "decision"
    intent: str | None = None
    confidence: float | None = None
    decision: str | None = None
    model_version: str | None = None
    latency_ms: float | None = None
    pii_counts: dict[str, int] = {}
    trace_id: str | None = None
    detail: dict[str, Any] = {}
    ts: str | None = None  # filled with the append time when None


class AuditRow(msgspec.Struct, frozen=True, kw_only=True):
    """A committed audit row (also the outbox payload of data class "audit")."""

    seq: int
    id: str
    ts: str
    kind: str
    intent: str | None
    confidence: float | None
    decision: str | None
    model_version: str | None
    latency_ms: float | None
    pii_counts: dict[str, int]
    trace_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class VerifyResult(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    n_rows: int
    first_bad_seq: int | None = None
    reason: str | None = None


def row_hash(fields: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of the stored fields (JSON columns as stored text)."""
    body = {name: fields[name] for name in _FIELDS}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _head(conn: sqlite3.Connection) -> tuple[int, str]:
    row = conn.execute("SELECT seq, hash FROM audit_head WHERE one = 1").fetchone()
    return (0, GENESIS_HASH) if row is None else (int(row["seq"]), str(row["hash"]))


def append(conn: sqlite3.Connection, record: AuditRecord) -> AuditRow:
    """Append one row inside the current (writer) transaction."""
    if record.kind not in AUDIT_KINDS:
        raise DataError("audit.kind", f"unknown audit kind {record.kind!r}")
    last_seq, prev_hash = _head(conn)
    fields: dict[str, Any] = {
        "seq": last_seq + 1,
        "id": record.id,
        "ts": record.ts or now_iso(),
        "kind": record.kind,
        "intent": record.intent,
        "confidence": None if record.confidence is None else float(record.confidence),
        "decision": record.decision,
        "model_version": record.model_version,
        "latency_ms": None if record.latency_ms is None else float(record.latency_ms),
        "pii_counts": canonical_json(record.pii_counts),
        "trace_id": record.trace_id,
        "detail": canonical_json(record.detail),
        "prev_hash": prev_hash,
    }
    digest = row_hash(fields)
    conn.execute(
        f"INSERT INTO audit ({_COLUMNS}) VALUES ({', '.join('?' * (len(_FIELDS) + 1))})",
        (*fields.values(), digest),
    )
    conn.execute(
        "INSERT INTO audit_head(one, seq, hash) VALUES (1, ?, ?) "
        "ON CONFLICT(one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        (fields["seq"], digest),
    )
    return AuditRow(
        **{
            **fields,
            "pii_counts": dict(record.pii_counts),
            "detail": dict(record.detail),
            "hash": digest,
        }
    )


def _to_row(row: sqlite3.Row) -> AuditRow:
    return decode_row(row, AuditRow, json=("pii_counts", "detail"))


def get(conn: sqlite3.Connection, record_id: str) -> AuditRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM audit WHERE id = ?", (record_id,)).fetchone()
    return None if row is None else _to_row(row)


def recent(conn: sqlite3.Connection, limit: int = 50) -> list[AuditRow]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq DESC LIMIT ?", (limit,))
    return [_to_row(r) for r in rows]


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) AS n FROM audit").fetchone()["n"])


def verify(conn: sqlite3.Connection) -> VerifyResult:
    """Walk the chain in seq order; report the first row that is edited, missing or moved."""
    n = 0
    expected_seq = 1
    prev_hash = GENESIS_HASH
    cursor = conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq")
    for row in cursor:
        fields = row_dict(row)
        seq = fields["seq"]
        n += 1
        where = f"row seq={seq} (id={fields['id']})"
        if seq != expected_seq:
            return VerifyResult(
                ok=False,
                n_rows=n,
                first_bad_seq=seq,
                reason=f"{where}: expected seq {expected_seq}; rows before it were deleted",
            )
        if fields["prev_hash"] != prev_hash:
            return VerifyResult(
                ok=False,
                n_rows=n,
                first_bad_seq=seq,
                reason=f"{where}: prev_hash does not match the previous row's hash "
                "(rows deleted, inserted or reordered)",
            )
        try:
            recomputed = row_hash(fields)
        except (TypeError, ValueError):
            recomputed = ""
        if recomputed != fields["hash"]:
            return VerifyResult(
                ok=False,
                n_rows=n,
                first_bad_seq=seq,
                reason=f"{where}: hash does not match its contents (row edited)",
            )
        prev_hash = fields["hash"]
        expected_seq += 1
    head_seq, head_hash = _head(conn)
    if head_seq != n or head_hash != prev_hash:
        return VerifyResult(
            ok=False,
            n_rows=n,
            first_bad_seq=n + 1 if head_seq > n else head_seq,
            reason=f"chain head is seq {head_seq} but the log ends at seq {n}: "
            "rows at the end were deleted (or the head was altered)",
        )
    return VerifyResult(ok=True, n_rows=n)
