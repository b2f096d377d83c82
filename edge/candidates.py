"""Hard examples: the requests worth a human look, kept for retraining the site's bundle.

A decision is a *candidate* when the model was unsure or could not serve it:

* ``out_of_scope``: below the threshold or predicted as the bundle's `oos` class;
* ``escalated``: sent to the cloud (open-ended, nothing to answer from, a policy rule);
* ``low_confidence``: answered locally, but within `band` of the threshold.

The band lies just above the served threshold, on the served score's own scale: the score
the bundle serves as the confidence (MSP, or the `shared/ood.py` score of a bundle with
``ood``) has its own width (`CANDIDATE_BANDS`), chosen so that about the same share of
traffic is kept whichever the bundle serves. The agent tells the keeper which score its
bundle serves (`CandidateKeeper.serve`) when it loads or swaps one.

A candidate leaves the site as an outbox record of data class ``hard_example`` (kind
``candidate``), so the residency policy decides: ``mask`` and the exit gate masks the text
and the answer at the one place data leaves the site; no rule or ``local-only`` and it
stays on the site instead, in the store's ``site_candidates`` table, for the site's own
review (`aivos candidates`, edge/store/reviewed.py, which reads ratings and late answers
from the store). Feedback on a candidate (``POST /v1/feedback``) follows as a record of
kind ``feedback`` keyed by the same request id. The audit row of a candidate carries
``detail.candidate`` (the reason), which is how the feedback path finds it.

An escalation the site could not make at once (no uplink) is answered with a fallback and
becomes a durable job; when the job runner later gets the cloud's answer, it follows the
candidate as a record of kind ``answer`` (same request id, masked at the exit like the
candidate's own answer), so the reviewer sees what the cloud said (`attach_answer`).

Candidates are best effort: a full outbox drops one (counted), it never fails the request.
A candidate is written in its audit row's writer op (`CandidateWrite`, in a savepoint of
its own): no candidate without the row that names it, and no row lost for a candidate.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, Final

from aivos.edge.results import InferResult, Outcome, Understood
from aivos.edge.router import MSP_SCORE
from aivos.edge.store import Store
from aivos.edge.store import reviewed as _reviewed
from aivos.edge.store.writer import run_in_savepoint
from aivos.shared.errors import QuotaExceeded
from aivos.shared.ood import SCORE as OOD_SCORE
from aivos.shared.residency import DataClass, ExitGate

__all__ = [
    "CANDIDATE_BAND",
    "CANDIDATE_BANDS",
    "candidate_band",
    "KIND_CANDIDATE",
    "KIND_ANSWER",
    "KIND_FEEDBACK",
    "CandidateKeeper",
    "CandidateWrite",
    "candidate_reason",
]

log = logging.getLogger(__name__)

# A local answer this close to the threshold is kept too: the next bundle may well get it
# wrong. 0.1 on a softmax confidence keeps a few percent of CLINC150-like traffic.
CANDIDATE_BAND: Final = 0.1
# The band per served score, the same share of traffic on each. The out-of-scope score
# (MSP x sqrt(typicality)) spreads in-scope queries down towards its threshold (~0.07 where
# the MSP's is ~0.5), so its 0.1 would keep 2.5-3x as many: 3.2-6.0% of CLINC150 val/test
# against the MSP band's 1.0-3.0% on the same bundles. 0.04 keeps 1.0-2.8%: the width that
# keeps the MSP band's share was 0.036-0.050 on val, 0.027-0.045 on test (full, no-`oos` and
# 10-shot bundles; docs/models.md "Improving a site's bundle").
CANDIDATE_BANDS: Final = {MSP_SCORE: CANDIDATE_BAND, OOD_SCORE: 0.04}
KIND_CANDIDATE: Final = "candidate"
KIND_FEEDBACK: Final = "feedback"
KIND_ANSWER: Final = "answer"  # a durable job's late cloud answer to a candidate


def candidate_band(score: str) -> float:
    """The low-confidence band above the threshold for a bundle serving `score` ("msp" or
    the `shared/ood.py` score's name)."""
    try:
        return CANDIDATE_BANDS[score]
    except KeyError:
        raise ValueError(f"no candidate band for the score {score!r}") from None


def candidate_reason(u: Understood, band: float = CANDIDATE_BAND) -> str | None:
    """Why this decision is a hard example, or None when it is not one. `band` is on the
    scale of `u.prediction.confidence` (`candidate_band` of the score the bundle serves)."""
    if u.route.reason == "out_of_scope":
        return "out_of_scope"
    if u.route.decision == "escalate":
        return "escalated"
    if u.route.decision == "local" and u.prediction.confidence < u.route.threshold + band:
        return "low_confidence"
    return None


def _record_id(kind: str, request_id: str) -> str:
    return f"{kind}-{request_id}"


class CandidateWrite:
    """A hard example written inside its audit row's writer op, so it commits with the row
    or not at all (the feedback path finds it through the row). Best effort inside the op:
    it runs in its own savepoint, as the writer runs each op of a batch, so its failure
    rolls back the hard example alone, and the row and the request go on (`error` says
    why; a full disk still fails the whole transaction, as for any op)."""

    def __init__(self, store: Store, payload: dict[str, Any], *, on_site: bool) -> None:
        self.store = store
        self.payload = payload
        self.on_site = on_site
        self.error: Exception | None = None  # set in the writer thread, read once committed

    def __call__(self, conn: sqlite3.Connection) -> None:
        ok, value = run_in_savepoint(conn, self._insert)
        self.error = None if ok else value

    def _insert(self, conn: sqlite3.Connection) -> None:
        if self.on_site:
            _reviewed.keep(conn, self.payload)
            return
        rid = _record_id(KIND_CANDIDATE, str(self.payload["request_id"]))
        self.store.outbox.enqueue(
            conn, DataClass.HARD_EXAMPLE, self.payload, subject=KIND_CANDIDATE, record_id=rid
        )


class CandidateKeeper:
    """Queues candidate and feedback records; `gate` is the recorder's current exit gate."""

    def __init__(self, store: Store, *, score: str = MSP_SCORE) -> None:
        self.store = store
        self.score = score
        self.band = candidate_band(score)  # what `Recorder` passes to `candidate_reason`
        self.kept = 0
        self.kept_on_site = 0  # the policy keeps them local: for `aivos candidates`
        self.dropped = 0  # refused by a full outbox

    def serve(self, score: str) -> None:
        """The bundle now serves `score` as its confidence: keep its own band from now on."""
        band = candidate_band(score)
        if score != self.score:
            log.info("hard-example band %.3g above the %s threshold", band, score)
        self.score, self.band = score, band

    @staticmethod
    def allowed(gate: ExitGate) -> bool:
        return gate.allows(DataClass.HARD_EXAMPLE)

    def payload(
        self, u: Understood, text: str, result: InferResult, outcome: Outcome, reason: str
    ) -> dict[str, Any]:
        """What the cloud needs to review and retrain; `text` and `answer` are masked at the
        exit gate (they are not in the gate's exempt keys)."""
        return {
            "request_id": u.request_id,
            "text": text,
            "intent": result.intent,
            "confidence": result.confidence,
            "threshold": round(float(u.route.threshold), 4),
            "decision": result.decision,
            "reason": reason,
            "route_reason": u.route.reason,
            "answered_by": result.answered_by,
            # the cloud's (generator's) answer when there was one; local answers are the
            # site's own templates/passages and add nothing to a review
            "answer": result.answer if result.answered_by == "cloud" else None,
            "model_version": result.model_version,
        }

    def keep_write(self, gate: ExitGate, payload: dict[str, Any]) -> CandidateWrite:
        """The candidate's write, for its audit row's writer op (`Store.append_audit(
        after=...)`): queued if the policy lets it leave, else kept on the site. Count it
        with `settle` once that op committed."""
        return CandidateWrite(self.store, payload, on_site=not self.allowed(gate))

    def settle(self, write: CandidateWrite) -> bool:
        """Count (and log) a candidate's write whose audit row committed; False when it was
        not kept (a full outbox, a failure keeping it on site)."""
        rid, error = write.payload["request_id"], write.error
        if error is None:
            if write.on_site:
                self.kept_on_site += 1
            else:
                self.kept += 1
            return True
        if write.on_site:
            log.warning("hard example %s not kept on site", rid, exc_info=error)
        elif isinstance(error, QuotaExceeded):
            self.dropped += 1
            log.info("outbox full: hard example %s not kept", rid)
        else:
            log.warning("hard example %s not queued", rid, exc_info=error)
        return False

    def feedback_write(
        self, gate: ExitGate, conn: sqlite3.Connection, request_id: str, helpful: bool
    ) -> None:
        """Inside the feedback's own transaction: queue the rating of a candidate. A second
        rating gets its own record; the cloud keeps the latest (by the site's outbox order)."""
        if not self.allowed(gate):
            return
        try:
            self.store.outbox.enqueue(
                conn,
                DataClass.HARD_EXAMPLE,
                {"request_id": request_id, "helpful": helpful},
                subject=KIND_FEEDBACK,
            )
        except QuotaExceeded:
            self.dropped += 1

    async def attach_answer(self, gate: ExitGate, request_id: str, answer: str) -> bool:
        """A durable escalation job finished: queue its cloud answer for the candidate of
        `request_id`, if that request was one (its audit row names it). Best effort, like
        the candidate itself: False when not queued, never raises."""
        if not self.allowed(gate):
            return False
        try:
            row = self.store.get_audit(request_id)
        except Exception:  # a store problem must not fail the job that already finished
            log.warning("hard example %s: audit row not readable", request_id, exc_info=True)
            return False
        if row is None or not row.detail.get("candidate"):
            return False

        def write(conn: sqlite3.Connection) -> None:
            self.store.outbox.enqueue(
                conn,
                DataClass.HARD_EXAMPLE,
                {"request_id": request_id, "answer": answer, "answered_by": "cloud"},
                subject=KIND_ANSWER,
            )

        try:
            await self.store.transact(write)
        except QuotaExceeded:
            self.dropped += 1
            log.info("outbox full: late answer of hard example %s not kept", request_id)
            return False
        except Exception:
            log.warning("hard example %s: late answer not queued", request_id, exc_info=True)
            return False
        self.kept += 1
        return True
