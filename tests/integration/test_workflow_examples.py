"""Workflows started from a site's own example utterances (edge/workflows/examples.py), with
the real small bundle's embedding: the demo card_dispute workflow on held-out paraphrases
written here (recall) and on CLINC150 *test* rows of other intents (false triggers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aivos.edge.intent.runtime import IntentModel
from aivos.edge.store import Store
from aivos.edge.workflows import WorkflowEngine
from aivos.edge.workflows.demo import DEMO_BINDINGS, WORKFLOWS_DIR, demo_settings
from aivos.edge.workflows.examples import ExampleMatcher
from aivos.edge.workflows.loader import load_workflow, parse_workflow
from aivos.shared.errors import WorkflowInvalid
from aivos.shared.paths import clinc150_path
from aivos.up import _edge_token

# everyday paraphrases of the mission's request, none of them in the workflow's examples
HELD_OUT = [
    "I've been charged twice",
    "my card got charged double",
    "why did you take the payment twice",
    "there's a transaction on my card I didn't make",
    "I don't recognise a charge on my card",
    "I want to contest a payment",
    "I paid once but was billed twice",
    "duplicate charge on my debit card",
    "the merchant charged me two times",
    "there's a payment on my account that isn't mine",
    "somebody charged my card and it wasn't me",
    "you took my money twice for the same order",
    "i was double charged",
    "can you refund a charge i did not authorise",
    "a purchase shows up twice on my card",
]

MINIMAL = """
name = "n"
[trigger]
{trigger}
[[steps]]
id = "answer"
kind = "respond"
template = "ok"
"""


class _OtherSpace:
    """The same model under another embedding version (what a model swap looks like)."""

    embedding_version = "other"

    def __init__(self, model: IntentModel) -> None:
        self.embed_batch = model.embed_batch


@pytest.fixture(scope="module")
def model(small_bundle: Path) -> IntentModel:
    return IntentModel.load(small_bundle)


@pytest.fixture(scope="module")
def matcher(model: IntentModel) -> ExampleMatcher:
    return ExampleMatcher.build([load_workflow(WORKFLOWS_DIR / "card_dispute.toml")], model)


def test_trigger_examples_parse_and_check() -> None:
    wf = parse_workflow(MINIMAL.format(trigger='examples = ["a", "b"]'), "n.toml")
    assert wf.trigger.examples == ["a", "b"]
    assert wf.trigger.min_similarity is None
    with pytest.raises(WorkflowInvalid, match="trigger.min_similarity"):
        parse_workflow(MINIMAL.format(trigger="min_similarity = 0.8"), "n.toml")
    with pytest.raises(WorkflowInvalid, match="trigger"):
        parse_workflow(MINIMAL.format(trigger='examples = [""]'), "n.toml")
    demo = load_workflow(WORKFLOWS_DIR / "card_dispute.toml")
    assert 8 <= len(demo.trigger.examples) <= 12
    assert not set(HELD_OUT) & set(demo.trigger.examples)


def test_demo_examples_recall_and_false_triggers(
    model: IntentModel, matcher: ExampleMatcher
) -> None:
    trigger = matcher.triggers["card_dispute"]
    assert trigger.calibrated and 0.5 <= trigger.threshold < trigger.leave_one_out
    hits = [matcher.match(e) for e in model.embed_batch(HELD_OUT)]
    recall = sum(h is not None and h.workflow == "card_dispute" for h in hits) / len(HELD_OUT)
    data = json.loads(clinc150_path().read_bytes())
    bound = set(load_workflow(WORKFLOWS_DIR / "card_dispute.toml").trigger.intents)
    others = [t for t, i in data["test"] if i not in bound] + [t for t, _ in data["oos_test"]]
    vectors = model.embed_batch(others)
    scores = np.max(vectors @ trigger.vectors.T, axis=1)
    false_rate = float(np.mean(scores >= trigger.threshold))
    print(f"threshold {trigger.threshold}: recall {recall:.3f}, false {false_rate:.4f}")
    assert recall >= 0.8
    assert false_rate <= 0.01


def test_examples_with_a_set_threshold_skip_calibration(model: IntentModel) -> None:
    wf = parse_workflow(
        MINIMAL.format(trigger='examples = ["open the pod bay doors"]\nmin_similarity = 0.99'),
        "n.toml",
    )
    built = ExampleMatcher.build([wf], model, negatives=[])
    assert built.triggers["n"].threshold == 0.99 and not built.triggers["n"].calibrated
    assert built.match(model.embed_batch(["what is the weather today"])[0]) is None
    assert built.match(model.embed_batch(["open the pod bay doors"])[0]) is not None


async def test_engine_starts_card_dispute_from_the_missions_sentence(
    tmp_path: Path, model: IntentModel, matcher: ExampleMatcher
) -> None:
    store = Store.open(tmp_path / "edge")
    engine = WorkflowEngine(store, demo_settings("http://127.0.0.1:9"))
    await engine.start(resume=False)
    try:
        sentence = model.embed_batch(["I was charged twice for my card"])[0]
        assert engine.workflow_for_embedding(sentence) is None  # no model yet
        engine.examples = await engine.embed_examples(model)
        found = engine.workflow_for_embedding(sentence)
        assert found is not None and found.name == "card_dispute"
        weather = model.embed_batch(["will it rain tomorrow"])[0]
        assert engine.workflow_for_embedding(weather) is None
        # same embedding space: kept; a new one (a model swap): embedded again
        assert await engine.embed_examples(model) is engine.examples
        swapped = await engine.embed_examples(_OtherSpace(model))
        assert swapped is not engine.examples and swapped.embedding_version == "other"
        assert set(swapped.triggers) == {"card_dispute"}
    finally:
        await engine.stop()
        store.close()


def test_up_demo_client_token_is_bound_to_the_demo_account(tmp_path: Path) -> None:
    plain = _edge_token(tmp_path, "client")
    bound = _edge_token(tmp_path, "client", bound=dict(DEMO_BINDINGS))
    assert bound != plain  # an unbound saved token is replaced, not reused
    assert _edge_token(tmp_path, "client", bound=dict(DEMO_BINDINGS)) == bound
    store = Store.open(tmp_path)
    try:
        info = store.authenticate(bound)
        assert info is not None and info.scope == "client" and info.bound == DEMO_BINDINGS
    finally:
        store.close()
