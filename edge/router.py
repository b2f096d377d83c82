"""Per-intent routing policy: answer locally, escalate to the cloud, or refuse.

The policy is a small TOML document (a file, or the `[router]` table of the agent config):

    default = "local"                 # decision for in-scope intents not listed
    [intents.report_fraud]
    decision = "escalate"
    [intents.pin_change]
    decision = "refuse"
    [intents.balance]
    threshold = 0.8                   # stricter than the bundle's calibrated threshold
    template = "Your balance question: {passage}"

Below the threshold (the intent's override, else the bundle's) a query is out of
scope and the decision is always `escalate`.

Thresholds are on the scale of the score the bundle serves as the intent's confidence: the
max softmax probability (MSP) for a bundle without out-of-scope statistics, the
`shared/ood.py` score (MSP x sqrt(typicality), never above the MSP) for one with them
(manifest ``ood``). Overrides are never rescaled: `threshold_score` names the score they
were written for ("msp" unless set), and `threshold_scale_warning` says when the bundle
serves another one (an MSP override of 0.8 on an ``ood`` bundle rejects far more than it
did; re-derive it on the served score: docs/models.md "Thresholds and the served score").
The agent logs it when the policy or the bundle changes and `aivos doctor` reports it.

`route` decides on the intent alone; `settle` then checks that a `local` route can actually
be answered on site (answerability, docs/models.md "Routing on answerability"):

* an open-ended request (`is_open_ended`: "write…", "tell me a story…", "compare…",
  "explain…") escalates: a template or a passage cannot write, compare or explain;
* an out-of-scope request that the site's documents answer (a passage at or above the
  knowledge threshold, not open-ended) is answered locally from that passage (reason
  "knowledge") when the policy keeps requests local by default and has no rule
  escalating or refusing the intent the model leaned to: a site's FAQ is what it serves,
  even when no intent of the bundle names it;
* otherwise a local route stays local when there is a template (the rule's, or a built-in
  one for small talk) or a retrieved passage at or above the knowledge threshold;
* else, when the site has a generator it may use (an uplink is configured and the residency
  policy lets prompts leave), the request escalates (link down: the durable job, as for
  out-of-scope requests); a box without one keeps the local "no document" reply.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec
import numpy as np

from aivos.edge.answers import builtin_template
from aivos.shared.config import decode_config
from aivos.shared.errors import ConfigError
from aivos.shared.ood import SCORE as OOD_SCORE

if TYPE_CHECKING:
    from aivos.edge.intent.runtime import IntentModel

__all__ = [
    "Decision",
    "IntentRule",
    "RouterPolicy",
    "Route",
    "route",
    "settle",
    "is_open_ended",
    "knowledge_may_answer",
    "load_router_policy",
    "model_class_for",
    "MSP_SCORE",
    "rederive_threshold",
    "served_score",
    "threshold_scale_warning",
    "warn_threshold_scale",
]

log = logging.getLogger(__name__)

# The name of the max softmax probability as a served score (`shared/ood.py` names the other).
MSP_SCORE = "msp"
SCORES = frozenset({MSP_SCORE, OOD_SCORE})

Decision = Literal["local", "escalate", "refuse"]


class IntentRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    decision: Decision | None = None
    threshold: float | None = msgspec.field(default=None)
    template: str | None = None
    model_class: str | None = None  # cloud model class of this intent's escalations


class RouterPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    default: Decision = "local"
    intents: dict[str, IntentRule] = msgspec.field(default_factory=dict)
    refuse_message: str = (
        "Sorry, this request cannot be handled here. Please ask a member of staff."
    )
    # the edge result cache serves session (personalised) requests too only when this is set
    cache_sessions: bool = False
    # cloud model class (e.g. "small", "large") escalations name unless their intent's rule
    # names one; None: the cloud's default queue group (no model routing)
    model_class: str | None = None
    # the served score the intents' `threshold` overrides were written for: "msp" or the
    # `shared/ood.py` score's name ("msp_x_sqrt_typicality"); never used to rescale them
    threshold_score: str = MSP_SCORE

    def threshold_overrides(self) -> dict[str, float]:
        """The intents whose rule sets its own threshold, with it."""
        return {n: r.threshold for n, r in self.intents.items() if r.threshold is not None}

    def validate_against(self, labels: list[str]) -> None:
        """Fail loudly when the policy names an intent the bundle does not know."""
        known = set(labels)
        if self.threshold_score not in SCORES:
            raise ConfigError(
                "router.threshold_score", f"must be one of {', '.join(sorted(SCORES))}"
            )
        for name, rule in self.intents.items():
            if name not in known:
                raise ConfigError(f"router.intents.{name}", "unknown intent for this model bundle")
            if rule.threshold is not None and not 0.0 <= rule.threshold <= 1.0:
                raise ConfigError(f"router.intents.{name}.threshold", "must be within [0, 1]")


class Route(msgspec.Struct, frozen=True):
    decision: Decision
    reason: (
        str  # "policy", "out_of_scope", "default"; `settle`: "open_ended", "no_answer", "knowledge"
    )
    threshold: float
    template: str | None = None


def route(
    policy: RouterPolicy, intent: str, confidence: float, bundle_threshold: float, oos_label: str
) -> Route:
    rule = policy.intents.get(intent)
    threshold = rule.threshold if rule and rule.threshold is not None else bundle_threshold
    if intent == oos_label or confidence < threshold:
        return Route("escalate", "out_of_scope", threshold)
    template = rule.template if rule and rule.template else builtin_template(intent)
    if rule and rule.decision:
        return Route(rule.decision, "policy", threshold, template)
    return Route(policy.default, "default", threshold, template)


# Open-ended requests: the user asks the box to produce or reason, not to look something up.
# The rules are kinds of request, not sentences: an optional polite lead-in, then a
# production or reasoning verb; "tell me a story/poem…"; a creative form named as the thing
# wanted; or a comparison / opinion phrase anywhere.
_LEAD = (
    r"^\W*(?:(?:hi|hey|hello|ok|okay|so|please|pls|kindly|now)\W+)*"
    r"(?:(?:can|could|would|will)\s+(?:you|u)\s+(?:please\s+)?"
    r"|i(?:\s+(?:want|need|would\s+like|wish)|['’]d\s+like)\s+(?:you\s+)?to\s+"
    r"|(?:help\s+me|let'?s|go\s+ahead\s+and)\s+(?:to\s+)?)?(?:please\s+)?"
)
_VERBS = (
    r"write|rewrite|compose|draft|generate|invent|imagine|pretend|brainstorm|"
    r"summari[sz]e|paraphrase|rephrase|outline|describe|explain|elaborate|discuss|compare|"
    r"contrast|analy[sz]e|evaluate|critique|argue|debate|classify|categori[sz]e|"
    r"think\s+(?:of|up)|come\s+up\s+with|make\s+up|give\s+me\s+(?:\w+\s+){0,3}"
    r"(?:ideas|reasons|examples|ways|tips|suggestions|names|arguments)"
)
_OPEN_ENDED = re.compile(
    rf"{_LEAD}(?:{_VERBS})\b"
    r"|\btell\s+(?:me\s+|us\s+)?(?:a|an|another|some)\s+(?:\w+\s+){0,3}?"
    r"(?:story|stories|tale|fable|poem|riddle|anecdote)\b"
    r"|\b(?:poem|haiku|limerick|sonnet|essay|short\s+story|song\s+lyrics|lyrics|screenplay|"
    r"script|blog\s+post|speech|slogan|cover\s+letter)\b"
    r"|\b(?:differences?\s+between|pros\s+and\s+cons|advantages\s+and\s+disadvantages|"
    r"(?:better|worse)\s+than|in\s+your\s+opinion|what\s+do\s+you\s+think)\b",
    re.IGNORECASE,
)


def is_open_ended(text: str) -> bool:
    """True for requests that ask the box to write, tell a story, compare or explain."""
    return _OPEN_ENDED.search(text) is not None


def knowledge_may_answer(policy: RouterPolicy, intent: str) -> bool:
    """Whether an out-of-scope request leaning to `intent` may be answered from a passage."""
    rule = policy.intents.get(intent)
    return policy.default == "local" and (rule is None or rule.decision in (None, "local"))


def settle(
    decided: Route,
    text: str,
    top_score: float | None,
    *,
    answer_min_score: float,
    generator: bool,
    answer_out_of_scope: bool = False,
) -> Route:
    """The route once answerability is known (see the module docstring). `top_score` is the
    best retrieved passage's score (None: nothing retrieved); `generator` whether the site
    may escalate at all; `answer_out_of_scope` whether an out-of-scope request may be
    answered from a passage (`knowledge_may_answer`). Policy refusals and escalations stand."""
    answerable = top_score is not None and top_score >= answer_min_score
    if decided.reason == "out_of_scope":
        if answer_out_of_scope and answerable and not is_open_ended(text):
            return Route("local", "knowledge", decided.threshold)
        return decided
    if decided.decision != "local":
        return decided
    if is_open_ended(text):
        return Route("escalate", "open_ended", decided.threshold)
    if decided.template is not None or answerable:
        return decided
    if generator:
        return Route("escalate", "no_answer", decided.threshold)
    return decided


def served_score(model: IntentModel) -> str:
    """The score `model` serves as its confidence: its bundle's out-of-scope score when it
    was loaded with it (`IntentModel.load(..., ood=True)`, the agent's way), else "msp"."""
    ood = model.manifest.ood
    return MSP_SCORE if model.ood is None or ood is None else ood.score


def threshold_scale_warning(policy: RouterPolicy, score: str) -> str | None:
    """Why the policy's per-intent thresholds do not mean what they were written to mean on
    a bundle serving `score` ("msp" or the `shared/ood.py` score's name), or None
    when there are no overrides or they were written for that score. The overrides are
    applied as written either way: a silent rescaling would move every decision they make."""
    overrides = policy.threshold_overrides()
    if not overrides or policy.threshold_score == score:
        return None
    shown = ", ".join(f"{name}={value:g}" for name, value in sorted(overrides.items())[:5])
    more = f" and {len(overrides) - 5} more" if len(overrides) > 5 else ""
    effect = (
        "stricter than intended: the served score is never above the MSP"
        if policy.threshold_score == MSP_SCORE
        else "looser than intended: the MSP is never below the out-of-scope score"
    )
    return (
        f"{len(overrides)} per-intent threshold override(s) ({shown}{more}) were written for "
        f"the {policy.threshold_score!r} score, but the bundle serves {score!r}: "
        f"they are {effect}. Re-derive them on the served score (docs/models.md, "
        f"'Thresholds and the served score') and set threshold_score = {score!r}"
    )


def warn_threshold_scale(policy: RouterPolicy, score: str, when: str) -> str | None:
    """Log `threshold_scale_warning` (at WARNING) naming `when` it was found ("policy
    loaded", "bundle swapped"); returns the warning."""
    warning = threshold_scale_warning(policy, score)
    if warning is not None:
        log.warning("router thresholds (%s): %s", when, warning)
    return warning


def rederive_threshold(
    override: float, written_for: Sequence[float], served: Sequence[float]
) -> float:
    """An override re-derived on the served score: the threshold that accepts as many of
    an intent's queries (its validation rows, or logged queries the bundle predicts as it)
    as `override` accepted on the score it was written for. `written_for` and `served` are
    the two scores of the same queries (`Prediction.msp` and `Prediction.confidence`); 1.0
    when the override accepted none of them."""
    old = np.asarray(written_for, dtype=np.float64)
    new = np.sort(np.asarray(served, dtype=np.float64))[::-1]
    if old.shape != new.shape or old.size == 0:
        raise ValueError("both scores of the same, non-empty set of queries are needed")
    n = int((old >= override).sum())
    return 1.0 if n == 0 else float(new[n - 1])


def model_class_for(policy: RouterPolicy, intent: str) -> str | None:
    """The model class an escalation of `intent` names: the intent's, else the policy's."""
    rule = policy.intents.get(intent)
    if rule is not None and rule.model_class is not None:
        return rule.model_class
    return policy.model_class


def load_router_policy(path: Path) -> RouterPolicy:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "router policy file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    return decode_config(data, RouterPolicy, str(path))
