"""Loading workflow files: TOML → `Workflow`, then semantic checks.

Every error is a `WorkflowInvalid` whose source names the file, the step and the field,
e.g. ``support.toml: step 'open_dispute' (#7): field 'connector'``.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from aivos.edge.workflows.expr import ExprSyntaxError, parse_expr
from aivos.edge.workflows.inputs import coerce_input
from aivos.edge.workflows.safety import taint_violations
from aivos.edge.workflows.settings import ConnectorSettings
from aivos.edge.workflows.spec import (
    BUILTIN_INPUTS,
    END,
    ApproveStep,
    BranchStep,
    EmitStep,
    GenerateStep,
    HttpStep,
    RespondStep,
    RetrieveStep,
    Step,
    Workflow,
)
from aivos.edge.workflows.template import Template, TemplateSyntaxError, value_refs
from aivos.shared.errors import InvalidInput, WorkflowInvalid

__all__ = ["load_workflow", "load_workflows", "parse_workflow", "WorkflowSet"]

_PATH_RE = re.compile(r"^\$\.steps\[(\d+)\](?:\.(\w+))?(.*)$")
_ROOTS = ("inputs", "steps", "run")


def _where(source: str, raw: Mapping[str, Any], path: str) -> str:
    """Translate a msgspec error path (`$.steps[2].timeout_s`) into file/step/field words."""
    if path.startswith("key` in `"):  # a table key that does not fit, e.g. `[inputs.Bad]`
        return f"{source}: a key of field '{path[len('key` in `$.') :]}'"
    m = _PATH_RE.match(path)
    if m:
        index = int(m.group(1))
        steps = raw.get("steps")
        step_id = "?"
        if isinstance(steps, list) and index < len(steps) and isinstance(steps[index], dict):
            step_id = str(steps[index].get("id", "?"))
        where = f"{source}: step '{step_id}' (#{index + 1})"
        if m.group(2):
            where += f": field '{m.group(2)}{m.group(3)}'"
        return where
    if path.startswith("$."):
        return f"{source}: field '{path[2:]}'"
    return source


def _step_where(source: str, index: int, step: Step, field: str | None = None) -> str:
    where = f"{source}: step '{step.id}' (#{index + 1})"
    return f"{where}: field '{field}'" if field else where


def parse_workflow(
    text: str,
    source: str,
    *,
    connectors: Mapping[str, ConnectorSettings] | None = None,
) -> Workflow:
    """Decode and check one workflow. `connectors` = the site's allow-list; when None the
    connector names are not checked (e.g. `aivos workflows validate` without a config)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkflowInvalid(source, f"not valid TOML: {exc}") from exc
    for reserved in ("source", "digest"):
        if reserved in raw:
            raise WorkflowInvalid(f"{source}: field '{reserved}'", "is set by the loader")
    try:
        workflow = msgspec.convert(raw, Workflow)
    except msgspec.ValidationError as exc:
        message = str(exc)
        path = ""
        if " - at `" in message:
            message, _, tail = message.partition(" - at `")
            path = tail.rstrip("`")
        raise WorkflowInvalid(_where(source, raw, path), message) from exc
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    workflow = msgspec.structs.replace(workflow, source=source, digest=digest)
    _check(workflow, source, connectors)
    return workflow


def load_workflow(
    path: str | Path, *, connectors: Mapping[str, ConnectorSettings] | None = None
) -> Workflow:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowInvalid(str(path), f"cannot read: {exc}") from exc
    return parse_workflow(text, path.name, connectors=connectors)


def _check_template(
    where: str, text: str, known: set[str], inputs: set[str] | None = None
) -> Template:
    try:
        template = Template(text)
    except TemplateSyntaxError as exc:
        raise WorkflowInvalid(where, str(exc).partition(": ")[2]) from exc
    _check_refs(where, template.refs, known, inputs)
    return template


def _check_refs(
    where: str,
    refs: Iterable[tuple[str, ...]],
    known: set[str],
    inputs: set[str] | None = None,
) -> None:
    """`inputs`: the names a workflow that declares its inputs may read (None: not checked)."""
    for ref in refs:
        dotted = ".".join(ref)
        if ref[0] not in _ROOTS:
            raise WorkflowInvalid(where, f"{{{dotted}}}: references start with {_ROOTS}")
        if ref[0] == "steps" and (len(ref) < 2 or ref[1] not in known):
            raise WorkflowInvalid(
                where, f"{{{dotted}}} does not name an earlier step (earlier: {sorted(known)})"
            )
        if ref[0] == "inputs" and inputs is not None and (len(ref) < 2 or ref[1] not in inputs):
            raise WorkflowInvalid(
                where, f"{{{dotted}}} is not a declared input (declared: {sorted(inputs)})"
            )


def _check_inputs(workflow: Workflow, source: str) -> set[str] | None:
    """Check the `[inputs]` table; returns the names templates may read (None when the
    workflow declares no inputs: its references are not checked)."""
    for name, spec in workflow.inputs.items():
        where = f"{source}: field 'inputs.{name}'"
        if name in BUILTIN_INPUTS:
            raise WorkflowInvalid(where, f"{name!r} is built in (set by the engine)")
        if spec.pattern is not None:
            if spec.type != "string":
                raise WorkflowInvalid(where, "only a string input has a pattern")
            try:
                re.compile(spec.pattern)
            except re.error as exc:
                raise WorkflowInvalid(where, f"pattern: {exc}") from exc
        if spec.default is not None:
            try:
                coerce_input(spec, spec.default, f"inputs.{name}.default")
            except InvalidInput as exc:
                raise WorkflowInvalid(where, f"default: {exc}") from exc
    if not workflow.inputs:
        return None
    return {*workflow.inputs, *BUILTIN_INPUTS}


def _check_target(where: str, target: str | None, workflow: Workflow, index: int) -> None:
    if target is None or target == END:
        return
    ids = [s.id for s in workflow.steps]
    if target not in ids:
        raise WorkflowInvalid(where, f"unknown step {target!r}")
    if ids.index(target) <= index:
        raise WorkflowInvalid(where, f"jumps back to {target!r}; jumps must go forward")


def _check(
    workflow: Workflow, source: str, connectors: Mapping[str, ConnectorSettings] | None
) -> None:
    names = _check_inputs(workflow, source)
    if workflow.trigger.min_similarity is not None and not workflow.trigger.examples:
        raise WorkflowInvalid(
            f"{source}: field 'trigger.min_similarity'", "applies only with trigger.examples"
        )
    _check_template(f"{source}: field 'fallback'", workflow.fallback, set(), names)
    seen: set[str] = set()
    for index, step in enumerate(workflow.steps):

        def at(field: str | None = None, _i: int = index, _s: Step = step) -> str:
            return _step_where(source, _i, _s, field)

        if step.id in seen:
            raise WorkflowInvalid(at("id"), f"duplicate step id {step.id!r}")
        if step.id == END:
            raise WorkflowInvalid(at("id"), f"{END!r} is reserved")
        _check_target(at("next"), step.next, workflow, index)
        if step.on_error not in ("fallback", "continue"):
            _check_target(at("on_error"), step.on_error, workflow, index)
        if isinstance(step, RetrieveStep):
            _check_template(at("query"), step.query, seen, names)
        elif isinstance(step, HttpStep):
            _check_connector(at("connector"), step.connector, connectors)
            _check_template(at("path"), step.path, seen, names)
            for key, value in step.query.items():
                _check_template(at(f"query.{key}"), value, seen, names)
            if step.body is not None:
                _check_value(at("body"), step.body, seen, names)
            if step.method == "GET" and step.body is not None:
                raise WorkflowInvalid(at("body"), "a GET request has no body")
        elif isinstance(step, GenerateStep):
            _check_template(at("template"), step.template, seen, names)
            _check_template(at("fallback"), step.fallback, seen, names)
            if step.system is not None:
                _check_template(at("system"), step.system, seen, names)
            for name, allowed in step.fields.items():
                if not allowed:
                    raise WorkflowInvalid(at(f"fields.{name}"), "needs at least one allowed value")
        elif isinstance(step, BranchStep):
            try:
                expr = parse_expr(step.when)
            except ExprSyntaxError as exc:
                raise WorkflowInvalid(at("when"), str(exc).partition(": ")[2]) from exc
            _check_refs(at("when"), expr.refs, seen, names)
            _check_target(at("then"), step.then, workflow, index)
            _check_target(at("otherwise"), step.otherwise, workflow, index)
        elif isinstance(step, ApproveStep):
            _check_template(at("message"), step.message, seen, names)
            for ref in step.review:
                _check_template(at("review"), "{" + ref + "}", seen, names)
            _check_target(at("on_reject"), step.on_reject, workflow, index)
        elif isinstance(step, EmitStep):
            if (step.nats is None) == (step.webhook is None):
                raise WorkflowInvalid(at("nats"), "set exactly one of `nats` and `webhook`")
            if step.webhook is not None:
                _check_connector(at("webhook"), step.webhook, connectors)
            elif step.path != "/":
                raise WorkflowInvalid(at("path"), "only a webhook emit has a path")
            _check_template(at("path"), step.path, seen, names)
            _check_value(at("payload"), step.payload, seen, names)
        elif isinstance(step, RespondStep):
            _check_template(at("template"), step.template, seen, names)
        seen.add(step.id)
    for step_id, message in taint_violations(workflow):
        index = workflow.index_of(step_id)
        raise WorkflowInvalid(_step_where(source, index, workflow.steps[index]), message)


def _check_value(where: str, value: Any, known: set[str], inputs: set[str] | None = None) -> None:
    try:
        refs = value_refs(value)
    except TemplateSyntaxError as exc:
        raise WorkflowInvalid(where, str(exc).partition(": ")[2]) from exc
    _check_refs(where, refs, known, inputs)


def _check_connector(
    where: str, name: str, connectors: Mapping[str, ConnectorSettings] | None
) -> None:
    if connectors is not None and name not in connectors:
        raise WorkflowInvalid(
            where, f"connector {name!r} is not on this site's allow-list ({sorted(connectors)})"
        )


class WorkflowSet:
    """The loaded workflows, indexed by name, intent, event and NATS subject name."""

    def __init__(self, workflows: Iterable[Workflow]) -> None:
        self.by_name: dict[str, Workflow] = {}
        self.by_intent: dict[str, Workflow] = {}
        self.by_event: dict[str, list[Workflow]] = {}
        self.by_nats: dict[str, list[Workflow]] = {}
        for wf in workflows:
            if wf.name in self.by_name:
                raise WorkflowInvalid(
                    f"{wf.source}: field 'name'",
                    f"workflow {wf.name!r} is also defined in {self.by_name[wf.name].source}",
                )
            self.by_name[wf.name] = wf
            for intent in wf.trigger.intents:
                if intent in self.by_intent:
                    raise WorkflowInvalid(
                        f"{wf.source}: field 'trigger.intents'",
                        f"intent {intent!r} is already bound to {self.by_intent[intent].name!r}",
                    )
                self.by_intent[intent] = wf
            for event in wf.trigger.events:
                self.by_event.setdefault(event, []).append(wf)
            for name in wf.trigger.nats:
                self.by_nats.setdefault(name, []).append(wf)

    def __len__(self) -> int:
        return len(self.by_name)


def load_workflows(
    paths: Iterable[str | Path], *, connectors: Mapping[str, ConnectorSettings] | None = None
) -> WorkflowSet:
    return WorkflowSet(load_workflow(p, connectors=connectors) for p in paths)
