"""The branch condition language: a hand-written tokenizer and recursive-descent parser.

Never Python `eval`. The grammar is deliberately tiny::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in") operand)?
    operand := NUMBER | STRING | "true" | "false" | "null" | REF | "(" expr ")"
    REF     := NAME ("." (NAME | DIGITS))*          e.g. steps.billing.body.amount

References resolve against the run context (`inputs`, `steps`, `run`); a missing path is
`null`. Ordering comparisons between values of different types are false, never errors;
`in` tests membership in a list or a substring in a string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aivos.shared.errors import DataError

__all__ = ["Expr", "parse_expr", "resolve_ref", "ExprSyntaxError"]


class ExprSyntaxError(DataError):
    code = "invalid_expression"


_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<num>-?\d+(?:\.\d+)?)
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|<=|>=|<|>|\(|\))
      | (?P<ref>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_CMP = {"==", "!=", "<", "<=", ">", ">=", "in"}
_MAX_LEN = 2000
_MAX_DEPTH = 32


@dataclass(frozen=True)
class _Tok:
    kind: str  # num, str, op, ref, kw, end
    value: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    if len(text) > _MAX_LEN:
        raise ExprSyntaxError("expression", f"longer than {_MAX_LEN} characters")
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise ExprSyntaxError(
                "expression", f"unexpected character at {pos}: {text[pos : pos + 10]!r}"
            )
        kind = m.lastgroup or ""
        value = m.group(kind)
        start = m.start(kind)
        if kind == "ref" and value in _KEYWORDS:
            kind = "kw"
        toks.append(_Tok(kind, value, start))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


# AST nodes are tuples: ("lit", v) ("ref", path) ("not", x) ("and", a, b) ("or", a, b)
# ("cmp", op, a, b)
_Node = tuple[Any, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, message: str) -> ExprSyntaxError:
        tok = self.peek()
        where = f"at {tok.pos}" if tok.kind != "end" else "at the end"
        return ExprSyntaxError("expression", f"{message} {where} in {self.text!r}")

    def parse(self) -> _Node:
        node = self.or_()
        if self.peek().kind != "end":
            raise self.fail(f"unexpected {self.peek().value!r}")
        return node

    def or_(self) -> _Node:
        node = self.and_()
        while self.peek().kind == "kw" and self.peek().value == "or":
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> _Node:
        node = self.not_()
        while self.peek().kind == "kw" and self.peek().value == "and":
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self) -> _Node:
        if self.peek().kind == "kw" and self.peek().value == "not":
            self.take()
            self._enter()
            node = ("not", self.not_())
            self.depth -= 1
            return node
        return self.cmp()

    def cmp(self) -> _Node:
        left = self.operand()
        tok = self.peek()
        if (tok.kind == "op" and tok.value in _CMP) or (tok.kind == "kw" and tok.value == "in"):
            self.take()
            return ("cmp", tok.value, left, self.operand())
        return left

    def operand(self) -> _Node:
        tok = self.take()
        if tok.kind == "num":
            return ("lit", float(tok.value) if "." in tok.value else int(tok.value))
        if tok.kind == "str":
            return ("lit", _unquote(tok.value))
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            return ("lit", {"true": True, "false": False, "null": None}[tok.value])
        if tok.kind == "ref":
            return ("ref", tuple(tok.value.split(".")))
        if tok.kind == "op" and tok.value == "(":
            self._enter()
            node = self.or_()
            self.depth -= 1
            if self.take().value != ")":
                self.i -= 1
                raise self.fail("expected ')'")
            return node
        self.i -= 1
        raise self.fail("expected a value or reference")

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail("expression nested too deeply")


def resolve_ref(context: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) for a dotted path; dict keys by name, list items by index."""
    node: Any = context
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return bool(a == b) and (type(a) is type(b) or (_num(a) and _num(b)))
    if op == "!=":
        return not _compare("==", a, b)
    if op == "in":
        if isinstance(b, list):
            return any(_compare("==", a, item) for item in b)
        if isinstance(b, str) and isinstance(a, str):
            return a in b
        return False
    comparable = (_num(a) and _num(b)) or (isinstance(a, str) and isinstance(b, str))
    if not comparable:
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", [], {})


class Expr:
    """A parsed condition; `refs` lists the dotted references it reads."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._ast = _Parser(text).parse()
        refs: list[tuple[str, ...]] = []
        self._refs = refs
        self._collect(self._ast)

    def _collect(self, node: _Node) -> None:
        if node[0] == "ref":
            self._refs.append(node[1])
        elif node[0] in ("and", "or"):
            self._collect(node[1])
            self._collect(node[2])
        elif node[0] == "not":
            self._collect(node[1])
        elif node[0] == "cmp":
            self._collect(node[2])
            self._collect(node[3])

    @property
    def refs(self) -> tuple[tuple[str, ...], ...]:
        return tuple(self._refs)

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        return _truthy(self._eval(self._ast, context))

    def _eval(self, node: _Node, ctx: Mapping[str, Any]) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "ref":
            return resolve_ref(ctx, node[1])[1]
        if kind == "not":
            return not _truthy(self._eval(node[1], ctx))
        if kind == "and":
            return _truthy(self._eval(node[1], ctx)) and _truthy(self._eval(node[2], ctx))
        if kind == "or":
            return _truthy(self._eval(node[1], ctx)) or _truthy(self._eval(node[2], ctx))
        return _compare(node[1], self._eval(node[2], ctx), self._eval(node[3], ctx))


_CACHE: dict[str, Expr] = {}


def parse_expr(text: str) -> Expr:
    """Parse (cached by text: an Expr is immutable once built)."""
    expr = _CACHE.get(text)
    if expr is None:
        expr = Expr(text)
        if len(_CACHE) < 10_000:
            _CACHE[text] = expr
    return expr
