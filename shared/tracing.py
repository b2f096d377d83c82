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
  real trace id (an always-off sampler), so audit rows carry a trace id that a
  traced peer can continue, and `traceparent` still travels in NATS headers.

`tracer(name)` returns a proxy that resolves the provider at each call, so modules may
create their tracers at import time and `setup_tracing` may run later (or again, in tests).
"""

from __future__ import annotations

import logging
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
