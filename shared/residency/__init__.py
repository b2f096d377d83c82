"""Residency policy and PII masking: what may leave the site, and in what form.

policy = ResidencyPolicy.from_mapping(config["residency"])
gate = ExitGate(policy)                       # masker: built-ins + policy's custom regexes
mapping = MaskMapping()                       # one per request; never leaves the site
d = gate.apply(DataClass.ESCALATION_PROMPT, {"prompt": text, "passages": [...]},
               region="eu-west", mapping=mapping)   # raises ResidencyDenied if not allowed
send(d.payload); audit(d.counts)
answer = gate.restore(generated, mapping)
"""

from aivos.shared.errors import PolicyDenied, ResidencyDenied
from aivos.shared.residency.gate import ExitGate, GateCounts, GateDecision, GateMetrics
from aivos.shared.residency.masker import (
    Masker,
    MaskMapping,
    MaskResult,
    SpanCache,
    SpanCacheStats,
    default_masker,
)
from aivos.shared.residency.policy import (
    DEFAULT_EXEMPT_KEYS,
    CustomRecognizer,
    DataClass,
    ResidencyPolicy,
    Rule,
    recommended_policy,
)
from aivos.shared.residency.prefill import PrefillStats, SpanPrefill
from aivos.shared.residency.recognizers import (
    Recognizer,
    RegexRecognizer,
    Span,
    builtin_recognizers,
)

__all__ = [
    "ResidencyPolicy",
    "DataClass",
    "Rule",
    "CustomRecognizer",
    "DEFAULT_EXEMPT_KEYS",
    "recommended_policy",
    "ExitGate",
    "GateDecision",
    "GateCounts",
    "GateMetrics",
    "Masker",
    "MaskMapping",
    "MaskResult",
    "SpanCache",
    "SpanCacheStats",
    "SpanPrefill",
    "PrefillStats",
    "default_masker",
    "Recognizer",
    "RegexRecognizer",
    "Span",
    "builtin_recognizers",
    "PolicyDenied",
    "ResidencyDenied",
]
