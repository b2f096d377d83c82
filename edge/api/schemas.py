"""HTTP request/response bodies of the edge agent. Unknown fields are refused at this boundary."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "InferRequest",
    "InferResponse",
    "PassageOut",
    "JobRequest",
    "JobAccepted",
    "JobOut",
    "KnowledgeIn",
    "DocumentOut",
    "SearchOut",
    "FactIn",
    "FactOut",
    "TurnOut",
    "SessionOut",
    "ErrorBody",
    "ErrorDetail",
    "HealthOut",
    "ReadyOut",
]

SessionId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
Metadata = Annotated[dict[str, Any], Meta(max_length=32)]


class _In(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class InferRequest(_In, frozen=True, forbid_unknown_fields=True):
    text: str
    session_id: SessionId | None = None
    metadata: Metadata | None = None
    stream: bool = False


class PassageOut(msgspec.Struct, frozen=True):
    text: str
    source: str
    score: float
    doc_id: str
    chunk_id: int


class InferResponse(msgspec.Struct, frozen=True, omit_defaults=False):
    request_id: str
    intent: str
    confidence: float
    decision: Literal["local", "escalate", "refuse"]
    answer: str | None
    passages: list[PassageOut]
    model_version: str
    latency_ms: float
    job_id: str | None = None
    answered_by: Literal["local", "cloud", "fallback", "refusal", "workflow"] = "local"
    truncated: bool = False
    run_id: str | None = None


class JobRequest(_In, frozen=True, forbid_unknown_fields=True):
    text: str
    session_id: SessionId | None = None
    metadata: Metadata | None = None
    callback_url: Annotated[str, Meta(max_length=2048)] | None = None


class JobAccepted(msgspec.Struct, frozen=True):
    job_id: str
    status: str
    status_url: str


class JobOut(msgspec.Struct, frozen=True):
    job_id: str
    status: str
    created_at: str
    updated_at: str
    result: dict[str, Any] | None = None
    error: str | None = None


class KnowledgeIn(_In, frozen=True, forbid_unknown_fields=True):
    source: Annotated[str, Meta(min_length=1, max_length=512)]
    text: str
    title: Annotated[str, Meta(max_length=512)] | None = None


class DocumentOut(msgspec.Struct, frozen=True):
    doc_id: str
    source: str
    title: str | None
    n_chunks: int
    added_at: float


class SearchOut(msgspec.Struct, frozen=True):
    query: str
    passages: list[PassageOut]
    embedding_version: str


class FactIn(_In, frozen=True, forbid_unknown_fields=True):
    value: Annotated[str, Meta(max_length=4000)]


class FactOut(msgspec.Struct, frozen=True):
    key: str
    value: Any
    updated_at: str


class TurnOut(msgspec.Struct, frozen=True):
    role: str
    text: str
    ts: str


class SessionOut(msgspec.Struct, frozen=True):
    session_id: str
    turns: list[TurnOut]
    facts: list[FactOut]


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    detail: Any = None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


class HealthOut(msgspec.Struct, frozen=True):
    status: str


class ReadyOut(msgspec.Struct, frozen=True):
    ready: bool
    checks: dict[str, bool]
    model_version: str | None = None
    provider: str | None = None
    link: str | None = None  # uplink state (informational: an offline box is still ready)
