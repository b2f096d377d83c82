"""Routing on answerability: open-ended requests and unanswerable local routes escalate."""

from __future__ import annotations

import pytest

from aivos.edge.answers import builtin_template, local_answer
from aivos.edge.router import (
    IntentRule,
    Route,
    RouterPolicy,
    is_open_ended,
    knowledge_may_answer,
    route,
    settle,
)

LOCAL = Route("local", "default", 0.5)


@pytest.mark.parametrize(
    "text",
    [
        "write me a long poem about the sea",
        "Could you please draft an email to my landlord?",
        "tell me a bedtime story about a brave mouse",
        "I'd like you to compare these two savings accounts",
        "explain how compound interest works",
        "hey, can you summarise this article for me",
        "give me five ideas for a team outing",
        "what are the pros and cons of a fixed-rate mortgage",
        "a haiku about autumn, please",
    ],
)
def test_production_and_reasoning_requests_are_open_ended(text: str) -> None:
    assert is_open_ended(text)


@pytest.mark.parametrize(
    "text",
    [
        "what are your opening hours",
        "I was charged twice for my card",
        "how much does an international transfer cost",
        "tell me about the card fees",
        "freeze my card",
        "my card was stolen, what should I do",
        "is the branch open on saturday",
    ],
)
def test_lookups_and_transactions_are_not_open_ended(text: str) -> None:
    assert not is_open_ended(text)


def test_open_ended_local_route_escalates_even_with_a_good_passage() -> None:
    settled = settle(LOCAL, "explain the card fees", 0.9, answer_min_score=0.45, generator=False)
    assert (settled.decision, settled.reason) == ("escalate", "open_ended")


def test_a_passage_above_the_threshold_keeps_the_route_local() -> None:
    assert settle(LOCAL, "card fees?", 0.6, answer_min_score=0.45, generator=True) is LOCAL


def test_no_passage_escalates_when_a_generator_is_there() -> None:
    settled = settle(LOCAL, "who made you", 0.2, answer_min_score=0.45, generator=True)
    assert (settled.decision, settled.reason, settled.threshold) == ("escalate", "no_answer", 0.5)
    assert settle(LOCAL, "who made you", None, answer_min_score=0.45, generator=True).decision == (
        "escalate"
    )


def test_without_a_generator_the_local_reply_stays() -> None:
    assert settle(LOCAL, "who made you", None, answer_min_score=0.45, generator=False) is LOCAL


def test_a_template_answers_without_a_passage() -> None:
    templated = Route("local", "policy", 0.5, "Our opening hours: {passage}")
    assert settle(templated, "hours?", None, answer_min_score=0.45, generator=True) is templated


@pytest.mark.parametrize(
    "decided", [Route("refuse", "policy", 0.5), Route("escalate", "out_of_scope", 0.5)]
)
def test_refusals_and_escalations_stand(decided: Route) -> None:
    assert settle(decided, "write a poem", None, answer_min_score=0.45, generator=True) is decided


def test_small_talk_has_a_builtin_template_unless_the_policy_gives_one() -> None:
    decided = route(RouterPolicy(), "greeting", 0.9, 0.5, "oos")
    assert decided.template == builtin_template("greeting")
    assert local_answer("greeting", [], decided.template) == builtin_template("greeting")
    own = RouterPolicy(intents={"greeting": IntentRule(template="Welcome to the branch!")})
    assert route(own, "greeting", 0.9, 0.5, "oos").template == "Welcome to the branch!"
    assert route(RouterPolicy(), "balance", 0.9, 0.5, "oos").template is None


OOS = Route("escalate", "out_of_scope", 0.5)


def test_an_out_of_scope_request_the_documents_answer_is_answered_from_them() -> None:
    settled = settle(
        OOS, "opening hours?", 0.7, answer_min_score=0.45, generator=True, answer_out_of_scope=True
    )
    assert (settled.decision, settled.reason, settled.template) == ("local", "knowledge", None)


@pytest.mark.parametrize(
    ("text", "score", "allowed"),
    [
        ("opening hours?", 0.3, True),  # the passage is too weak
        ("explain the opening hours", 0.9, True),  # open-ended
        ("opening hours?", 0.9, False),  # the policy does not allow it
    ],
)
def test_out_of_scope_stays_escalated(text: str, score: float, allowed: bool) -> None:
    settled = settle(
        OOS, text, score, answer_min_score=0.45, generator=True, answer_out_of_scope=allowed
    )
    assert settled is OOS


def test_knowledge_answers_only_where_the_policy_keeps_requests_local() -> None:
    assert knowledge_may_answer(RouterPolicy(), "balance")
    assert not knowledge_may_answer(RouterPolicy(default="escalate"), "balance")
    refusing = RouterPolicy(intents={"pin_change": IntentRule(decision="refuse")})
    assert not knowledge_may_answer(refusing, "pin_change")
    assert knowledge_may_answer(refusing, "balance")
