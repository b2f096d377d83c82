"""HTTP request/response bodies of the edge agent. Unknown fields are refused at this boundary."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from litestar.params import Body
from msgspec import Meta

__all__ = [
    "NON_BLANK",
    "documented_body",
    "InferRequest",
    "InferResponse",
    "GeneratorOut",
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
    "FeedbackIn",
    "FeedbackOut",
]

SessionId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
Metadata = Annotated[dict[str, Any], Meta(max_length=32)]
MAX_METADATA_DEPTH = 8  # nesting levels of a metadata value (deeper: 400)


NON_BLANK = r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
"""A JSON-schema pattern for "holds a character that is not whitespace", whitespace being
exactly what `str.strip()` removes (the edge core's `EmptyText`/`EmptyDocument` checks)."""


def documented_body(
    non_blank: tuple[str, ...] = (), *, any_of: list[dict[str, Any]] | None = None
) -> Any:
    """`Body(...)` for a Struct body, documenting in its schema what the server checks
    beyond the Struct's field types, so that every schema-valid body is accepted: unknown
    fields are refused (`forbid_unknown_fields`, which Litestar does not document), the
    `non_blank` text fields must hold a non-whitespace character (checked by the edge core,
    which keeps its own error codes), and `any_of` lists the allowed field combinations."""
    extra: dict[str, Any] = {"additionalProperties": False}
    if non_blank:
        extra["allOf"] = [{"properties": {f: {"pattern": NON_BLANK} for f in non_blank}}]
    if any_of:
        extra["anyOf"] = any_of
    return Body(schema_extra=extra)


class _In(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


def _depth(value: Any, limit: int) -> int:
    """How deep `value` nests, counting no further than `limit` + 1 (iterative: no recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is not None and _depth(metadata, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")


def _check_url(url: str | None) -> None:
    """A URL that parses (brackets, port) and holds no whitespace or control characters."""
    if url is None:
        return
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError("callback_url holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise ValueError(f"callback_url is not a valid URL: {exc}") from None
    # scheme and host (allow-list) are the job service's checks (edge/callbacks.py)


class InferRequest(_In, frozen=True, forbid_unknown_fields=True):
    text: str
    session_id: SessionId | None = None
    metadata: Metadata | None = None
    stream: bool = False

    def __post_init__(self) -> None:
        _check_metadata(self.metadata)


class PassageOut(msgspec.Struct, frozen=True):
    text: str
    source: str
    score: float
    doc_id: str
    chunk_id: int


class GeneratorOut(msgspec.Struct, frozen=True):
    """The cloud model that produced a generated answer: catalogue name, its version, and
    whether a fallback of the requested model class answered instead of the primary."""

    model: str
    version: str
    fallback: bool


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
    generator: GeneratorOut | None = None  # cloud answers through model routing


class JobRequest(_In, frozen=True, forbid_unknown_fields=True):
    text: str
    session_id: SessionId | None = None
    metadata: Metadata | None = None
    callback_url: Annotated[str, Meta(max_length=2048)] | None = None

    def __post_init__(self) -> None:
        _check_metadata(self.metadata)
        _check_url(self.callback_url)


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


class FeedbackIn(_In, frozen=True, forbid_unknown_fields=True):
    """A rating of an answered request; `doc_id` + `chunk_id` name the passage it is about."""

    request_id: Annotated[str, Meta(min_length=1, max_length=64)]
    helpful: bool
    doc_id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    chunk_id: Annotated[int, Meta(ge=0)] | None = None


class FeedbackOut(msgspec.Struct, frozen=True):
    request_id: str
    intent: str
    helpful: bool
    doc_id: str | None
    chunk_id: int | None
    votes_up: int
    votes_down: int
