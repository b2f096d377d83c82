"""The residency policy: per data class `allow` / `mask` / `local-only`, and allowed regions.

Decoded from the `[residency]` TOML section:

    [residency]
    region = "eu-west"                    # the region this site's cloud sits in
    allowed_regions = ["eu-west", "eu-central"]

    [residency.classes]
    escalation_prompt = "mask"
    audit = "mask"
    memory = "local-only"
    telemetry = "allow"

    locales = ["GB", "IE"]                # optional; default follows `region`; ["*"] = all

    [[residency.custom]]                  # run on RE2 (linear time); lookaround is rejected
    name = "EMPLOYEE_ID"
    pattern = "EMP-[0-9]{6}"

Deny by default: a data class without a rule is `local-only`, and an empty
`allowed_regions` means only `region` itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec
import re2  # type: ignore[import-untyped]

from aivos.shared.errors import ConfigError
from aivos.shared.residency.locales import locales_for
from aivos.shared.residency.recognizers import Recognizer, RegexRecognizer


def _compile_safe(pattern: str, ignore_case: bool) -> Any:
    """Compile an operator pattern with RE2 (guaranteed linear time); re2.error if unsupported."""
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.never_capture = False
    return re2.compile(pattern, options)


__all__ = [
    "DataClass",
    "Rule",
    "RULES",
    "CustomRecognizer",
    "ResidencyPolicy",
    "DEFAULT_EXEMPT_KEYS",
    "recommended_policy",
]

Rule = Literal["allow", "mask", "local-only"]
RULES: Final = ("allow", "mask", "local-only")


class DataClass:
    """Names of the data classes that may leave the site."""

    ESCALATION_PROMPT: Final = "escalation_prompt"
    AUDIT: Final = "audit"
    MEMORY: Final = "memory"
    TELEMETRY: Final = "telemetry"
    WORKFLOW_EVENT: Final = "workflow_event"
    # low-confidence / out-of-scope / escalated queries kept for review (edge/candidates.py)
    HARD_EXAMPLE: Final = "hard_example"
    ALL: Final = (ESCALATION_PROMPT, AUDIT, MEMORY, TELEMETRY, WORKFLOW_EVENT, HARD_EXAMPLE)


# Keys whose string values are identifiers/hashes, never PII: the gate does not mask them.
DEFAULT_EXEMPT_KEYS: Final = (
    "id",
    "site",
    "site_id",
    "request_id",
    "job_id",
    "trace_id",
    "span_id",
    "hash",
    "prev_hash",
    "model_version",
    "kind",
    "intent",
)

_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z][A-Z0-9]*)*$")


class CustomRecognizer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[[residency.custom]]`: `name` is the placeholder type (`EMPLOYEE_ID` -> `<EMPLOYEE_ID_1>`)."""

    name: str
    pattern: str
    ignore_case: bool = False

    def build(self) -> Recognizer:
        """A recognizer running the pattern on RE2 (linear time: no catastrophic backtracking)."""
        return RegexRecognizer(self.name, _compile_safe(self.pattern, self.ignore_case))


class ResidencyPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    region: str = "default"
    allowed_regions: tuple[str, ...] = ()
    classes: dict[str, str] = {}
    custom: tuple[CustomRecognizer, ...] = ()
    exempt_keys: tuple[str, ...] = DEFAULT_EXEMPT_KEYS
    # ISO country codes whose national ids and phone formats are looked for; empty = the
    # pack the site's `region` implies, ["*"] = every country known (see residency.locales)
    locales: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key, rule in self.classes.items():
            if key not in DataClass.ALL:
                raise ConfigError(
                    f"residency.classes.{key}",
                    f"unknown data class (known: {', '.join(DataClass.ALL)})",
                )
            if rule not in RULES:
                raise ConfigError(
                    f"residency.classes.{key}",
                    f"unknown rule {rule!r} (one of: {', '.join(RULES)})",
                )
        seen: set[str] = set()
        for i, c in enumerate(self.custom):
            where = f"residency.custom[{i}]"
            if not _NAME.match(c.name):
                raise ConfigError(f"{where}.name", "must be UPPER_SNAKE_CASE, e.g. EMPLOYEE_ID")
            if c.name in seen:
                raise ConfigError(f"{where}.name", f"duplicate recognizer {c.name}")
            seen.add(c.name)
            try:
                re.compile(c.pattern)
            except re.error as exc:
                raise ConfigError(f"{where}.pattern", f"invalid regex: {exc}") from exc
            try:
                _compile_safe(c.pattern, c.ignore_case)
            except re2.error as exc:
                raise ConfigError(
                    f"{where}.pattern",
                    "not supported by the linear-time engine (RE2: no backreferences or "
                    f"lookaround): {exc}",
                ) from exc
        for i, loc in enumerate(self.locales):
            if not re.fullmatch(r"[A-Za-z]{2}|\*|(?i:all)", loc):
                raise ConfigError(
                    f"residency.locales[{i}]",
                    'must be an ISO 3166 country code, or "*" for every known country',
                )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "residency") -> ResidencyPolicy:
        """Decode the `[residency]` table; errors are ConfigError naming the key path."""
        try:
            return msgspec.convert(data, cls, strict=False)
        except ConfigError:
            raise
        except msgspec.ValidationError as exc:
            raise ConfigError(_key_path(source, str(exc)), str(exc)) from exc

    def rule(self, data_class: str) -> Rule:
        """The rule of `data_class`; `local-only` when none is configured (deny by default)."""
        rule = self.classes.get(data_class, "local-only")
        return rule  # type: ignore[return-value]  # validated in __post_init__

    def region_allowed(self, region: str) -> bool:
        return region in (self.allowed_regions or (self.region,))

    def recognizers(self) -> list[Recognizer]:
        return [c.build() for c in self.custom]

    def locale_pack(self) -> tuple[str, ...]:
        """The country codes the built-in recognizers look for at this site."""
        return locales_for(self.region, self.locales)


def _key_path(source: str, message: str) -> str:
    # msgspec reports "... - at `$.classes.audit`"; turn it into "residency.classes.audit"
    m = re.search(r"at `\$([^`]*)`", message)
    path = source + (m.group(1) if m else "")
    unknown = re.search(r"unknown field `([^`]*)`", message)
    return f"{path}.{unknown.group(1)}" if unknown else path


def recommended_policy(region: str = "default") -> ResidencyPolicy:
    """A sensible starting policy (what `aivos up` can write): prompts, audit and workflow
    events leave masked, memory stays on site, telemetry (counts, no text) leaves as is.
    Hard examples (queries kept for retraining) have no rule, so they stay on site until an
    operator opts in with ``hard_example = "mask"``: a new use of the site's text."""
    return ResidencyPolicy(
        region=region,
        classes={
            DataClass.ESCALATION_PROMPT: "mask",
            DataClass.AUDIT: "mask",
            DataClass.WORKFLOW_EVENT: "mask",
            DataClass.MEMORY: "local-only",
            DataClass.TELEMETRY: "allow",
        },
    )
