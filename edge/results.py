"""What the request path takes and gives back, free of HTTP: who asks (`Caller`), the query,
what the model and
the router made of it (`Understood`), how it was answered (`Outcome`), the recorded result
(`InferResult`) and the events of a streamed answer. `edge/api` turns these into response
bodies and SSE events.

`InferResult` has the fields of the `/v1/infer` body in the same order: a job stores
`msgspec.to_builtins(result)` as its result, and the streamed `done` event carries it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeAlias

import msgspec

from aivos.edge.intent.runtime import Prediction
from aivos.edge.router import Decision, Route

__all__ = [
    "AnsweredBy",
    "Caller",
    "SITE",
    "Query",
    "StoredQuery",
    "Passage",
    "Understood",
    "Outcome",
    "Generator",
    "InferResult",
    "StreamMeta",
    "StreamToken",
    "StreamDone",
    "StreamEvent",
]

AnsweredBy = Literal["local", "cloud", "fallback", "refusal", "workflow"]


class Caller(msgspec.Struct, frozen=True, kw_only=True):
    """Who a request acts for: the token's id (what sessions, jobs and runs record as their
    owner), whether it sees everything (operator and admin scopes), and the attributes the
    site bound to the token (trusted workflow inputs, e.g. `account_id`)."""

    token_id: str | None = None
    sees_all: bool = False
    bound: dict[str, str] = {}

    def may_see(self, owner: str | None) -> bool:
        """Whether a thing owned by `owner` (None: the site's own) is visible to this caller."""
        return self.sees_all or (owner is not None and owner == self.token_id)


SITE = Caller(sees_all=True)  # the site itself: the CLI, triggers, internal callers


class Query(Protocol):
    """What the pipeline reads of a request: an HTTP body and a stored job's request both
    have these (no copy is made on the hot path)."""

    @property
    def text(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...


class StoredQuery(msgspec.Struct, frozen=True):
    """A query read back from a durable job."""

    text: str
    session_id: str | None = None
    metadata: dict[str, Any] | None = None


class Passage(msgspec.Struct, frozen=True):
    """A retrieved knowledge passage, as answers cite it and escalations send it."""

    text: str
    source: str
    score: float
    doc_id: str
    chunk_id: int


class Understood(msgspec.Struct):
    """What the model and the router made of one request."""

    request_id: str
    started: float  # time.perf_counter() when the request arrived
    prediction: Prediction
    model_version: str
    passages: list[Passage]
    route: Route


class Generator(msgspec.Struct, frozen=True):
    """The cloud model that produced a generated answer, as the model router's `Done` names
    it: catalogue model, its version, and whether a fallback of the class answered."""

    model: str
    version: str
    fallback: bool = False


class Outcome(msgspec.Struct, frozen=True):
    """How one request was answered: what every branch of the pipeline returns and the one
    place that records requests turns into an `InferResult` and an audit row."""

    answer: str | None
    answered_by: AnsweredBy
    reason: str  # audit detail: "policy", "fallback:link_down", "workflow:<name>", ...
    job_id: str | None = None
    pii_counts: dict[str, int] = {}
    run_id: str | None = None
    generator: Generator | None = None  # a cloud answer from a named model (model routing)
    cut: bool = False  # the generated answer was cut (max_tokens or the deadline)
    # a fallback's durable job, not yet written: the recorder writes it in the audit row's
    # transaction (one commit per request, and neither without the other)
    job_write: Callable[[sqlite3.Connection], Any] | None = None


class InferResult(msgspec.Struct, frozen=True, omit_defaults=False):
    request_id: str
    intent: str
    confidence: float
    decision: Decision
    answer: str | None
    passages: list[Passage]
    model_version: str
    latency_ms: float
    job_id: str | None = None
    answered_by: AnsweredBy = "local"
    truncated: bool = False
    run_id: str | None = None
    generator: Generator | None = None


class StreamMeta(msgspec.Struct, frozen=True):
    """First event of a streamed answer: what the model and the router made of the query."""

    request_id: str
    intent: str
    confidence: float
    decision: Decision
    passages: list[Passage]


class StreamToken(msgspec.Struct, frozen=True):
    text: str


class StreamDone(msgspec.Struct, frozen=True):
    result: InferResult


StreamEvent: TypeAlias = StreamMeta | StreamToken | StreamDone
