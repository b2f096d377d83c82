"""Tracing across the tiers with OpenTelemetry: one trace per request, edge to worker.

    setup_tracing("aivos-edge", otlp_endpoint="http://collector:4318/v1/traces")
    with tracer(__name__).start_as_current_span("edge.http.infer"):
        headers = inject_headers({})            # W3C traceparent for a NATS message
    ...
    with tracer(__name__).start_as_current_span("worker.generate",
                                                context=extract_context(msg.headers)):
        ...

Modes (process-wide, set by the last `setup_tracing` call):

* an OTLP endpoint, or a test `exporter`: spans are recorded and exported
  (OTLP/HTTP behind a `BatchSpanProcessor`; a test exporter behind a synchronous one);
* neither (the default): nothing is recorded or exported, but every span still gets a
  real trace id (what an always-off sampler gives), so audit rows carry a trace id that a
  traced peer can continue, and `traceparent` still travels in NATS headers. Such a span
  is made directly (`_IdsOnlySpan`: ids and the current context, no SDK span machinery),
  since every request on the edge's hot path opens one.

`tracer(name)` returns a proxy that resolves the provider at each call, so modules may
create their tracers at import time and `setup_tracing` may run later (or again, in tests).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

__all__ = [
    "setup_tracing",
    "shutdown_tracing",
    "tracer",
    "inject_headers",
    "extract_context",
    "current_trace_id",
    "tracing_enabled",
]

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: TracerProvider = TracerProvider(sampler=ALWAYS_OFF)
_enabled = False


def setup_tracing(
    service_name: str,
    otlp_endpoint: str | None = None,
    *,
    exporter: SpanExporter | None = None,
    sample_ratio: float = 1.0,
) -> TracerProvider:
    """Configure tracing for this process; returns the provider now in use.

    `otlp_endpoint` is the collector's OTLP/HTTP traces URL (e.g.
    ``http://127.0.0.1:4318/v1/traces``). `exporter` (tests, benchmarks) is attached with a
    synchronous processor. Without either, spans only carry ids (see the module doc).
    The previous provider is shut down (its queued spans flushed).
    """
    global _provider, _enabled
    resource = Resource.create({"service.name": service_name})
    if otlp_endpoint is None and exporter is None:
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
        enabled = False
    else:
        provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio))
        )
        if otlp_endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint))
            )
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        enabled = True
    with _lock:
        old, _provider, _enabled = _provider, provider, enabled
    old.shutdown()
    log.info("tracing for %s: %s", service_name, "exporting" if enabled else "ids only")
    return provider


def shutdown_tracing() -> None:
    """Flush and stop the current provider; back to the ids-only default."""
    global _provider, _enabled
    with _lock:
        old, _provider, _enabled = _provider, TracerProvider(sampler=ALWAYS_OFF), False
    old.shutdown()


def tracing_enabled() -> bool:
    """True when spans are recorded and exported."""
    return _enabled


_ids = random.Random()  # as the SDK's RandomIdGenerator: ids need not be secrets


def _ids_only(context: otel_context.Context | None) -> trace.NonRecordingSpan:
    """The span an always-off sampler would make: the parent's trace id (a new random one
    for a root), a new span id, not sampled, the parent's trace state."""
    parent = trace.get_current_span(context).get_span_context()
    flags = trace.TraceFlags.DEFAULT
    if parent.is_valid:
        trace_id, state = parent.trace_id, parent.trace_state
        if parent.trace_flags.random_trace_id:
            flags |= trace.TraceFlags.RANDOM_TRACE_ID
    else:
        trace_id, state = 0, None
        while trace_id == trace.INVALID_TRACE_ID:
            trace_id = _ids.getrandbits(128)
        flags |= trace.TraceFlags.RANDOM_TRACE_ID
    span_id = 0
    while span_id == trace.INVALID_SPAN_ID:
        span_id = _ids.getrandbits(64)
    return trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id,
            span_id,
            is_remote=False,
            trace_flags=trace.TraceFlags(flags),
            trace_state=state,
        )
    )


class _IdsOnlySpan:
    """`start_as_current_span` while tracing is off: the ids-only span is current inside."""

    __slots__ = ("_context", "_span", "_token")

    def __init__(self, context: otel_context.Context | None) -> None:
        self._span = _ids_only(context)
        self._context = trace.set_span_in_context(self._span, context)

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(self._context)
        return self._span

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)


class _ProxyTracer(trace.Tracer):
    """Delegates to the provider configured at call time."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._for: TracerProvider | None = None
        self._tracer: trace.Tracer = trace.NoOpTracer()

    def _real(self) -> trace.Tracer:
        provider = _provider
        if provider is not self._for:  # re-resolve only after setup_tracing
            self._tracer, self._for = provider.get_tracer(self._name), provider
        return self._tracer

    def start_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        if not _enabled:
            return _ids_only(context)
        return self._real().start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> AbstractContextManager[trace.Span]:
        if not _enabled:
            return _IdsOnlySpan(context)
        return self._real().start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        )


def tracer(name: str) -> trace.Tracer:
    """A tracer for module `name` (use ``tracer(__name__)``)."""
    return _ProxyTracer(name)


def inject_headers(
    headers: MutableMapping[str, str] | None = None,
    context: otel_context.Context | None = None,
) -> MutableMapping[str, str]:
    """Add ``traceparent`` (and ``tracestate``) for the current (or given) span to `headers`
    (a NATS headers dict); returns it. Adds nothing when there is no valid span."""
    out: MutableMapping[str, str] = {} if headers is None else headers
    _PROPAGATOR.inject(out, context=context)
    return out


def extract_context(headers: Mapping[str, Any] | None) -> otel_context.Context:
    """The remote parent context carried in NATS `headers` (an empty context when absent)."""
    if not headers:
        return otel_context.Context()
    carrier = {k.lower(): str(v) for k, v in headers.items()}
    return _PROPAGATOR.extract(carrier, context=otel_context.Context())


def current_trace_id() -> str | None:
    """The current span's trace id as 32 lowercase hex digits, or None outside a span."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
