"""The `site_candidates` table: hard examples kept on the site, and their labels.

Where the residency policy keeps data class ``hard_example`` on the site (no rule, or
``local-only``), the agent keeps each candidate here instead of in the outbox (`keep`):
the request's text, the model's guess and why it is a hard example (edge/candidates.py).
The site's own operators label them with `aivos candidates label` (`label`); `reviewed`
returns the labelled rows as training examples for `aivos models build --from-site`.

A candidate's rating is the vote in ``passage_feedback`` (same request id) and a late cloud
answer is the result of the durable job that carried the request; both are read at list
time, so nothing has to follow the candidate. At most `cap` unlabelled rows are kept (the
oldest go first), and the retention task deletes unlabelled rows older than
`retention.candidates_days` (`purge_unlabelled`): raw request text is kept only as long as
it is useful for a review round. A label is the operator's work and is never dropped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from aivos.edge.store._codec import iso_ago

__all__ = [
    "DEFAULT_CAP",
    "SiteCandidate",
    "ReviewedRow",
    "keep",
    "candidates",
    "label",
    "reviewed",
    "purge_unlabelled",
]

DEFAULT_CAP: Final = 5000  # unlabelled candidates kept; a review round sees hundreds


class SiteCandidate(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    ts: str
    text: str
    intent: str  # the model's guess
    confidence: float
    reason: str  # out_of_scope | escalated | low_confidence
    decision: str
    answer: str | None = None  # the cloud's answer, at once or from a durable job
    answer_late: bool = False  # `answer` came from a durable job after the request
    helpful: bool | None = None  # the latest rating (`POST /v1/feedback`)
    model_version: str | None = None
    label: str | None = None
    label_kind: str | None = None  # intent | new_intent | oos
    labelled_at: str | None = None


class ReviewedRow(msgspec.Struct, frozen=True):
    text: str
    label: str
    request_id: str


def keep(conn: sqlite3.Connection, payload: dict[str, Any], *, cap: int = DEFAULT_CAP) -> None:
    """Store the candidate `payload` (edge/candidates.py's `CandidateKeeper.payload`) inside
    the caller's transaction; a request id already kept is left as it is."""
    conn.execute(
        "INSERT INTO site_candidates(request_id, ts, text, intent, confidence, threshold, "
        "decision, reason, answer, model_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(request_id) DO NOTHING",
        (
            payload["request_id"],
            iso_ago(0),
            payload["text"],
            payload["intent"],
            payload["confidence"],
            payload.get("threshold"),
            payload["decision"],
            payload["reason"],
            payload.get("answer"),
            payload.get("model_version"),
        ),
    )
    conn.execute(
        "DELETE FROM site_candidates WHERE label IS NULL AND seq <= ("
        " SELECT seq FROM site_candidates WHERE label IS NULL ORDER BY seq DESC"
        " LIMIT 1 OFFSET ?)",
        (cap,),
    )


_SELECT = """
SELECT c.request_id, c.ts, c.text, c.intent, c.confidence, c.reason, c.decision,
       c.answer, c.model_version, c.label, c.label_kind, c.labelled_at,
       f.helpful AS helpful,
       (SELECT json_extract(j.result, '$.answer') FROM jobs j
         WHERE j.state = 'done' AND json_extract(j.request, '$.request_id') = c.request_id
         ORDER BY j.updated_at DESC LIMIT 1) AS late_answer
FROM site_candidates c LEFT JOIN passage_feedback f ON f.request_id = c.request_id
"""


def candidates(
    conn: sqlite3.Connection,
    *,
    labelled: bool | None = None,
    since: str | None = None,
    reasons: Sequence[str] = (),
) -> list[SiteCandidate]:
    """Candidates in the order they were kept. `labelled` True/False filters on the label,
    `since` on the time kept (an ISO timestamp), `reasons` on the reason."""
    where: list[str] = []
    args: list[Any] = []
    if labelled is not None:
        where.append("c.label IS NOT NULL" if labelled else "c.label IS NULL")
    if since is not None:
        where.append("c.ts >= ?")
        args.append(since)
    if reasons:
        where.append(f"c.reason IN ({', '.join('?' for _ in reasons)})")
        args.extend(reasons)
    sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY c.seq"
    out = []
    for r in conn.execute(sql, args):
        row = dict(r)
        late = row.pop("late_answer")
        helpful = row.pop("helpful")
        if late is not None:
            row.update(answer=str(late), answer_late=True)
        out.append(
            msgspec.convert(
                {**row, "helpful": None if helpful is None else bool(helpful)}, SiteCandidate
            )
        )
    return out


def label(conn: sqlite3.Connection, request_ids: Iterable[str], name: str, kind: str) -> int:
    """Label the candidates `request_ids` as `name` (checked by the caller); returns how
    many rows were labelled. A relabel replaces the earlier label."""
    ids = sorted(set(request_ids))
    now = iso_ago(0)
    conn.executemany(
        "UPDATE site_candidates SET label = ?, label_kind = ?, labelled_at = ? "
        "WHERE request_id = ?",
        [(name, kind, now, rid) for rid in ids],
    )
    return len(ids)


def reviewed(conn: sqlite3.Connection) -> list[ReviewedRow]:
    """The labelled candidates as training rows, in the order they were kept."""
    rows = conn.execute(
        "SELECT text, label, request_id FROM site_candidates WHERE label IS NOT NULL ORDER BY seq"
    )
    return [ReviewedRow(r["text"], r["label"], r["request_id"]) for r in rows]


def purge_unlabelled(conn: sqlite3.Connection, before: str) -> int:
    """Delete the unlabelled candidates kept before the ISO time `before` (edge/retention.py);
    returns how many."""
    cur = conn.execute("DELETE FROM site_candidates WHERE label IS NULL AND ts < ?", (before,))
    return cur.rowcount
