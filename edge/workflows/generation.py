"""The `generate` step's model side: cloud generation over NATS (the escalation path),
and the parsing of structured, allow-listed fields out of model text."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aivos.shared.ids import new_id

__all__ = ["CloudGenerator", "NatsGenerator", "parse_fields"]

_LINE_RE = re.compile(r"^\s*[\"']?([A-Za-z0-9_-]+)[\"']?\s*[:=]\s*(.+?)\s*,?\s*$")
_JSON_RE = re.compile(r"\{[^{}]*\}", re.S)


class CloudGenerator(Protocol):
    """Generates text for an (already masked) prompt; raises an AivosError on failure."""

    async def __call__(
        self, prompt: str, *, system: str | None, max_tokens: int, timeout_s: float, trace_id: str
    ) -> str: ...


class NatsGenerator:
    """The built-in CloudGenerator: `edge.uplink.generation.generate` on the site's link."""

    def __init__(self, nc_provider: Callable[[], Any] | None, site: str) -> None:
        self._nc_provider = nc_provider
        self._site = site

    async def __call__(
        self, prompt: str, *, system: str | None, max_tokens: int, timeout_s: float, trace_id: str
    ) -> str:
        from aivos.edge.uplink.generation import generate
        from aivos.shared.errors import LinkDown
        from aivos.shared.messages import GenerateRequest

        nc = self._nc_provider() if self._nc_provider is not None else None
        if nc is None:
            raise LinkDown(self._site, "no uplink connection")
        request = GenerateRequest(
            request_id=new_id(),
            site=self._site,
            prompt=prompt,
            system=system,
            max_tokens=max_tokens,
        )
        done = await generate(nc, request, timeout_s=timeout_s)
        return done.text


def _clean(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    return value.strip().strip("\"'`.").strip()


def parse_fields(text: str, schema: Mapping[str, list[str]]) -> dict[str, str]:
    """Fields named in `schema` whose value (from a JSON object or `name: value` lines in
    `text`) is one of the allowed values (case-insensitive; the allowed spelling is kept).
    A field given twice with different values is ambiguous and left out."""
    if not schema:
        return {}
    seen: dict[str, set[str]] = {}

    def offer(name: str, raw: Any) -> None:
        value = _clean(raw)
        if name in schema and value is not None:
            seen.setdefault(name, set()).add(value.lower())

    for blob in _JSON_RE.findall(text):
        try:
            obj = json.loads(blob)
        except ValueError:
            continue
        if isinstance(obj, dict):
            for name, raw in obj.items():
                offer(str(name), raw)
    for line in text.splitlines():
        m = _LINE_RE.match(line)
        if m:
            offer(m.group(1), m.group(2))
    out: dict[str, str] = {}
    for name, values in seen.items():
        if len(values) != 1:
            continue
        (value,) = values
        allowed = {a.lower(): a for a in schema[name]}
        if value in allowed:
            out[name] = allowed[value]
    return out
