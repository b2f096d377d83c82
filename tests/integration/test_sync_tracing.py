"""Traces across the tiers over real NATS: the trace context travels in message headers.

* sync: the drain batch span (edge) is the parent of the ingest's upsert span (cloud), and
  the audit row's trace id arrives with the record in the cloud store;
* generation: `edge.escalate` -> `nats.request` (edge client) -> `worker.generate` (worker),
  linked only through the request's NATS headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import nats
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aivos.edge.store import AuditRecord
from aivos.edge.uplink.generation import generate
from aivos.shared.messages import GenerateRequest
from aivos.shared.natsconf import NatsServer
from aivos.shared.tracing import current_trace_id, setup_tracing, shutdown_tracing, tracer
from tests.fixtures.nats import ScriptedBackend, running_worker, wait_for_responders
from tests.fixtures.wait import eventually
from tests.integration import test_sync_drain as _drain
from tests.integration.test_sync_drain import SITE, SyncRig, policy

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

rig_factory = _drain.rig_factory  # the fixture
_t = tracer(__name__)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    setup_tracing("aivos-test", exporter=exporter)
    yield exporter
    shutdown_tracing()


def _parent_name(span: ReadableSpan, all_spans: list[ReadableSpan]) -> str | None:
    if span.parent is None:
        return None
    return next((s.name for s in all_spans if s.context.span_id == span.parent.span_id), "?")


async def test_sync_trace_reaches_the_ingest_and_audit_rows_carry_trace_ids(
    rig_factory: Any, spans: InMemorySpanExporter
) -> None:
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy(), batch=100)
    await rig.start_ingest()
    with _t.start_as_current_span("edge.http.infer"):
        request_trace = current_trace_id()
        await rig.store.append_audit(
            AuditRecord(id="traced-1", decision="local", trace_id=request_trace)
        )
    rig.drainer.wake()
    await eventually(lambda: len(rig.cloud_ids()) == 1, what="the record in the cloud")
    # both spans: the publish span ends when the edge has read the JetStream ack, which can
    # come after the ingest has already stored the record and ended its own span
    await eventually(
        lambda: (
            {"ingest.upsert_batch", "sync.publish_batch"}
            <= {s.name for s in spans.get_finished_spans()}
        ),
        what="the publish and upsert spans",
    )
    stored = rig.cloud.records(site=SITE)[0]
    assert stored.trace_id == request_trace and stored.payload["trace_id"] == request_trace

    finished = list(spans.get_finished_spans())
    publish = next(s for s in finished if s.name == "sync.publish_batch")
    upsert = next(s for s in finished if s.name == "ingest.upsert_batch")
    assert upsert.parent is not None and upsert.parent.is_remote
    assert upsert.parent.span_id == publish.context.span_id
    assert upsert.context.trace_id == publish.context.trace_id


async def test_generation_trace_crosses_nats_into_the_worker(
    nats_leaf: NatsServer, nats_hub: NatsServer, spans: InMemorySpanExporter
) -> None:
    async with running_worker(nats_hub.url, ScriptedBackend(["hello ", "world"])):
        edge = await nats.connect(nats_leaf.url)
        try:
            await wait_for_responders(edge, "site1")
            spans.clear()
            with _t.start_as_current_span("edge.http.infer"):
                trace_id = current_trace_id()
                with _t.start_as_current_span("edge.escalate"):
                    done = await generate(
                        edge, GenerateRequest("tr-1", "site1", "hi there"), timeout_s=10
                    )
        finally:
            await edge.close()
    assert done.text == "hello world"
    finished = list(spans.get_finished_spans())
    by_name = {s.name: s for s in finished}
    assert {"edge.http.infer", "edge.escalate", "nats.request", "worker.generate"} <= set(by_name)
    assert _parent_name(by_name["edge.escalate"], finished) == "edge.http.infer"
    assert _parent_name(by_name["nats.request"], finished) == "edge.escalate"
    worker = by_name["worker.generate"]
    assert _parent_name(worker, finished) == "nats.request"
    assert worker.parent is not None and worker.parent.is_remote  # linked via headers only
    assert {format(by_name[n].context.trace_id, "032x") for n in by_name} == {trace_id}
