"""The branch expression language and the template substitution: safe by construction."""

from __future__ import annotations

import pytest

from aivos.edge.workflows.expr import ExprSyntaxError, parse_expr
from aivos.edge.workflows.template import Template, TemplateSyntaxError, render_value
from aivos.shared.errors import StepFailed

CTX = {
    "inputs": {"text": "hello", "amount": 120, "tags": ["vip", "new"]},
    "steps": {"billing": {"body": {"amount": 250.0, "dup": True, "items": [{"id": "X1"}]}}},
    "run": {"id": "R1"},
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("steps.billing.body.amount > 100", True),
        ("steps.billing.body.amount > 100 and not steps.billing.body.dup", False),
        ("steps.billing.body.amount <= 250 or false", True),
        ("inputs.amount == 120", True),
        ("inputs.amount == 120.0", True),
        ("inputs.amount == '120'", False),
        ("'vip' in inputs.tags", True),
        ("'ell' in inputs.text", True),
        ('steps.billing.body.items.0.id == "X1"', True),
        ("steps.missing.value == null", True),
        ("steps.missing.value > 3", False),
        ("inputs.text > 3", False),
        ("not (inputs.amount < 100 or inputs.text != 'hello')", True),
        ("steps.billing.body.dup", True),
    ],
)
def test_expressions_evaluate(expr: str, expected: bool) -> None:
    assert parse_expr(expr).evaluate(CTX) is expected


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('id')",
        "inputs.text.upper()",
        "inputs['text']",
        "inputs.amount + 1 > 2",
        "steps.billing.body.amount >",
        "(inputs.amount > 1",
        "lambda: 1",
        "inputs.amount > 1; x",
        "",
    ],
)
def test_non_language_is_rejected(expr: str) -> None:
    with pytest.raises(ExprSyntaxError):
        parse_expr(expr)


def test_expression_lists_its_references() -> None:
    assert parse_expr("steps.a.b > 1 and inputs.c").refs == (("steps", "a", "b"), ("inputs", "c"))


def test_template_substitutes_dotted_references() -> None:
    t = Template("Run {run.id}: {steps.billing.body.amount} for {inputs.tags} {{literal}}")
    assert t.render(CTX) == 'Run R1: 250.0 for ["vip","new"] {literal}'
    assert Template("{steps.nope.x}").render(CTX) == ""
    with pytest.raises(StepFailed):
        Template("{steps.nope.x}").render(CTX, strict=True)


@pytest.mark.parametrize(
    "text",
    ["{0.__class__}", "{inputs.text!r}", "{inputs[0]}", "{inputs.text:>10}", "{", "a } b", "{ }"],
)
def test_template_rejects_format_string_features(text: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        Template(text)


def test_dunder_names_only_look_up_dict_keys() -> None:
    assert Template("{inputs.__class__}").render(CTX) == ""


def test_render_value_keeps_types_of_single_references() -> None:
    body = {"amount": "{steps.billing.body.amount}", "note": "id {run.id}", "n": 3}
    assert render_value(body, CTX, strict=True) == {"amount": 250.0, "note": "id R1", "n": 3}
