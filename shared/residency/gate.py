"""The exit gate: the one place where data leaves the site.

`ExitGate.apply(data_class, payload, region=...)` applies the class's rule:
`allow` passes the payload through, `mask` replaces PII by placeholders (every string
in a dict/list payload, recursively, except under exempt keys), `local-only` — or a
destination region that is not allowed — raises `ResidencyDenied` (a `PolicyDenied`).
The gate never returns a denied payload: if `apply` returns, the payload may be sent.
It counts what it passed, masked (per entity) and denied, per data class; counts only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import msgspec

from aivos.shared.errors import ResidencyDenied
from aivos.shared.metrics import Counter, Registry
from aivos.shared.residency.masker import Masker, MaskMapping, default_masker
from aivos.shared.residency.policy import ResidencyPolicy, Rule

__all__ = ["ExitGate", "GateDecision", "GateCounts"]

log = logging.getLogger(__name__)

Payload = str | dict[str, Any] | list[Any]


class GateDecision(msgspec.Struct, frozen=True):
    """What may be sent: `payload` (masked when `rule == "mask"`) and the per-entity `counts`.

    `mapping` is the request's MaskMapping (site-local; use it to restore the answer).
    """

    data_class: str
    region: str
    rule: Rule
    payload: Any
    counts: dict[str, int]
    mapping: MaskMapping | None = None

    @property
    def masked(self) -> int:
        return sum(self.counts.values())


class GateCounts(msgspec.Struct):
    """Per data class: payloads passed, payloads denied, values masked per entity."""

    passed: int = 0
    denied: int = 0
    masked: dict[str, int] = {}


class ExitGate:
    def __init__(
        self,
        policy: ResidencyPolicy,
        masker: Masker | None = None,
        *,
        registry: Registry | None = None,
    ) -> None:
        self.policy = policy
        self.masker = (
            masker
            if masker is not None
            else default_masker(policy.recognizers(), policy.locale_pack())
        )
        self._exempt = frozenset(policy.exempt_keys)
        self._lock = threading.Lock()
        self._counts: dict[str, GateCounts] = {}
        self._m_passed: Counter | None = None
        self._m_denied: Counter | None = None
        self._m_masked: Counter | None = None
        if registry is not None:
            self._m_passed = registry.counter(
                "aivos_residency_passed_total", "Payloads the exit gate let leave the site."
            )
            self._m_denied = registry.counter(
                "aivos_residency_denied_total", "Payloads the exit gate kept on site."
            )
            self._m_masked = registry.counter(
                "aivos_residency_masked_total", "PII values masked by the exit gate."
            )

    def check(self, data_class: str, region: str | None = None) -> Rule:
        """The rule that applies to `data_class` sent to `region` (default: the policy's region).

        Raises ResidencyDenied for `local-only` classes and regions that are not allowed.
        Does not count; use it to decide early (e.g. whether a record must be queued for sync).
        """
        dest = self.policy.region if region is None else region
        rule = self.policy.rule(data_class)
        if rule == "local-only":
            raise ResidencyDenied(data_class, dest, "class is local-only")
        if not self.policy.region_allowed(dest):
            raise ResidencyDenied(data_class, dest, "region not allowed")
        return rule

    def allows(self, data_class: str, region: str | None = None) -> bool:
        """True when `data_class` may leave the site for `region` (masked or not)."""
        try:
            self.check(data_class, region)
        except ResidencyDenied:
            return False
        return True

    def apply(
        self,
        data_class: str,
        payload: Payload,
        *,
        region: str | None = None,
        mapping: MaskMapping | None = None,
    ) -> GateDecision:
        """Apply the policy to `payload` before it leaves; raises ResidencyDenied when it may not.

        Pass one `mapping` for all parts of one request so placeholders stay stable.
        The input payload is not modified.
        """
        dest = self.policy.region if region is None else region
        try:
            rule = self.check(data_class, dest)
        except ResidencyDenied as exc:
            self._count(data_class, denied=True)
            if self._m_denied is not None:
                self._m_denied.inc(data_class=data_class, reason=exc.reason)
            log.info("residency: denied %s to %s (%s)", data_class, dest, exc.reason)
            raise
        counts: dict[str, int] = {}
        out: Any = payload
        if rule == "mask":
            mapping = MaskMapping() if mapping is None else mapping
            out = self._mask(payload, mapping, counts, exempt=False)
        self._count(data_class, masked=counts)
        if self._m_passed is not None:
            self._m_passed.inc(data_class=data_class, rule=rule)
        if self._m_masked is not None:
            for entity, n in counts.items():
                self._m_masked.inc(n, data_class=data_class, entity=entity)
        return GateDecision(data_class, dest, rule, out, counts, mapping)

    def restore(self, text: str, mapping: MaskMapping) -> str:
        """Put masked values back into text that came back (e.g. a generated answer)."""
        return self.masker.restore(text, mapping)

    def counts(self) -> dict[str, GateCounts]:
        """A snapshot of the in-process counters, per data class."""
        with self._lock:
            return {
                k: GateCounts(v.passed, v.denied, dict(v.masked)) for k, v in self._counts.items()
            }

    def _mask(self, value: Any, mapping: MaskMapping, counts: dict[str, int], exempt: bool) -> Any:
        if isinstance(value, str):
            if exempt:
                return value
            result = self.masker.mask(value, mapping)
            for k, n in result.counts.items():
                counts[k] = counts.get(k, 0) + n
            return result.text
        if isinstance(value, Mapping):
            return {
                k: self._mask(v, mapping, counts, exempt or k in self._exempt)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._mask(v, mapping, counts, exempt) for v in value]
        return value

    def _count(
        self, data_class: str, *, denied: bool = False, masked: Mapping[str, int] = {}
    ) -> None:
        with self._lock:
            c = self._counts.get(data_class)
            if c is None:
                c = self._counts[data_class] = GateCounts(masked={})
            if denied:
                c.denied += 1
                return
            c.passed += 1
            for k, n in masked.items():
                c.masked[k] = c.masked.get(k, 0) + n
