"""Issue 12, reproduction 5: a workflow's inputs are declared and typed; a client request can
neither override the built-in inputs (`text`, `session_id`) nor pick whose data a connector
touches: inputs declared `source = "token"` come from the attributes the site bound to the
client's token, never from the request's metadata. The demo `card_dispute` is such a case."""

from __future__ import annotations

from pathlib import Path

import pytest

from aivos.edge.store import Store
from aivos.edge.store import tokens as store_tokens
from aivos.edge.workflows.demo import DEMO_BINDINGS, WORKFLOWS_DIR
from aivos.edge.workflows.inputs import InputsUnavailable, request_inputs
from aivos.edge.workflows.loader import load_workflow, parse_workflow
from aivos.shared.errors import DataError, InvalidInput, WorkflowInvalid

HEAD = 'name = "wf"\n'
ANSWER = '[[steps]]\nid = "answer"\nkind = "respond"\ntemplate = "{inputs.account_id}"\n'
ACCOUNT = '[inputs.account_id]\nsource = "token"\npattern = "ACC-[0-9]{4}"\n'


def wf(text: str) -> object:
    return parse_workflow(text, "wf.toml")


def inputs(text: str, *, metadata: dict | None = None, bound: dict | None = None) -> dict:
    return request_inputs(
        parse_workflow(text, "wf.toml"),
        text="charged twice",
        session_id="s-1",
        metadata=metadata,
        bound=bound or {},
    )


def test_metadata_cannot_override_built_in_inputs() -> None:
    got = inputs(
        HEAD + ACCOUNT + ANSWER,
        metadata={"text": "evil", "session_id": "cust-42", "event": "x", "extra": 1},
        bound={"account_id": "ACC-1001"},
    )
    assert got == {"account_id": "ACC-1001", "text": "charged twice", "session_id": "s-1"}


def test_a_workflow_without_declared_inputs_gets_no_metadata() -> None:
    text = HEAD + '[[steps]]\nid = "answer"\nkind = "respond"\ntemplate = "{inputs.text}"\n'
    got = inputs(text, metadata={"account_id": "ACC-2002", "text": "evil"})
    assert got == {"text": "charged twice", "session_id": "s-1"}


def test_token_inputs_come_from_the_token_never_from_metadata() -> None:
    hostile = {"account_id": "ACC-2002"}
    got = inputs(HEAD + ACCOUNT + ANSWER, metadata=hostile, bound={"account_id": "ACC-1001"})
    assert got["account_id"] == "ACC-1001"
    # an unbound token: the workflow does not apply, the metadata is not a substitute
    with pytest.raises(InputsUnavailable) as err:
        inputs(HEAD + ACCOUNT + ANSWER, metadata=hostile)
    assert (err.value.name, err.value.source) == ("account_id", "token")
    # a bound value the input's format refuses is refused too
    with pytest.raises(InvalidInput):
        inputs(HEAD + ACCOUNT + ANSWER, bound={"account_id": "ACC-1001/../ACC-2002"})


def test_request_inputs_are_typed() -> None:
    text = (
        HEAD
        + '[inputs.amount]\ntype = "number"\n'
        + '[inputs.count]\ntype = "integer"\nrequired = false\n'
        + '[inputs.urgent]\ntype = "boolean"\ndefault = false\n'
        + "[inputs.note]\nmax_length = 5\nrequired = false\n"
        + '[[steps]]\nid = "answer"\nkind = "respond"\ntemplate = "{inputs.amount}"\n'
    )
    assert inputs(text, metadata={"amount": 12.5, "count": 3}) == {
        "amount": 12.5,
        "count": 3,
        "urgent": False,
        "text": "charged twice",
        "session_id": "s-1",
    }
    for bad in (
        {"amount": "lots"},
        {"amount": True},
        {"amount": 1, "count": 1.5},
        {"amount": 1, "urgent": "maybe"},
        {"amount": 1, "note": "far too long"},
        {"amount": 1, "note": ["a"]},
    ):
        with pytest.raises(InvalidInput):
            inputs(text, metadata=bad)
    with pytest.raises(InputsUnavailable):
        inputs(text, metadata={})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (HEAD + '[inputs.text]\nsource = "request"\n' + ANSWER, ["inputs.text", "built in"]),
        (HEAD + "[inputs.session_id]\n" + ANSWER, ["inputs.session_id", "built in"]),
        (HEAD + ACCOUNT + ANSWER.replace("account_id", "acount_id"), ["acount_id", "declared"]),
        (HEAD + '[inputs.n]\ntype = "integer"\npattern = "[0-9]+"\n' + ANSWER, ["pattern"]),
        (HEAD + '[inputs.s]\npattern = "("\n' + ANSWER, ["inputs.s", "pattern"]),
        (HEAD + '[inputs.s]\nsource = "header"\n' + ANSWER, ["source"]),
        (HEAD + '[inputs.n]\ntype = "integer"\ndefault = "x"\n' + ANSWER, ["default"]),
        (HEAD + "[inputs.Bad]\n" + ANSWER, ["inputs"]),
    ],
)
def test_malformed_input_declarations_are_refused(text: str, words: list[str]) -> None:
    with pytest.raises(WorkflowInvalid) as err:
        wf(text)
    message = str(err.value) + " " + str(getattr(err.value, "source", ""))
    for word in words:
        assert word in message, message


def test_the_demo_card_dispute_takes_the_account_from_the_token() -> None:
    card = load_workflow(WORKFLOWS_DIR / "card_dispute.toml")
    assert card.inputs["account_id"].source == "token"
    got = request_inputs(
        card,
        text="I was charged twice",
        session_id=None,
        metadata={"account_id": "ACC-2002"},
        bound=DEMO_BINDINGS,
    )
    assert got["account_id"] == DEMO_BINDINGS["account_id"] == "ACC-1001"
    with pytest.raises(InputsUnavailable):
        request_inputs(
            card,
            text="I was charged twice",
            session_id=None,
            metadata={"account_id": "ACC-2002"},
            bound={},
        )


def test_tokens_carry_bound_attributes_and_a_stable_id(tmp_path: Path) -> None:
    with Store.open(tmp_path, token_recheck_s=0.0) as store:
        _, token = store.transact_sync(
            lambda c: store_tokens.create(c, "kiosk", "client", bound={"account_id": "ACC-1001"})
        )
        info = store.authenticate(token)
        assert info is not None and info.bound == {"account_id": "ACC-1001"} and info.id
        store.revoke_token_sync("kiosk")
        _, again = store.create_token_sync("client", "kiosk")  # a reused name is a new owner
        second = store.authenticate(again)
        assert second is not None and second.id != info.id and second.bound == {}
        for pairs in (["account_id"], ["Bad=1"], ["k=" + "x" * 300], ["k=\u0000"]):
            with pytest.raises(DataError):
                store_tokens.parse_bindings(pairs)
