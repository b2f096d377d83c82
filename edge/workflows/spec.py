"""The workflow definition format: msgspec Structs decoded from TOML.

A workflow is a name, a trigger, typed inputs, a deadline, a fallback answer and an ordered
list of steps; each step is a table with `id` and `kind`. Steps run in order; `branch` steps and
`next` / `on_error` / `on_reject` jump forward only (so every run terminates). The
target ``"end"`` finishes the run. See docs/workflows.md for the full reference.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "Trigger",
    "InputSpec",
    "BUILTIN_INPUTS",
    "RetrieveStep",
    "HttpStep",
    "GenerateStep",
    "BranchStep",
    "ApproveStep",
    "EmitStep",
    "RespondStep",
    "Step",
    "Workflow",
    "SIDE_EFFECT_KINDS",
    "END",
    "kind_of",
]

END = "end"
SIDE_EFFECT_KINDS = ("http", "emit")

StepId = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
InputName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
# set by the engine for every run (a request's text and session, a trigger's event name);
# never declared by a workflow and never taken from a client's metadata
BUILTIN_INPUTS = ("text", "session_id", "event")
EventName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{1,64}$")]
SubjectToken = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Seconds = Annotated[float, Meta(gt=0, le=86_400 * 7)]


class Trigger(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    intents: list[Annotated[str, Meta(min_length=1, max_length=128)]] = []
    events: list[EventName] = []  # "<source>.<type>", from POST /v1/events/<source>
    nats: list[SubjectToken] = []  # site-local subjects aivos.evt.<site>.<name>
    # a site's own phrasings of the request: a client request whose sentence embedding is
    # close enough to one of them starts the workflow, whatever the intent (examples.py)
    examples: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=512)]], Meta(max_length=256)
    ] = []
    # the cosine an example match needs; None: calibrated at load against CLINC150 rows
    min_similarity: Annotated[float, Meta(gt=0, le=1)] | None = None


class InputSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One declared input (`[inputs.<name>]`).

    `source` says where a run started for a client request (`POST /v1/infer`) takes it from:
    `"request"`: the request's `metadata.<name>` (the client chooses it); `"token"`: the
    attribute `<name>` the site bound to the client's token (`aivos tokens create --bind`),
    for values that pick whose data a connector touches (an account id). Runs the site
    starts (signed webhooks, NATS triggers, the CLI) take inputs from their payload."""

    type: Literal["string", "integer", "number", "boolean"] = "string"
    source: Literal["request", "token"] = "request"
    required: bool = True
    default: str | int | float | bool | None = None
    pattern: Annotated[str, Meta(max_length=512)] | None = None  # strings, whole value
    max_length: Annotated[int, Meta(ge=1, le=65_536)] = 256  # strings
    description: str = ""


class _Step(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="kind"
):
    id: StepId
    next: str | None = None  # jump after success (default: the following step)
    on_error: str = "fallback"  # "fallback" | "continue" | a later step id


class RetrieveStep(_Step, frozen=True, tag="retrieve"):
    query: str
    k: Annotated[int, Meta(ge=1, le=20)] = 3
    min_score: Annotated[float, Meta(ge=-1, le=1)] = 0.0


class HttpStep(_Step, frozen=True, tag="http"):
    connector: str
    path: Annotated[str, Meta(pattern=r"^/", max_length=2048)]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    query: dict[str, str] = {}
    body: dict[str, Any] | None = None
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 2.0
    retries: Annotated[int, Meta(ge=0, le=10)] = 2
    backoff_s: Annotated[float, Meta(ge=0, le=60)] = 0.2
    backoff_cap_s: Annotated[float, Meta(ge=0, le=300)] = 5.0


class GenerateStep(_Step, frozen=True, tag="generate"):
    template: str  # the text (mode "local") or the prompt (mode "cloud")
    mode: Literal["local", "cloud"] = "local"
    fallback: str = ""  # used when cloud generation fails or the link is down
    system: str | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=4096)] = 128
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 5.0
    # schema of the structured fields parsed from the output: name -> allowed values
    fields: dict[SubjectToken, list[str]] = {}


class BranchStep(_Step, frozen=True, tag="branch"):
    when: str
    then: str  # jump target when true
    otherwise: str | None = None  # jump target when false (default: the following step)


class ApproveStep(_Step, frozen=True, tag="approve"):
    message: str = ""
    review: list[str] = []  # references (e.g. "steps.draft.text") the operator approves
    timeout_s: Seconds = 3600.0
    default: Literal["approve", "reject"] = "reject"
    on_reject: str | None = None  # jump target when rejected (default: end as "rejected")


class EmitStep(_Step, frozen=True, tag="emit"):
    nats: SubjectToken | None = None  # event name -> aivos.evt.<site>.<name>
    webhook: str | None = None  # a connector name
    path: Annotated[str, Meta(pattern=r"^/", max_length=2048)] = "/"
    payload: dict[str, Any] = {}
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 2.0
    retries: Annotated[int, Meta(ge=0, le=10)] = 2
    backoff_s: Annotated[float, Meta(ge=0, le=60)] = 0.2
    backoff_cap_s: Annotated[float, Meta(ge=0, le=300)] = 5.0


class RespondStep(_Step, frozen=True, tag="respond"):
    template: str


Step = RetrieveStep | HttpStep | GenerateStep | BranchStep | ApproveStep | EmitStep | RespondStep


def kind_of(step: Step) -> str:
    """The step's `kind` tag ("http", "approve", ...)."""
    return str(type(step).__struct_config__.tag)


class Workflow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
    steps: Annotated[list[Step], Meta(min_length=1, max_length=200)]
    description: str = ""
    trigger: Trigger = Trigger()
    inputs: dict[InputName, InputSpec] = {}
    deadline_s: Seconds = 10.0
    fallback: str = "We could not complete this request right now. Reference: {run.id}."
    # filled by the loader, not by the file
    source: str = ""
    digest: str = ""

    def index_of(self, step_id: str) -> int:
        for i, step in enumerate(self.steps):
            if step.id == step_id:
                return i
        raise KeyError(step_id)

    def step(self, step_id: str) -> Step:
        return self.steps[self.index_of(step_id)]

    def following(self, step_id: str) -> str | None:
        i = self.index_of(step_id)
        return self.steps[i + 1].id if i + 1 < len(self.steps) else None
