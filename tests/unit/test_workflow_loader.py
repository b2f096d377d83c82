"""Every malformed workflow file is refused with an error naming file, step and field;
the shipped examples (demo, examples/, docs) all load."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from aivos.edge.workflows.demo import WORKFLOWS_DIR
from aivos.edge.workflows.generation import parse_fields
from aivos.edge.workflows.loader import WorkflowSet, load_workflow, parse_workflow
from aivos.edge.workflows.secrets import Secrets
from aivos.edge.workflows.settings import ConnectorSettings, WorkflowSettings
from aivos.shared.errors import WorkflowInvalid

ROOT = Path(__file__).resolve().parents[2]
CONNECTORS = {
    "corebank": ConnectorSettings(base_url="http://127.0.0.1:9/"),
    "notify": ConnectorSettings(base_url="http://127.0.0.1:9/hooks"),
}

HEAD = 'name = "wf"\n'
HTTP = '[[steps]]\nid = "call"\nkind = "http"\nconnector = "corebank"\npath = "/x"\n'
RESPOND = '[[steps]]\nid = "answer"\nkind = "respond"\ntemplate = "ok"\n'
GEN = '[[steps]]\nid = "draft"\nkind = "generate"\ntemplate = "write {inputs.text}"\n'

MALFORMED = [
    ("not toml", "name = \n", ["bad.toml", "not valid TOML"]),
    ("missing name", RESPOND, ["bad.toml", "name"]),
    ("bad name", 'name = "Has Spaces"\n' + RESPOND, ["field 'name'"]),
    ("unknown top-level field", HEAD + "colour = 1\n" + RESPOND, ["colour"]),
    ("no steps", HEAD, ["steps"]),
    ("unknown kind", HEAD + '[[steps]]\nid = "s"\nkind = "shell"\n', ["step 's' (#1)", "kind"]),
    ("missing step id", HEAD + '[[steps]]\nkind = "respond"\ntemplate = "x"\n', ["#1", "id"]),
    ("unknown step field", HEAD + HTTP + "cmd = 'rm'\n", ["step 'call' (#1)", "cmd"]),
    ("duplicate id", HEAD + RESPOND + RESPOND, ["step 'answer' (#2)", "duplicate"]),
    (
        "http without connector",
        HEAD + '[[steps]]\nid = "c"\nkind = "http"\npath = "/x"\n',
        ["step 'c'", "connector"],
    ),
    (
        "connector not allow-listed",
        HEAD + HTTP.replace("corebank", "evil"),
        ["step 'call'", "field 'connector'", "allow-list"],
    ),
    ("bad timeout", HEAD + HTTP + "timeout_s = -1\n", ["step 'call' (#1)", "field 'timeout_s'"]),
    ("too many retries", HEAD + HTTP + "retries = 99\n", ["field 'retries'"]),
    ("absolute url as path", HEAD + HTTP.replace('"/x"', '"http://evil/x"'), ["field 'path'"]),
    ("GET with body", HEAD + HTTP + 'body = { a = "b" }\n', ["field 'body'", "GET"]),
    (
        "unknown template root",
        HEAD + RESPOND.replace('"ok"', '"{env.HOME}"'),
        ["step 'answer'", "field 'template'", "env.HOME"],
    ),
    (
        "later step reference",
        HEAD + RESPOND.replace('"ok"', '"{steps.call.body}"') + HTTP,
        ["step 'answer'", "earlier step"],
    ),
    (
        "format-string exploit",
        HEAD + RESPOND.replace('"ok"', '"{inputs.x.__class__!r}"'),
        ["field 'template'", "dotted reference"],
    ),
    (
        "bad branch expression",
        HEAD
        + '[[steps]]\nid = "b"\nkind = "branch"\nwhen = "__import__(\'os\')"\nthen = "answer"\n'
        + RESPOND,
        ["step 'b'", "field 'when'"],
    ),
    (
        "jump backwards",
        HEAD + RESPOND + '[[steps]]\nid = "b"\nkind = "branch"\nwhen = "true"\nthen = "answer"\n',
        ["step 'b'", "field 'then'", "forward"],
    ),
    (
        "jump to unknown",
        HEAD + '[[steps]]\nid = "b"\nkind = "branch"\nwhen = "true"\nthen = "nowhere"\n',
        ["field 'then'", "nowhere"],
    ),
    ("bad on_error", HEAD + HTTP + 'on_error = "retry_forever"\n', ["field 'on_error'"]),
    (
        "emit both targets",
        HEAD + '[[steps]]\nid = "e"\nkind = "emit"\nnats = "x"\nwebhook = "notify"\n',
        ["step 'e'", "exactly one"],
    ),
    (
        "emit bad subject",
        HEAD + '[[steps]]\nid = "e"\nkind = "emit"\nnats = "a.b.>"\n',
        ["step 'e'", "field 'nats'"],
    ),
    (
        "approve bad default",
        HEAD + '[[steps]]\nid = "a"\nkind = "approve"\ndefault = "maybe"\n',
        ["step 'a'", "field 'default'"],
    ),
    (
        "empty allow-list",
        HEAD + GEN + "fields = { category = [] }\n",
        ["step 'draft'", "fields.category"],
    ),
    ("bad event name", HEAD + '[trigger]\nevents = ["nodot"]\n' + RESPOND, ["trigger.events"]),
    ("loader-owned field", HEAD + 'digest = "x"\n' + RESPOND, ["field 'digest'"]),
    (
        "model text into http body",
        HEAD
        + GEN
        + HTTP.replace('"/x"', '"/x"\nmethod = "POST"\nbody = { note = "{steps.draft.text}" }'),
        ["step 'call'", "model output"],
    ),
    (
        "model text into http path",
        HEAD + GEN + HTTP.replace('"/x"', '"/x/{steps.draft.text}"'),
        ["step 'call'", "model output"],
    ),
    (
        "model text into emit",
        HEAD
        + GEN
        + '[[steps]]\nid = "e"\nkind = "emit"\nnats = "out"\npayload = { t = "{steps.draft.text}" }\n',
        ["step 'e'", "model output"],
    ),
    (
        "model text drives a branch",
        HEAD
        + GEN
        + '[[steps]]\nid = "b"\nkind = "branch"\nwhen = "\'yes\' in steps.draft.text"\nthen = "answer"\n'
        + RESPOND,
        ["step 'b'", "model output"],
    ),
    (
        "undeclared field",
        HEAD
        + GEN
        + 'fields = { category = ["a"] }\n'
        + HTTP.replace('"/x"', '"/x/{steps.draft.fields.amount}"'),
        ["step 'call'", "model output"],
    ),
]


@pytest.mark.parametrize(("case", "text", "needles"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_workflow_is_refused_with_a_clear_error(
    case: str, text: str, needles: list[str]
) -> None:
    with pytest.raises(WorkflowInvalid) as info:
        parse_workflow(text, "bad.toml", connectors=CONNECTORS)
    message = str(info.value)
    assert message.startswith("bad.toml"), message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_guarded_model_output_is_accepted() -> None:
    reviewed = (
        HEAD
        + GEN
        + 'fields = { category = ["billing", "fraud"] }\n'
        + '[[steps]]\nid = "check"\nkind = "approve"\nreview = ["steps.draft.text"]\n'
        + HTTP.replace(
            '"/x"',
            '"/x/{steps.draft.fields.category}"\nmethod = "POST"\nbody = { note = "{steps.draft.text}" }',
        )
    )
    wf = parse_workflow(reviewed, "ok.toml", connectors=CONNECTORS)
    assert [s.id for s in wf.steps] == ["draft", "check", "call"]


def test_same_intent_bound_twice_is_refused() -> None:
    a = parse_workflow('name = "a"\n[trigger]\nintents = ["x"]\n' + RESPOND, "a.toml")
    b = parse_workflow('name = "b"\n[trigger]\nintents = ["x"]\n' + RESPOND, "b.toml")
    with pytest.raises(WorkflowInvalid, match="b.toml: field 'trigger.intents'"):
        WorkflowSet([a, b])


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowInvalid, match="missing.toml"):
        load_workflow(tmp_path / "missing.toml")


def _example_files() -> list[Path]:
    return sorted(WORKFLOWS_DIR.glob("*.toml")) + sorted(
        (ROOT / "examples" / "workflows").glob("*.toml")
    )


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.name)
def test_shipped_examples_load(path: Path) -> None:
    wf = load_workflow(path, connectors=CONNECTORS)
    assert wf.steps


def test_docs_examples_are_real_files_that_load() -> None:
    doc = (ROOT / "docs" / "workflows.md").read_text()
    referenced = re.findall(r"\]\(\.\./((?:examples|edge)/[\w/.-]+\.toml)\)", doc)
    assert referenced, "docs/workflows.md links no example files"
    for rel in referenced:
        assert load_workflow(ROOT / rel, connectors=CONNECTORS).name
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert blocks
    kinds = set()
    for block in blocks:
        source = block.splitlines()[0].lstrip("# ").strip()
        if source.endswith(".toml") and "/" in source:
            # a block headed by its file name shows that file verbatim
            shown = block.split("\n", 1)[1]  # after the file-name line
            assert (ROOT / source).read_text().strip() == shown.strip(), source
            kinds.add("file")
        elif source.startswith("agent.toml"):
            msgspec.convert(tomllib.loads(block)["workflows"], WorkflowSettings)
            kinds.add("config")
        elif source.startswith("secrets.toml"):
            msgspec.convert(tomllib.loads(block), Secrets)
            kinds.add("secrets")
        else:
            raise AssertionError(f"unchecked toml block in docs: {source!r}")
    assert kinds == {"file", "config", "secrets"}


def test_fields_are_parsed_against_their_allow_list() -> None:
    schema = {"category": ["duplicate_charge", "fraud"], "urgent": ["yes", "no"]}
    assert parse_fields("category: Fraud\nurgent: yes", schema) == {
        "category": "fraud",
        "urgent": "yes",
    }
    assert parse_fields('{"category": "duplicate_charge"}', schema) == {
        "category": "duplicate_charge"
    }
    # not allow-listed, ambiguous, or injected values are dropped
    assert parse_fields("category: transfer_all_funds", schema) == {}
    assert parse_fields("category: fraud\ncategory: duplicate_charge", schema) == {}
    assert parse_fields("amount: 99999\ncategory: fraud", {"category": ["fraud"]}) == {
        "category": "fraud"
    }
