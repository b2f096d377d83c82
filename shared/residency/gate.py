"""The exit gate: the one place where data leaves the site.

`ExitGate.apply(data_class, payload, region=...)` applies the class's rule:
`allow` passes the payload through, `mask` replaces PII by placeholders (every string
in a dict/list payload, recursively, except under exempt keys), `local-only` — or a
destination region that is not allowed — raises `ResidencyDenied` (a `PolicyDenied`).
The gate never returns a denied payload: if `apply` returns, the payload may be sent.
It counts what it passed, masked (per entity) and denied, per data class; counts only.

Strings under the keys a caller names in `cache_keys` are masked with the masker's span cache
(`Masker.mask(cache=True)`): text that repeats across requests and is not the user's own, such
as knowledge-base passages. Nothing else is cached: a user's prompt or memory is searched
every time and never kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from aivos.shared.errors import ResidencyDenied
from aivos.shared.metrics import Registry
from aivos.shared.residency.masker import Masker, MaskMapping, SpanCache, default_masker
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


class GateMetrics:
    """The exit gate's metrics in one registry. Registered once: when the residency policy
    changes, the new gate takes them over (`ExitGate.with_policy`), since a registry takes a
    name only once and the counters must keep counting."""

    def __init__(self, registry: Registry) -> None:
        self.passed = registry.counter(
            "aivos_residency_passed_total", "Payloads the exit gate let leave the site."
        )
        self.denied = registry.counter(
            "aivos_residency_denied_total", "Payloads the exit gate kept on site."
        )
        self.masked = registry.counter(
            "aivos_residency_masked_total", "PII values masked by the exit gate."
        )
        self.span_cache_lookups = registry.counter(
            "aivos_residency_span_cache_total",
            "Lookups of the masker's span cache (cached passages), by result.",
        )
        self.span_cache: SpanCache | None = None  # the current gate's
        registry.gauge(
            "aivos_residency_span_cache_entries",
            "Texts whose spans the masker's span cache holds.",
            lambda: self.span_cache.stats().entries if self.span_cache is not None else 0,
        )
        registry.gauge(
            "aivos_residency_span_cache_prefilled",
            "Texts the current span cache was pre-filled with (knowledge-base passages "
            "searched in the background before any request cited them).",
            lambda: self.span_cache.stats().prefilled if self.span_cache is not None else 0,
        )


class ExitGate:
    def __init__(
        self,
        policy: ResidencyPolicy,
        masker: Masker | None = None,
        *,
        registry: Registry | None = None,
        metrics: GateMetrics | None = None,
    ) -> None:
        """`registry`: register the gate's metrics there; `metrics`: count into metrics
        already registered (a gate replacing another one, see `with_policy`)."""
        self.policy = policy
        self.masker = (
            masker
            if masker is not None
            else default_masker(policy.recognizers(), policy.locale_pack())
        )
        self._exempt = frozenset(policy.exempt_keys)
        self._lock = threading.Lock()
        self._counts: dict[str, GateCounts] = {}
        if metrics is None and registry is not None:
            metrics = GateMetrics(registry)
        self.metrics = metrics
        if metrics is not None:
            metrics.span_cache = self.masker.span_cache
            self.masker.span_cache.count_into(metrics.span_cache_lookups)

    def with_policy(self, policy: ResidencyPolicy) -> ExitGate:
        """A gate for `policy` (its own masker, so a fresh span cache) that counts into this
        gate's metrics."""
        return ExitGate(policy, metrics=self.metrics)

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
        cache_keys: Collection[str] = (),
    ) -> GateDecision:
        """Apply the policy to `payload` before it leaves; raises ResidencyDenied when it may not.

        Pass one `mapping` for all parts of one request so placeholders stay stable.
        The input payload is not modified. Strings under a key in `cache_keys` (at any depth)
        are masked through the masker's span cache: name only keys whose text repeats
        across requests and is not a user's own (the escalator names `passages`).
        """
        dest = self.policy.region if region is None else region
        try:
            rule = self.check(data_class, dest)
        except ResidencyDenied as exc:
            self._count(data_class, denied=True)
            if self.metrics is not None:
                self.metrics.denied.inc(data_class=data_class, reason=exc.reason)
            log.info("residency: denied %s to %s (%s)", data_class, dest, exc.reason)
            raise
        counts: dict[str, int] = {}
        out: Any = payload
        if rule == "mask":
            mapping = MaskMapping() if mapping is None else mapping
            cached = frozenset(cache_keys)
            out = self._mask(payload, mapping, counts, cached, exempt=False, cache=False)
        self._count(data_class, masked=counts)
        if self.metrics is not None:
            self.metrics.passed.inc(data_class=data_class, rule=rule)
            for entity, n in counts.items():
                self.metrics.masked.inc(n, data_class=data_class, entity=entity)
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

    def _mask(
        self,
        value: Any,
        mapping: MaskMapping,
        counts: dict[str, int],
        cached: frozenset[str],
        *,
        exempt: bool,
        cache: bool,
    ) -> Any:
        if isinstance(value, str):
            if exempt:
                return value
            result = self.masker.mask(value, mapping, cache=cache)
            for k, n in result.counts.items():
                counts[k] = counts.get(k, 0) + n
            return result.text
        if isinstance(value, Mapping):
            return {
                k: self._mask(
                    v,
                    mapping,
                    counts,
                    cached,
                    exempt=exempt or k in self._exempt,
                    cache=cache or k in cached,
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [
                self._mask(v, mapping, counts, cached, exempt=exempt, cache=cache) for v in value
            ]
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
