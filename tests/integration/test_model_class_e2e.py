"""A model class from the edge's router policy to the cloud's model router and back: a real
hub and site leaf, a real edge agent behind its HTTP API, a real `ModelRouter` and two
catalogue workers with scripted backends. The class's primary fails, its fallback answers,
and the response body, the streamed `done` event and the audit row name the fallback's
model and version."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from litestar.testing import TestClient

from aivos.cloud.models.router import ModelRouter
from aivos.cloud.worker.catalogue import Catalogue, parse_catalogue
from aivos.cloud.worker.cli import catalogue_worker
from aivos.edge.agent import Agent
from aivos.edge.api.app import create_app
from aivos.shared.messages import GenerateRequest, encode
from aivos.shared.natsconf.server import NatsServer
from aivos.shared.subjects import gen_class_subject
from tests.fixtures.edge import issue_token, make_edge_settings
from tests.fixtures.nats import ScriptedBackend
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.slow

SITE = "site1"
CATALOGUE = """
[models.primary]
backend = "llamacpp"
version = "p-2"

[models.backup]
backend = "llamacpp"
version = "b-1"

[classes.small]
chain = ["primary", "backup"]
"""
FALLBACK = {"model": "backup", "version": "b-1", "fallback": True}


class FailingBackend:
    """A model whose every generation fails (the worker answers `Error(backend_error)`)."""

    name = "failing"

    def __init__(self) -> None:
        self.requests: list[GenerateRequest] = []

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str]:
        from aivos.cloud.worker.backend import BackendError

        self.requests.append(request)
        raise BackendError("model crashed")
        yield ""  # pragma: no cover - makes this an async generator

    async def aclose(self) -> None:
        return None


@contextlib.asynccontextmanager
async def cloud(url: str, cat: Catalogue, primary: Any, backup: Any) -> AsyncIterator[ModelRouter]:
    """Two catalogue workers and a model router, each on its own hub connection."""
    conns = [await nats.connect(url, name=n) for n in ("wp", "wb", "router")]
    workers = [
        catalogue_worker(cat, "primary", name="wp", backend=primary, stats_interval_s=None),
        catalogue_worker(cat, "backup", name="wb", backend=backup, stats_interval_s=None),
    ]
    router = ModelRouter(cat, accept_timeout_s=1.0)
    try:
        for worker, nc in zip(workers, conns, strict=False):
            await worker.start(nc)
        await router.start(conns[2])
        yield router
    finally:
        await router.drain(grace_s=2)
        for worker in workers:
            await worker.drain(grace_s=2)
        for nc in conns:
            await nc.close()


async def _router_reachable(leaf_url: str) -> None:
    """Wait until the router's interest has crossed the leaf link (any answer proves it: an
    expired probe is answered `deadline_exceeded` at once)."""
    nc = await nats.connect(leaf_url)
    probe = GenerateRequest(request_id="probe", site=SITE, prompt="", deadline_unix_ms=1)
    try:

        async def answered() -> bool:
            await nc.request(gen_class_subject(SITE, "small"), encode(probe), timeout=1)
            return True

        await eventually(answered, timeout=60, what="the model router", ignore=(Exception,))
    finally:
        await nc.close()


def _sse(body: str) -> list[tuple[str, Any]]:
    events, kind = [], ""
    for line in body.splitlines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((kind, msgspec.json.decode(line.removeprefix("data: "))))
    return events


async def test_fallback_model_answers_and_is_named_in_body_stream_and_audit(
    tmp_path: Path,
    small_bundle: Path,
    nats_leaf_factory: Callable[..., NatsServer],
    nats_hub: NatsServer,
) -> None:
    leaf = nats_leaf_factory(SITE)
    data_dir = tmp_path / "edge"
    token = issue_token(data_dir, "client", "e2e")
    settings = make_edge_settings(
        data_dir,
        small_bundle,
        site_id=SITE,
        **{
            "uplink.nats_url": leaf.url,
            "uplink.escalation_budget_ms": 5000,
            "router.default": "escalate",  # every query escalates
            "router.model_class": "small",  # ... naming the model class "small"
        },
    )
    cat = parse_catalogue(CATALOGUE)
    primary, backup = FailingBackend(), ScriptedBackend(["rescued ", "answer"])
    agent = Agent(settings)
    headers = {"Authorization": f"Bearer {token}"}
    # the app runs in the test client's own thread and loop; its calls are made from worker
    # threads, so this loop keeps serving the router and the workers meanwhile
    client = TestClient(create_app(settings, agent))

    def post(**body: Any) -> Any:
        return client.post("/v1/infer", json=body, headers=headers)

    async with cloud(nats_hub.url, cat, primary, backup) as router:
        await asyncio.to_thread(client.__enter__)
        try:
            await eventually(lambda: agent.uplink.connected, timeout=60, what="the uplink")
            await _router_reachable(leaf.url)
            resp = await asyncio.to_thread(post, text="tell me something")
            streamed = await asyncio.to_thread(post, text="tell me more", stream=True)
            body, events = resp.json(), _sse(streamed.text)
            rows = [agent.store.get_audit(r["request_id"]) for r in (body, events[-1][1])]
            accepted = await asyncio.to_thread(
                client.post, "/v1/jobs", json={"text": "later please"}, headers=headers
            )
            job_id = accepted.json()["job_id"]
            await eventually(
                lambda: agent.store.get_job(job_id).state == "done",
                timeout=120,
                what="the deferred escalation to complete",
            )
            job = agent.store.get_job(job_id)
        finally:
            await asyncio.to_thread(client.__exit__, None, None, None)
    assert resp.status_code == 200, resp.text
    assert (body["answered_by"], body["answer"]) == ("cloud", "rescued answer")
    assert body["generator"] == FALLBACK
    assert list(body)[-1] == "generator"  # the new field comes last
    assert body["model_version"] != "b-1"  # still the intent bundle's version
    # the primary was asked first, for the class; then the fallback answered (the sync
    # request, the stream and the deferred job)
    assert [r.model_class for r in primary.requests] == ["small", "small", "small"]
    assert [r.model_class for r in backup.requests] == ["small", "small", "small"]
    assert router.counters["backup"].fallback == 3
    assert [kind for kind, _ in events][-1] == "done"
    done = events[-1][1]
    assert (done["answered_by"], done["answer"]) == ("cloud", "rescued answer")
    assert done["generator"] == FALLBACK
    # a deferred job keeps the class with the escalation it completes later, and records
    # which model answered it
    assert job.result is not None
    assert job.result["escalation"]["model_class"] == "small"
    assert (job.result["answer"], job.result["generator"]) == ("rescued answer", FALLBACK)
    for row in rows:
        assert row is not None
        assert row.detail["answered_by"] == "cloud"
        assert row.detail["generator"] == FALLBACK
