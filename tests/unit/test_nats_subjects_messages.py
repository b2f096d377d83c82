from __future__ import annotations

import msgspec
import pytest

from aivos.shared import subjects
from aivos.shared.errors import ConfigError
from aivos.shared.messages import (
    Accepted,
    Done,
    Error,
    GenerateRequest,
    Passage,
    Saturated,
    Token,
    decode_reply,
    decode_request,
    encode,
    now_ms,
)


def test_subjects_are_namespaced_per_site() -> None:
    assert subjects.gen_subject("branch-12") == "aivos.gen.branch-12"
    assert subjects.heartbeat_subject("b1") == "aivos.hb.b1"
    assert subjects.sync_subject("b1", "audit") == "aivos.sync.b1.audit"
    assert subjects.sync_site_filter("b1") == "aivos.sync.b1.>"
    assert subjects.event_subject("b1", "model_swapped") == "aivos.evt.b1.model_swapped"
    assert subjects.GEN_ALL_SITES == "aivos.gen.*"


@pytest.mark.parametrize("bad", ["", "a.b", "a*", "a>", "a b", "Upper", "-lead", "x" * 64])
def test_unsafe_site_ids_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError):
        subjects.gen_subject(bad)


def test_data_class_token_is_validated() -> None:
    with pytest.raises(ConfigError):
        subjects.sync_subject("b1", "audit.>")


def test_request_round_trips_and_rejects_unknown_fields() -> None:
    req = GenerateRequest(
        request_id="r1",
        site="b1",
        prompt="hello <EMAIL_1>",
        passages=(Passage("p1", source="faq.md", score=0.8),),
        memory=("likes tea",),
        stream=True,
    )
    assert decode_request(encode(req)) == req
    raw = msgspec.json.decode(encode(req))
    raw["surprise"] = 1
    with pytest.raises(msgspec.ValidationError):
        decode_request(msgspec.json.encode(raw))


@pytest.mark.parametrize(
    "reply",
    [
        Accepted("r1", worker="w"),
        Saturated("r1", retry_after_ms=20),
        Token("r1", seq=3, text="hi"),
        Done("r1", text="hi there", n_tokens=2),
        Error("r1", code="deadline_exceeded", message="late"),
    ],
)
def test_reply_union_decodes_each_kind(reply: object) -> None:
    decoded = decode_reply(encode(reply))  # type: ignore[arg-type]
    assert decoded == reply
    assert type(decoded) is type(reply)


def test_deadline_helpers() -> None:
    assert GenerateRequest("r", "b1", "x").remaining_ms() == float("inf")
    past = GenerateRequest("r", "b1", "x", deadline_unix_ms=now_ms() - 1)
    assert past.expired()
    future = GenerateRequest("r", "b1", "x", deadline_unix_ms=now_ms() + 60_000)
    assert not future.expired()
