"""`/schema`: the OpenAPI document as one self-contained HTML page, rendered on the server.

Litestar's default viewers load their JavaScript and CSS from a CDN, which a branch box
without internet cannot reach (a blank page). This page has no scripts, no external assets
and no fonts: every operation with its parameters, body and responses, then every schema
with its fields. The machine-readable document stays at ``/schema/openapi.json``.
"""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin

__all__ = ["OfflineSchemaPage"]

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_STYLE = """<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; }
code, .type { font-family: ui-monospace, monospace; font-size: 0.92em; }
section { border-top: 1px solid #ddd; padding: 0.4rem 0; }
.method { display: inline-block; min-width: 4.5em; font-weight: 700; }
table { border-collapse: collapse; margin: 0.3rem 0; }
td, th { text-align: left; padding: 0.15rem 0.8rem 0.15rem 0; vertical-align: top; }
.req { color: #a33; }
</style>"""


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: Any) -> str:
    """A short HTML rendering of a schema's type: `string`, `array of Passage`, a link."""
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema:
        name = escape(_ref_name(str(schema["$ref"])))
        return f'<a href="#schema-{name}">{name}</a>'
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " | ".join(_type(s) for s in schema[key])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " | ".join(escape(str(k)) for k in kind)
    if kind == "array":
        return f"array of {_type(schema.get('items'))}"
    if "enum" in schema:
        return " | ".join(escape(repr(v)) for v in schema["enum"])
    if "const" in schema:
        return escape(repr(schema["const"]))
    return escape(str(kind))


def _body_schema(content: Any) -> str:
    if not isinstance(content, dict) or not content:
        return ""
    media, spec = next(iter(content.items()))
    return f"{_type(spec.get('schema', {}))} <span class=type>({escape(str(media))})</span>"


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    out = [
        f'<section id="op-{escape(method)}-{escape(path)}"><h3><span class=method>'
        f"{method.upper()}</span> <code>{escape(path)}</code></h3>"
    ]
    for key in ("summary", "description"):
        if op.get(key):
            out.append(f"<p>{escape(str(op[key]))}</p>")
    params = op.get("parameters") or []
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th></tr>")
        for p in params:
            req = " <span class=req>required</span>" if p.get("required") else ""
            out.append(
                f"<tr><td><code>{escape(str(p.get('name')))}</code>{req}</td>"
                f"<td>{escape(str(p.get('in')))}</td><td>{_type(p.get('schema'))}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody")
    if isinstance(body, dict):
        out.append(f"<p>body: {_body_schema(body.get('content'))}</p>")
    responses = op.get("responses") or {}
    if responses:
        out.append("<table><tr><th>response</th><th>description</th><th>body</th></tr>")
        for code, resp in responses.items():
            resp = resp if isinstance(resp, dict) else {}
            out.append(
                f"<tr><td>{escape(str(code))}</td>"
                f"<td>{escape(str(resp.get('description', '')))}</td>"
                f"<td>{_body_schema(resp.get('content'))}</td></tr>"
            )
        out.append("</table>")
    out.append("</section>")
    return "".join(out)


def _schema(name: str, schema: dict[str, Any]) -> str:
    out = [f'<section id="schema-{escape(name)}"><h3><code>{escape(name)}</code></h3>']
    required = set(schema.get("required") or ())
    props = schema.get("properties") or {}
    if props:
        out.append("<table><tr><th>field</th><th>type</th></tr>")
        for field, spec in props.items():
            req = " <span class=req>required</span>" if field in required else ""
            out.append(f"<tr><td><code>{escape(field)}</code>{req}</td><td>{_type(spec)}</td></tr>")
        out.append("</table>")
    else:
        out.append(f"<p>{_type(schema)}</p>")
    out.append("</section>")
    return "".join(out)


def render_page(openapi: dict[str, Any], json_url: str) -> str:
    """The whole page for an OpenAPI document (a dict, as Litestar hands it to plugins)."""
    info = openapi.get("info") or {}
    title = escape(str(info.get("title", "API")))
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>",
        _STYLE,
        f"</head><body><h1>{title} <small>{escape(str(info.get('version', '')))}</small></h1>",
        f'<p>Machine-readable: <a href="{escape(json_url)}">{escape(json_url)}</a></p>',
        "<h2>Operations</h2>",
    ]
    for path, item in (openapi.get("paths") or {}).items():
        for method in _METHODS:
            op = item.get(method) if isinstance(item, dict) else None
            if isinstance(op, dict):
                parts.append(_operation(path, method, op))
    schemas = (openapi.get("components") or {}).get("schemas") or {}
    if schemas:
        parts.append("<h2>Schemas</h2>")
        parts.extend(_schema(name, spec) for name, spec in schemas.items())
    parts.append("</body></html>")
    return "".join(parts)


class OfflineSchemaPage(OpenAPIRenderPlugin):
    """The render plugin for `render_page` (served at the OpenAPI root, ``/schema``)."""

    def __init__(self, *, path: str = "/", **kwargs: Any) -> None:
        super().__init__(path=path, favicon="", **kwargs)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return render_page(openapi_schema, self.get_openapi_json_route(request)).encode()
