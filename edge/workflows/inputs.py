"""A run's inputs when a client request starts it: built-ins first and last, declared inputs
typed and taken from where the workflow says, nothing else.

* `text` and `session_id` are the request's own; client metadata cannot override them.
* An input declared `source = "request"` comes from the request's `metadata.<name>`.
* An input declared `source = "token"` comes from the attribute the site bound to the
  client's token (`aivos tokens create --bind account_id=ACC-1001`); a value for it in the
  metadata is ignored. This is how a connector call is kept to the caller's own data.
* Undeclared metadata keys never reach a run.

A present but malformed value raises `InvalidInput` (400). When a required input has no
value (the token is not bound, the metadata lacks it) the workflow does not apply to this
request: `request_inputs` raises `InputsUnavailable` and the request is answered as if no
workflow were bound to its intent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aivos.edge.workflows.spec import InputSpec, Workflow
from aivos.shared.errors import AivosError, InvalidInput

__all__ = ["InputsUnavailable", "coerce_input", "request_inputs"]

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


class InputsUnavailable(AivosError):
    """A required input of the workflow has no value for this request."""

    code = "inputs_unavailable"

    def __init__(self, workflow: str, name: str, source: str) -> None:
        self.workflow = workflow
        self.name = name
        self.source = source
        super().__init__(f"workflow {workflow!r} needs input {name!r} from the {source}")


def coerce_input(spec: InputSpec, raw: Any, where: str) -> Any:
    """`raw` as the declared type (strings from a token's attributes are converted)."""
    kind = spec.type
    if kind == "string":
        if not isinstance(raw, str):
            raise InvalidInput(where, f"{where}: must be a string")
        if len(raw) > spec.max_length:
            raise InvalidInput(where, f"{where}: longer than {spec.max_length} characters")
        if spec.pattern is not None and re.fullmatch(spec.pattern, raw) is None:
            raise InvalidInput(where, f"{where}: does not have the expected format")
        return raw
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE + _FALSE:
            return raw.lower() in _TRUE
        raise InvalidInput(where, f"{where}: must be a boolean")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise InvalidInput(
            where, f"{where}: must be a {'whole number' if kind == 'integer' else 'number'}"
        )
    try:
        value = int(raw) if kind == "integer" else float(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(where, f"{where}: must be a {kind}") from exc
    if kind == "integer" and isinstance(raw, float) and raw != value:
        raise InvalidInput(where, f"{where}: must be a whole number")
    if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
        raise InvalidInput(where, f"{where}: must be a finite number")
    return value


def request_inputs(
    workflow: Workflow,
    *,
    text: str,
    session_id: str | None,
    metadata: Mapping[str, Any] | None,
    bound: Mapping[str, str],
) -> dict[str, Any]:
    """The inputs of a run of `workflow` started for a client request."""
    metadata = metadata or {}
    inputs: dict[str, Any] = {}
    for name, spec in workflow.inputs.items():
        raw: Any
        if spec.source == "token":
            raw, where = bound.get(name), f"token attribute {name!r}"
        else:
            raw, where = metadata.get(name), f"metadata.{name}"
        if raw is None:
            raw = spec.default
        if raw is None:
            if spec.required:
                raise InputsUnavailable(workflow.name, name, spec.source)
            continue
        inputs[name] = coerce_input(spec, raw, where)
    inputs["text"] = text
    inputs["session_id"] = session_id
    return inputs
