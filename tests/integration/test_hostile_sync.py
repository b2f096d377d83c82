"""Issue 12: decisions never wait on sync, background work is supervised, job callbacks are
allow-listed and signed (reproductions 1, 2, 3 and 10).

Real agents (real bundle, SQLite, usearch) behind Litestar's test client or driven directly,
real nats-server hub and site leaf, an in-process generation worker, and a small local HTTP
server as the callback receiver (the one true seam)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from litestar.testing import TestClient

from aivos.edge.agent import Agent
from aivos.edge.api.app import create_app
from aivos.edge.callbacks import validate_callback_url
from aivos.edge.store import AuditRecord, Store
from aivos.edge.workflows.signatures import verify
from aivos.shared.errors import InvalidCallbackUrl
from aivos.shared.natsconf import NatsServer
from aivos.shared.natsconf.server import free_port
from aivos.shared.syncwire import ensure_sync_stream
from tests.fixtures.edge import issue_token, make_edge_settings
from tests.fixtures.nats import ScriptedBackend, running_worker, wait_for_responders
from tests.fixtures.wait import eventually, eventually_sync
from tests.integration import test_sync_drain as _drain
from tests.integration.test_sync_drain import SITE, SyncRig, policy

pytestmark = pytest.mark.slow

rig_factory = _drain.rig_factory  # the fixture

BALANCE = "what is the balance in my checking account"


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


class Edge:
    def __init__(self, tmp_path: Path, bundle: Path, **overrides: Any) -> None:
        data_dir = tmp_path / "edge"
        token = issue_token(data_dir, "operator", "ops")
        settings = make_edge_settings(data_dir, bundle, **overrides)
        self.agent = Agent(settings)
        self.client = TestClient(create_app(settings, self.agent))
        self.headers = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.client.post(path, json=body, headers=self.headers)


# -- repro 1: a full outbox does not stop decisions ---------------------------------------


def test_a_full_outbox_raises_an_alarm_but_decisions_go_on(
    tmp_path: Path, small_bundle: Path
) -> None:
    # an uplink that never comes up: every audit row waits in the outbox
    edge = Edge(
        tmp_path,
        small_bundle,
        **{"uplink.nats_url": f"nats://127.0.0.1:{free_port()}", "outbox.quota": 5},
    )
    with edge.client as client:
        ids = []
        for i in range(9):
            resp = edge.post("/v1/infer", {"text": f"{BALANCE} {i}"})
            assert resp.status_code == 200, resp.text  # before: 507 quota_exceeded from the 6th
            ids.append(resp.json()["request_id"])
        ready_resp = client.get("/readyz")
        assert ready_resp.status_code == 200  # still deciding: degraded, not unready
        ready = ready_resp.json()
        assert ready["ready"] is True and ready["status"] == "degraded"
        assert ready["sync"] == "uplink"
        assert any(r.startswith("outbox_full") for r in ready["degraded"]), ready
        metrics = client.get("/metrics", headers=edge.headers).text
        assert _metric(metrics, "aivos_outbox_full") == 1
        assert _metric(metrics, "aivos_outbox_deferred_records") == 4
        assert _metric(metrics, "aivos_outbox_refused_total") == 0
        agent = edge.agent
        # the local audit trail has every decision, and every one is still owed to the cloud
        assert [agent.store.get_audit(i) is not None for i in ids] == [True] * 9
        pending = agent.store.outbox_pending(100)
        assert [p.id for p in pending] == [f"audit-{i}" for i in ids]
        assert [msgspec.json.decode(p.payload)["id"] for p in pending] == ids


# -- repro 2: a box with no uplink queues nothing -----------------------------------------


def test_a_box_with_no_uplink_is_standalone_and_queues_nothing(
    tmp_path: Path, small_bundle: Path
) -> None:
    edge = Edge(tmp_path, small_bundle, **{"outbox.quota": 3})
    with edge.client as client:
        for i in range(6):
            resp = edge.post("/v1/infer", {"text": f"{BALANCE} {i}"})
            assert resp.status_code == 200, resp.text  # before: 507 from the 4th
        agent = edge.agent
        assert agent.store.audit_count() == 6
        assert agent.store.outbox_depth() == 0
        ready = client.get("/readyz").json()
        assert ready["sync"] == "standalone" and ready["status"] == "ok", ready


# -- repro 1: deferred audit catches up, memory beyond the quota is dropped and counted --


@pytest.mark.asyncio(loop_scope="session")
async def test_deferred_audit_syncs_later_in_order_and_complete(rig_factory: Any) -> None:
    rig: SyncRig = await rig_factory()
    await rig.start_edge(policy(memory="allow"), quota=10, batch=5)
    rig.store.outbox.when_full = "defer"  # the agent's default (outbox.when_full)
    await rig.start_ingest()
    rig.proxy.cut()
    accepted = await rig.audit(25)  # before: QuotaExceeded from the 11th
    assert rig.store.audit_count() == 25
    assert rig.store.outbox_full() and rig.store.outbox_deferred_total == 15
    # memory past the quota: kept locally, its sync copy dropped and counted
    fact = await rig.store.put_fact("s1", "lang", "fr", sync=True)
    assert rig.store.get_fact("s1", "lang") == fact
    assert rig.store.outbox_dropped_total == {"memory": 1}
    assert rig.store.outbox_refused_total == 0

    rig.proxy.restore()
    await eventually(lambda: rig.store.outbox_depth() == 0, timeout=60, what="outbox drained")
    await eventually(lambda: len(rig.cloud_ids()) == 25, timeout=30, what="all audit synced")
    assert rig.cloud_ids() == accepted
    local = {r.id: r.hash for r in rig.store.recent_audit(100)}
    cloud = {r.payload["id"]: r.payload["hash"] for r in rig.cloud.records(site=SITE)}
    assert cloud == local  # deferred rows arrive whole: the audit row itself
    assert not rig.store.outbox_full()


# -- repro 3 + supervision: a bad callback and injected faults do not stop background work


class BoomOnce(asyncio.Event):
    """An event whose `clear()` raises once: the fault lands outside the loop's own
    error handling, as an unexpected bug would."""

    def __init__(self) -> None:
        super().__init__()
        self.raised = False

    def clear(self) -> None:
        if not self.raised:
            self.raised = True
            raise RuntimeError("injected fault")
        super().clear()


def break_event(owner: object, attr: str) -> None:
    """Swap a loop's event for a `BoomOnce` and wake the loop from its current wait."""
    old: asyncio.Event = getattr(owner, attr)
    setattr(owner, attr, BoomOnce())
    old.set()


async def restarted(agent: Agent, name: str, times: int = 1) -> None:
    info = agent.supervisor.info(name)
    await eventually(
        lambda: info.restarts == times and info.state == "running",
        timeout=30,
        what=lambda: f"restarted: {info}",
    )


@pytest.fixture
async def live_agent(
    tmp_path: Path, small_bundle: Path, nats_hub: NatsServer, nats_leaf: NatsServer
) -> Any:
    nc = await nats.connect(nats_hub.url)
    await ensure_sync_stream(nc.jetstream())
    await nc.close()
    settings = make_edge_settings(
        tmp_path / "edge",
        small_bundle,
        site_id="site1",  # the leaf's site
        **{
            "uplink.nats_url": nats_leaf.url,
            "uplink.retry_interval_s": 0.2,
            "uplink.job_budget_ms": 5000,
            "retention.interval_s": 0.2,
        },
    )
    agent = Agent(settings)
    async with running_worker(nats_hub.url, ScriptedBackend()):
        await agent.start()
        try:
            assert await agent.uplink.wait_up(10)
            await wait_for_responders(agent.uplink.nc, agent.settings.site_id)  # type: ignore[arg-type]
            yield agent
        finally:
            await agent.stop()


def _context(n: int) -> dict[str, Any]:
    return {"request_id": f"req-{n}", "text": f"question {n}", "passages": [], "memory": []}


async def _escalation_done(agent: Agent, n: int, callback_url: str | None = None) -> None:
    job = await agent.store.create_job(
        "escalation", _context(n), state="waiting_for_uplink", callback_url=callback_url
    )
    agent.escalations.wake()
    await eventually(
        lambda: agent.store.get_job(job.id).state == "done", timeout=30, what=f"job {n} done"
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_a_stored_bad_callback_url_never_stops_the_job_runner(live_agent: Agent) -> None:
    agent = live_agent
    # a job stored before submit-time validation existed, with the URL of reproduction 3
    await _escalation_done(agent, 1, callback_url="http://127.0.0.1/\u0000")
    await _escalation_done(agent, 2)  # before: the runner had died; this one stayed waiting
    assert agent.callbacks.refused == 1  # re-checked before delivery, not sent
    assert agent.supervisor.info("escalations").restarts == 0  # nothing even failed


@pytest.mark.asyncio(loop_scope="session")
async def test_every_background_task_comes_back_after_an_injected_exception(
    live_agent: Agent,
) -> None:
    agent = live_agent
    sup = agent.supervisor
    sup.base_s = sup.cap_s = 0.05  # quick restarts
    assert agent.fleet is not None
    expected = {"escalations", "sync", "retention", "fleet-bundles", "fleet-heartbeats"}
    await eventually(
        lambda: expected <= {n for n, s in sup.states().items() if s == "running"},
        timeout=30,
        what=lambda: f"tasks running: {sup.states()}",
    )
    fleet = agent.fleet
    retention = agent.retention
    real_run_once, real_failures = retention.run_once, retention._failures
    retention_runs = 0

    async def failing_pass() -> Any:
        nonlocal retention_runs
        retention_runs += 1
        if retention_runs == 1:
            raise RuntimeError("injected pass failure")
        return await real_run_once()

    class BrokenCounter:
        """The failure handler itself fails, once."""

        def inc(self, *args: Any, **kwargs: Any) -> None:
            retention._failures = real_failures
            raise RuntimeError("injected fault in the failure handler")

    def break_retention() -> None:
        retention.run_once = failing_pass  # type: ignore[method-assign]
        retention._failures = BrokenCounter()  # type: ignore[assignment]

    injections: dict[str, Callable[[], None]] = {
        "escalations": lambda: break_event(agent.escalations, "_wake"),
        "sync": lambda: break_event(agent.drainer, "_wake"),
        "fleet-bundles": lambda: break_event(fleet.bundles, "_wake"),
        "fleet-heartbeats": lambda: break_event(fleet.heartbeats, "_changed"),
        "retention": break_retention,
    }
    for name, inject in injections.items():
        inject()
        await restarted(agent, name)
        assert sup.info(name).last_error == "RuntimeError"
    # and they work again: a deferred escalation completes, a decision syncs, retention runs
    await _escalation_done(agent, 3)
    sent = agent.drainer.stats.sent
    await agent.store.append_audit(AuditRecord(id="after-restart"))
    agent.drainer.wake()
    await eventually(lambda: agent.drainer.stats.sent > sent, timeout=30, what="synced")
    await eventually(lambda: retention_runs >= 2, timeout=30, what="a retention pass")
    metrics = agent.metrics.render()
    for name in injections:
        assert f'aivos_task_restarts_total{{task="{name}"}} 1' in metrics
        assert f'aivos_task_up{{task="{name}"}} 1' in metrics


@pytest.mark.asyncio(loop_scope="session")
async def test_a_task_that_is_down_degrades_readiness(live_agent: Agent) -> None:
    agent = live_agent
    agent.supervisor.base_s = agent.supervisor.cap_s = 30.0  # it stays down while we look
    break_event(agent.escalations, "_wake")
    await eventually(
        lambda: agent.supervisor.states().get("escalations") == "restarting",
        timeout=30,
        what="the job runner down",
    )
    ready = await agent.readiness()
    assert ready.ready is True and ready.tasks["escalations"] == "restarting"
    assert ready.degraded == ["task_restarting: escalations (RuntimeError)"]
    assert 'aivos_task_up{task="escalations"} 0' in agent.metrics.render()


# -- repro 3 and 10: callback URLs are validated, allow-listed and the body is signed ----


MALFORMED = ("http://127.0.0.1/\u0000", "http://[::1/", "http://127.0.0.1:99999/")


class _Receiver:
    """A local HTTP server recording each POST (headers and body)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def test_callback_urls_are_checked_and_loopback_needs_listing(
    tmp_path: Path, small_bundle: Path, receiver: _Receiver
) -> None:
    allowed = f"127.0.0.1:{receiver.port}"
    edge = Edge(tmp_path, small_bundle, **{"jobs.callback_allow_hosts": [allowed]})
    with edge.client:

        def submit(url: str) -> Any:
            return edge.post("/v1/jobs", {"text": "set an alarm", "callback_url": url})

        for bad in MALFORMED:
            resp = submit(bad)
            assert resp.status_code == 400, (bad, resp.text)  # before: 202, or a 500
            # the request schema may refuse it first (invalid_request); either way a 400
            assert resp.json()["error"]["code"] in ("invalid_callback_url", "invalid_request")
            with pytest.raises(InvalidCallbackUrl):  # and the job service refuses it too
                validate_callback_url(bad, [allowed, "127.0.0.1", "[::1]"])
        # loopback is a host like any other: only the listed port (before: any port)
        for other in (f"http://127.0.0.1:{free_port()}/hook", "http://localhost/hook"):
            resp = submit(other)
            assert resp.status_code == 400, (other, resp.text)
            assert resp.json()["error"]["code"] == "callback_host_not_allowed"
        assert receiver.received == []
        assert submit(f"http://{allowed}/hook").status_code in (200, 202)
        eventually_sync(lambda: receiver.received, timeout=30, what="the callback")


def test_callbacks_are_signed_with_the_webhook_scheme(
    tmp_path: Path, small_bundle: Path, receiver: _Receiver
) -> None:
    allowed = f"127.0.0.1:{receiver.port}"
    edge = Edge(tmp_path, small_bundle, **{"jobs.callback_allow_hosts": [allowed]})
    with edge.client:
        body = {"text": "set an alarm", "callback_url": f"http://{allowed}/hook"}
        job_id = edge.post("/v1/jobs", body).json()["job_id"]
        got = eventually_sync(lambda: receiver.received, timeout=30, what="the callback")
    secret = (tmp_path / "edge" / "callback-secret").read_text().strip()
    sent_headers, sent_body = got[0]
    signed = verify(secret, sent_headers, sent_body, tolerance_s=300)  # before: "unsigned"
    assert signed.event == "job.done"
    assert msgspec.json.decode(sent_body)["job_id"] == job_id
    assert (tmp_path / "edge" / "callback-secret").stat().st_mode & 0o077 == 0
    # a body altered on the way no longer verifies
    with pytest.raises(Exception, match="bad_signature"):
        verify(secret, sent_headers, sent_body.replace(b"done", b"fail"), tolerance_s=300)


async def test_a_deferred_record_reads_back_as_the_audit_row(tmp_path: Path) -> None:
    with Store.open(tmp_path, outbox_quota=1, outbox_when_full="defer") as store:
        await store.append_audit(AuditRecord(id="a"))
        await store.append_audit(AuditRecord(id="b"))  # the outbox is full: deferred
        assert store.outbox_deferred_total == 1
        first, second = store.outbox_pending(10)
        assert [first.id, second.id] == ["audit-a", "audit-b"]
        row = store.get_audit("b")
        assert row is not None and msgspec.json.decode(second.payload)["hash"] == row.hash


def test_the_full_outbox_policy_and_readiness_body_are_documented() -> None:
    from aivos.edge.api.controllers.health import ReadinessOut
    from aivos.edge.settings import EdgeSettings

    doc = (Path(__file__).resolve().parents[2] / "docs" / "store.md").read_text()
    settings = EdgeSettings()
    for key, default in {
        "outbox.quota": str(settings.outbox.quota),
        "outbox.when_full": f'"{settings.outbox.when_full}"',
    }.items():
        row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]+)` \|", doc, re.M)
        assert row and row.group(1) == default, key
    example = re.search(r"```json\n(\{\"ready\".*?)```", doc, re.S)
    assert example is not None
    body = msgspec.json.decode(example.group(1).encode(), type=ReadinessOut)
    assert body.status == "degraded" and body.tasks["escalations"] == "restarting"
