"""Hard examples synced from the sites, and the labels operators give them.

Sites send candidates as records of data class ``hard_example`` (edge/candidates.py): kind
``candidate`` (the masked text, the intent guess, its confidence, the route, the cloud's
answer), kind ``feedback`` (a user's rating, keyed by the same request id) and kind
``answer`` (the cloud's answer of a durable escalation job that finished after the
candidate left: it fills the candidate's `answer`, `answer_late` set). The ingest
stores them like every other record, in ``records``; this module reads them back as
`Candidate`s and keeps the review in its own table ``candidate_labels`` (migration
``candidates_0001_labels``, on SQLite and PostgreSQL alike): one label per ``(site,
request_id)`` with the operator who gave it and when. A label is one of

* ``intent``: an intent the bundle already has;
* ``new_intent``: a new intent's name (the next build adds the class);
* ``oos``: out of scope for this fleet (trained as the ``oos`` class).

`reviewed()` is what `aivos models build --from-fleet` trains on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec

from aivos.cloud.db import Migration, apply_migrations
from aivos.cloud.db.migrations import pg_ddl
from aivos.cloud.ingest.store import CloudStore
from aivos.shared.datasets import OOS_LABEL
from aivos.shared.errors import InvalidInput, NotFound
from aivos.shared.residency import DataClass

__all__ = [
    "LABEL_KINDS",
    "Candidate",
    "CandidateStore",
    "LabelKind",
    "ReviewedExample",
    "check_label",
]

LabelKind = Literal["intent", "new_intent", "oos"]
LABEL_KINDS: Final = ("intent", "new_intent", "oos")
_INTENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS candidate_labels (
    site TEXT NOT NULL,
    request_id TEXT NOT NULL,
    label TEXT NOT NULL,
    label_kind TEXT NOT NULL,
    operator TEXT NOT NULL,
    labelled_at REAL NOT NULL,
    PRIMARY KEY (site, request_id)
)
"""
MIGRATIONS = [Migration("candidates_0001_labels", _SCHEMA, pg_ddl(_SCHEMA))]

_UPSERT = (
    "INSERT INTO candidate_labels(site, request_id, label, label_kind, operator, labelled_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(site, request_id) DO UPDATE SET "
    "label = excluded.label, label_kind = excluded.label_kind, operator = excluded.operator, "
    "labelled_at = excluded.labelled_at"
)


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """One hard example as the site sent it (masked), with its feedback and label."""

    site: str
    request_id: str
    text: str
    intent: str
    confidence: float
    reason: str  # out_of_scope | escalated | low_confidence
    decision: str
    answer: str | None
    model_version: str
    created_at: str
    helpful: bool | None = None  # the latest user rating, if any
    answer_late: bool = False  # `answer` came from a durable job after the request
    label: str | None = None
    label_kind: str | None = None
    labelled_by: str | None = None
    labelled_at: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.site, self.request_id)


class ReviewedExample(msgspec.Struct, frozen=True):
    text: str
    label: str
    site: str
    request_id: str


def check_label(kind: str, label: str, known: Sequence[str] | None) -> str:
    """The label to store for `kind`, or InvalidInput. `known`: the current bundle's intents
    (None: not known here, any well-formed name is accepted as an existing intent)."""
    if kind not in LABEL_KINDS:
        raise InvalidInput(
            "kind", f"unknown label kind {kind!r} (one of: {', '.join(LABEL_KINDS)})"
        )
    if kind == "oos":
        return OOS_LABEL
    name = label.strip()
    if not _INTENT_NAME.match(name) or name == OOS_LABEL:
        raise InvalidInput(
            "label", "an intent name is lower_snake_case (a-z, 0-9, _), at most 64 characters"
        )
    if known is not None:
        if kind == "intent" and name not in known:
            raise InvalidInput("label", f"{name!r} is not an intent of the current bundle")
        if kind == "new_intent" and name in known:
            raise InvalidInput("label", f"{name!r} already exists: label it as an existing intent")
    return name


def _candidate(site: str, payload: dict[str, Any], created_at: str) -> Candidate | None:
    try:
        return msgspec.convert(
            {
                "site": site,
                "request_id": payload["request_id"],
                "text": payload["text"],
                "intent": payload["intent"],
                "confidence": payload["confidence"],
                "reason": payload["reason"],
                "decision": payload["decision"],
                "answer": payload.get("answer"),
                "model_version": payload["model_version"],
                "created_at": created_at,
            },
            Candidate,
        )
    except (KeyError, TypeError, msgspec.ValidationError):
        return None  # a record this version cannot read: skipped, never fatal for the page


class CandidateStore:
    """The review over a `CloudStore` (same database, same engine)."""

    def __init__(self, cloud: CloudStore) -> None:
        self.cloud = cloud
        self.engine = cloud.engine
        apply_migrations(self.engine, MIGRATIONS)

    def candidates(self, *, unlabelled: bool | None = None) -> list[Candidate]:
        """Every candidate in the sites' order; `unlabelled` True/False filters on the label."""
        records = self.cloud.records(data_class=DataClass.HARD_EXAMPLE)
        found: dict[tuple[str, str], Candidate] = {}
        ratings: dict[tuple[str, str], bool] = {}
        late: dict[tuple[str, str], str] = {}
        for r in records:  # ordered by site, then the site's outbox seq: later wins
            if not isinstance(r.payload, dict):
                continue
            if r.kind == "candidate":
                c = _candidate(r.site, r.payload, r.created_at)
                if c is not None:
                    found[c.key] = c
            elif r.kind == "feedback" and isinstance(r.payload.get("helpful"), bool):
                ratings[(r.site, str(r.payload.get("request_id")))] = r.payload["helpful"]
            elif r.kind == "answer" and isinstance(r.payload.get("answer"), str):
                late[(r.site, str(r.payload.get("request_id")))] = r.payload["answer"]
        labels = self._labels()
        out: list[Candidate] = []
        for key, c in found.items():
            lab = labels.get(key)
            if unlabelled is True and lab is not None or unlabelled is False and lab is None:
                continue
            extra: dict[str, Any] = {"helpful": ratings.get(key)}
            if key in late:
                extra.update(answer=late[key], answer_late=True)
            if lab is not None:
                extra.update(
                    label=lab["label"],
                    label_kind=lab["label_kind"],
                    labelled_by=lab["operator"],
                    labelled_at=float(lab["labelled_at"]),
                )
            out.append(msgspec.structs.replace(c, **extra))
        return out

    def _labels(self) -> dict[tuple[str, str], Any]:
        rows = self.engine.read(
            lambda c: c.execute(
                "SELECT site, request_id, label, label_kind, operator, labelled_at "
                "FROM candidate_labels"
            ).fetchall()
        )
        return {(r["site"], r["request_id"]): r for r in rows}

    def label(
        self,
        keys: Sequence[tuple[str, str]],
        kind: str,
        label: str,
        operator: str,
        known: Sequence[str] | None = None,
    ) -> str:
        """Label the candidates `keys` (all or none); returns the stored label. A key the
        store has no candidate for is `NotFound`: nothing is written."""
        stored = check_label(kind, label, known)
        if not keys:
            raise InvalidInput("members", "select at least one example")
        existing = {c.key for c in self.candidates()}
        missing = [f"{s}/{r}" for s, r in keys if (s, r) not in existing]
        if missing:
            raise NotFound(f"no such candidates: {', '.join(missing[:5])}")
        now = time.time()
        with self.engine.tx() as conn:
            conn.executemany(
                _UPSERT, [(s, r, stored, kind, operator, now) for s, r in sorted(set(keys))]
            )
        return stored

    def reviewed(self) -> list[ReviewedExample]:
        """The labelled candidates as training rows (masked text -> label), in a stable order."""
        return [
            ReviewedExample(c.text, c.label, c.site, c.request_id)
            for c in self.candidates(unlabelled=False)
            if c.label is not None
        ]
