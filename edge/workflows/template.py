"""Safe `{steps.x.field}` templates: dotted lookups in the run context, nothing else.

No `str.format` (whose `{0.__class__}` attribute access is an exploit), no expressions:
a placeholder is a dotted path of names and list indexes, resolved in dicts and lists
only. `{{` and `}}` are literal braces. Strings render as they are; other values as JSON.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from aivos.edge.workflows.expr import resolve_ref
from aivos.shared.errors import DataError, StepFailed

__all__ = ["Template", "render_value", "value_refs", "TemplateSyntaxError"]


class TemplateSyntaxError(DataError):
    code = "invalid_template"


_PART_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_REF_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*$")
_MAX_RENDER = 64 * 1024


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return msgspec.json.encode(value).decode()


class Template:
    """A parsed template; `refs` lists the dotted references it reads. Parsed templates
    are cached by text (workflow files hold a bounded set), so re-rendering is cheap."""

    _cache: dict[str, Template] = {}

    def __new__(cls, text: str) -> Template:
        cached = cls._cache.get(text)
        if cached is not None:
            return cached
        self = super().__new__(cls)
        self._parse(text)
        if len(cls._cache) < 10_000:
            cls._cache[text] = self
        return self

    def _parse(self, text: str) -> None:
        self.text = text
        self._parts: list[str | tuple[str, ...]] = []
        pos = 0
        for m in _PART_RE.finditer(text):
            if m.start() > pos:
                self._parts.append(text[pos : m.start()])
            token = m.group(0)
            if token == "{{":
                self._parts.append("{")
            elif token == "}}":
                self._parts.append("}")
            elif m.group(1) is None:
                raise TemplateSyntaxError("template", f"unbalanced {token!r} at {m.start()}")
            else:
                ref = m.group(1).strip()
                if not _REF_RE.match(ref):
                    raise TemplateSyntaxError(
                        "template", f"{{{ref}}} is not a dotted reference (e.g. steps.x.field)"
                    )
                self._parts.append(tuple(ref.split(".")))
            pos = m.end()
        if pos < len(text):
            self._parts.append(text[pos:])
        self.refs: tuple[tuple[str, ...], ...] = tuple(
            p for p in self._parts if isinstance(p, tuple)
        )

    @property
    def single_ref(self) -> tuple[str, ...] | None:
        """The reference when the template is exactly one placeholder (keeps the value's type)."""
        return (
            self._parts[0] if len(self._parts) == 1 and isinstance(self._parts[0], tuple) else None
        )  # type: ignore[return-value]

    def render(
        self,
        context: Mapping[str, Any],
        *,
        strict: bool = False,
        escape: Callable[[str], str] | None = None,
    ) -> str:
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            found, value = resolve_ref(context, part)
            if not found and strict:
                raise StepFailed("missing_value", f"{'.'.join(part)} has no value in this run")
            text = _to_text(value)
            out.append(escape(text) if escape else text)
        rendered = "".join(out)
        if len(rendered) > _MAX_RENDER:
            raise StepFailed("too_large", f"rendered template exceeds {_MAX_RENDER} characters")
        return rendered


def render_value(value: Any, context: Mapping[str, Any], *, strict: bool) -> Any:
    """Render every string leaf of a TOML value; a string that is exactly one placeholder
    keeps the referenced value's JSON type (numbers stay numbers)."""
    if isinstance(value, str):
        template = Template(value)
        ref = template.single_ref
        if ref is not None:
            found, resolved = resolve_ref(context, ref)
            if not found and strict:
                raise StepFailed("missing_value", f"{'.'.join(ref)} has no value in this run")
            return resolved
        return template.render(context, strict=strict)
    if isinstance(value, dict):
        return {k: render_value(v, context, strict=strict) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, strict=strict) for v in value]
    return value


def value_refs(value: Any) -> list[tuple[str, ...]]:
    """Every reference in the string leaves of a TOML value."""
    if isinstance(value, str):
        return list(Template(value).refs)
    if isinstance(value, dict):
        return [r for v in value.values() for r in value_refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in value_refs(v)]
    return []
