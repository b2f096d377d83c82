"""The direct reply under the secure hub's permissions: a site behind its leaf asks a class,
the real `ModelRouter` (router identity) forwards to a real catalogue worker (worker
identity), and the worker's `Done` reaches the site's inbox across the leaf link, with the
router's notice reaching the router's inbox."""

from __future__ import annotations

import nats
import pytest
from nats.aio.client import Client as NATS

from aivos.cloud.fleet.enroll import service_identity
from aivos.cloud.models.router import ModelRouter
from aivos.cloud.worker.catalogue import parse_catalogue
from aivos.cloud.worker.cli import catalogue_worker
from aivos.edge.uplink.generation import generate
from aivos.shared.messages import Done, GenerateRequest
from aivos.shared.natsconf.connect import tls_context
from aivos.shared.natsconf.permissions import service_inbox_prefix
from tests.fixtures.nats import ScriptedBackend
from tests.fixtures.wait import eventually
from tests.integration.test_nats_security import Rig, rig, world  # noqa: F401 - its fixtures

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

CATALOGUE = """
[models.smol]
backend = "llamacpp"
version = "s-1"

[classes.small]
chain = ["smol"]
"""


async def test_worker_answers_the_site_inbox_directly(
    world: dict[str, NATS],  # noqa: F811 - the imported fixture
    rig: Rig,  # noqa: F811
) -> None:
    site = world["a"]
    cat = parse_catalogue(CATALOGUE)
    conns = {
        role: await nats.connect(
            rig.hub.url,
            tls=tls_context(service_identity(rig.data_dir, role)),
            inbox_prefix=service_inbox_prefix(role),
        )
        for role in ("router", "worker")
    }
    router = ModelRouter(cat, accept_timeout_s=1.0)
    worker = catalogue_worker(
        cat, "smol", name="ws", backend=ScriptedBackend(["hi"]), stats_interval_s=None
    )
    try:
        await worker.start(conns["worker"])
        await router.start(conns["router"])

        async def ask() -> Done:
            request = GenerateRequest(request_id="r", site="a", prompt="x", model_class="small")
            return await generate(site, request, timeout_s=2)

        # interest crosses the leaf link asynchronously
        done = await eventually(ask, timeout=60, what="a routed answer", ignore=(Exception,))
        await eventually(lambda: router.counters["smol"].primary >= 1, timeout=60)
        assert router._nc is not None
        # the router sent the forwards only: each answer went from the worker to the site
        assert router._nc.stats["out_msgs"] == router.counters["smol"].primary
    finally:
        await router.drain(grace_s=2)
        await worker.drain(grace_s=2)
        for nc in conns.values():
            await nc.close()
    assert (done.text, done.model, done.version, done.fallback) == ("hi", "smol", "s-1", False)
