"""Wire types of the generation protocol over NATS (JSON, msgspec tagged unions).

Request: the edge publishes one `GenerateRequest` to ``aivos.gen.<site>`` with a reply
inbox. Replies, all to that inbox, in order:

* `Saturated` (the worker is at its concurrency limit; nothing else follows), or
* `Error` (e.g. ``deadline_exceeded``, ``bad_request``; nothing else follows), or
* `Accepted`, then zero or more `Token` (only if ``stream`` is true), then `Done` or `Error`.

Each message is decoded with one reused decoder (`decode_reply`, `decode_request`).
Schema evolution follows msgspec's rules: new fields go last with defaults.

`GenerateRequest` and `Done` are encoded with ``omit_defaults``: a field left at its
default is not sent, so a peer built before the field existed (whose decoder forbids
unknown fields) still decodes the message. Model routing relies on it: a request naming no
``model_class`` and a `Done` that names no model look exactly as they did before.

`Done.finish_reason` says why generation stopped (``stop``: the model ended its answer,
``length``: ``max_tokens`` cut it); missing means unknown. A worker sends it only to an
edge whose request carries the header `REPLY_FIELDS_HEADER` naming it: an older edge's
decoder would reject the field, and the header (unlike a request field) is ignored by an
older worker. It is a plain string, not a Literal, so a reason added later (``deadline``
for a worker that answers what it has when the deadline passes) still decodes here.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

__all__ = [
    "Passage",
    "GenerateRequest",
    "Accepted",
    "Saturated",
    "Token",
    "Timings",
    "Done",
    "Error",
    "Reply",
    "FinishReason",
    "REPLY_FIELDS_HEADER",
    "INTENT_HEADER",
    "reply_fields_headers",
    "reads_finish_reason",
    "encode",
    "decode_request",
    "decode_reply",
    "now_ms",
]


# "stop" | "length" today; any string decodes (see the module docstring)
FinishReason = str
_CUT = frozenset({"length", "deadline"})  # reasons that mean the text was cut short

# NATS header on a request: the optional `Done` fields the requester decodes (comma list)
REPLY_FIELDS_HEADER = "Aivos-Reply-Fields"
# the edge's intent for a generation request: the cloud's per-intent token budgets
INTENT_HEADER = "Aivos-Intent"
_FINISH_REASON = "finish_reason"


def reply_fields_headers() -> dict[str, str]:
    """The headers an edge sends with a request so that workers name the finish reason."""
    return {REPLY_FIELDS_HEADER: _FINISH_REASON}


def reads_finish_reason(headers: dict[str, str] | None) -> bool:
    """Whether the requester decodes `Done.finish_reason` (it sent `reply_fields_headers`)."""
    value = (headers or {}).get(REPLY_FIELDS_HEADER, "")
    return _FINISH_REASON in (v.strip() for v in value.split(","))


def now_ms() -> int:
    """Wall-clock Unix time in milliseconds (deadlines are absolute, in this unit)."""
    return time.time_ns() // 1_000_000


class Passage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A retrieved knowledge passage sent as generation context."""

    text: str
    source: str = ""
    score: float = 0.0


class GenerateRequest(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag="generate",
    tag_field="type",
):
    """One generation request. `prompt`, `passages` and `memory` are already policy-masked."""

    request_id: str
    site: str
    prompt: str
    passages: tuple[Passage, ...] = ()
    memory: tuple[str, ...] = ()
    max_tokens: int = 128
    temperature: float = 0.2
    deadline_unix_ms: int = 0  # 0 = no deadline
    stream: bool = False
    system: str | None = None
    traceparent: str | None = None
    # interactive: someone is waiting on the answer; background: a deferred job's completion
    priority: Literal["interactive", "background"] = "interactive"
    # a catalogue model class (``small``, ``large``): sent to ``aivos.gen.<site>.<class>``
    # and resolved by the cloud's model router; None: the default queue group
    model_class: str | None = None

    def remaining_ms(self, now: int | None = None) -> float:
        """Milliseconds left before the deadline (``inf`` when there is none)."""
        if self.deadline_unix_ms <= 0:
            return float("inf")
        return float(self.deadline_unix_ms - (now_ms() if now is None else now))

    def expired(self, now: int | None = None) -> bool:
        return self.remaining_ms(now) <= 0


class Accepted(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="accepted", tag_field="type"
):
    """A worker took the request; `worker` identifies it (for logs and tests)."""

    request_id: str
    worker: str = ""


class Saturated(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="saturated", tag_field="type"
):
    """The worker is at its concurrency limit; retry after `retry_after_ms` or fall back."""

    request_id: str
    retry_after_ms: int = 50
    worker: str = ""


class Token(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="token", tag_field="type"):
    """One streamed chunk of generated text; `seq` counts from 0 without gaps."""

    request_id: str
    seq: int
    text: str


class Timings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the worker spent its time, in milliseconds."""

    queue_ms: float = 0.0
    first_token_ms: float = 0.0
    total_ms: float = 0.0


class Done(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag="done",
    tag_field="type",
):
    """Generation finished: the full `text` and counters. For a request that named a model
    class, `model` and `version` name the catalogue entry that produced the text and
    `fallback` is true when it was not the class's primary. `finish_reason` (None: unknown,
    an older worker or a requester that did not ask for it) says whether the text was cut."""

    request_id: str
    text: str
    n_tokens: int
    timings: Timings = Timings()
    backend: str = ""
    worker: str = ""
    model: str = ""
    version: str = ""
    fallback: bool = False
    finish_reason: FinishReason | None = None

    @property
    def cut(self) -> bool:
        """The text stopped before the model ended it (``max_tokens`` or the deadline)."""
        return self.finish_reason in _CUT


class Error(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="error", tag_field="type"):
    """Generation failed; `code` is machine-readable (``deadline_exceeded``, ``backend_error``,
    ``bad_request``, ``shutting_down``; from the model router also ``quota_exceeded``,
    ``unknown_model_class`` and ``no_model_available``)."""

    request_id: str
    code: str
    message: str = ""


Reply = Accepted | Saturated | Token | Done | Error

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(GenerateRequest)
_reply_decoder = msgspec.json.Decoder(Reply)


def encode(message: GenerateRequest | Reply) -> bytes:
    """JSON bytes of any message of this protocol."""
    return _encoder.encode(message)


def decode_request(data: bytes) -> GenerateRequest:
    """Decode a request; raises `msgspec.ValidationError`/`DecodeError` on bad input."""
    return _request_decoder.decode(data)


def decode_reply(data: bytes) -> Reply:
    """Decode any reply message (tagged union, one reused decoder)."""
    return _reply_decoder.decode(data)
