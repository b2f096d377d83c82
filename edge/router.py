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
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from aivos.shared.config import decode_config
from aivos.shared.errors import ConfigError

__all__ = ["Decision", "IntentRule", "RouterPolicy", "Route", "route", "load_router_policy"]

Decision = Literal["local", "escalate", "refuse"]


class IntentRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    decision: Decision | None = None
    threshold: float | None = msgspec.field(default=None)
    template: str | None = None


class RouterPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    default: Decision = "local"
    intents: dict[str, IntentRule] = msgspec.field(default_factory=dict)
    refuse_message: str = (
        "Sorry, this request cannot be handled here. Please ask a member of staff."
    )

    def validate_against(self, labels: list[str]) -> None:
        """Fail loudly when the policy names an intent the bundle does not know."""
        known = set(labels)
        for name, rule in self.intents.items():
            if name not in known:
                raise ConfigError(f"router.intents.{name}", "unknown intent for this model bundle")
            if rule.threshold is not None and not 0.0 <= rule.threshold <= 1.0:
                raise ConfigError(f"router.intents.{name}.threshold", "must be within [0, 1]")


class Route(msgspec.Struct, frozen=True):
    decision: Decision
    reason: str  # "policy", "out_of_scope", "default"
    threshold: float
    template: str | None = None


def route(
    policy: RouterPolicy, intent: str, confidence: float, bundle_threshold: float, oos_label: str
) -> Route:
    rule = policy.intents.get(intent)
    threshold = rule.threshold if rule and rule.threshold is not None else bundle_threshold
    if intent == oos_label or confidence < threshold:
        return Route("escalate", "out_of_scope", threshold)
    if rule and rule.decision:
        return Route(rule.decision, "policy", threshold, rule.template)
    return Route(policy.default, "default", threshold, rule.template if rule else None)


def load_router_policy(path: Path) -> RouterPolicy:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "router policy file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    return decode_config(data, RouterPolicy, str(path))
