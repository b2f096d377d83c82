"""Site-local NATS: a message on `aivos.evt.<site>.<name>` starts the bound workflow, and an
`emit` step publishes to the site subject with the idempotency key as `Nats-Msg-Id`
(real nats-server)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from aivos.edge.store import Store
from aivos.edge.workflows import WorkflowEngine, WorkflowSettings
from aivos.shared.natsconf.server import NatsServer
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

WORKFLOW = """
name = "relay"
deadline_s = 10

[trigger]
nats = ["dispute_filed"]

[[steps]]
id = "big"
kind = "branch"
when = "inputs.amount > 100"
then = "announce"
otherwise = "end"

[[steps]]
id = "announce"
kind = "emit"
nats = "dispute_escalated"
payload = { account_id = "{inputs.account_id}", amount = "{inputs.amount}", run = "{run.id}" }
"""


async def test_nats_trigger_and_emit(tmp_path: Path, nats_hub: NatsServer) -> None:
    (tmp_path / "relay.toml").write_text(WORKFLOW)
    nc = await nats.connect(nats_hub.url)
    store = Store.open(tmp_path / "edge")
    engine = WorkflowEngine(
        store,
        WorkflowSettings(
            files=[str(tmp_path / "relay.toml")], site_id="branch-7", nats_retry_s=0.05
        ),
        nc_provider=lambda: nc,
    )
    received: asyncio.Queue[nats.aio.msg.Msg] = asyncio.Queue()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        await received.put(msg)

    await nc.subscribe("aivos.evt.branch-7.dispute_escalated", cb=on_msg)
    await engine.start()
    try:
        await asyncio.wait_for(engine.triggers_subscribed.wait(), 30)
        body = json.dumps({"account_id": "ACC-2002", "amount": 250.0}).encode()
        await nc.publish("aivos.evt.branch-7.dispute_filed", body, headers={"Nats-Msg-Id": "m-1"})
        await nc.publish("aivos.evt.branch-7.dispute_filed", body, headers={"Nats-Msg-Id": "m-1"})
        small = json.dumps({"account_id": "ACC-1001", "amount": 5}).encode()
        await nc.publish("aivos.evt.branch-7.dispute_filed", small)
        msg = await asyncio.wait_for(received.get(), 30)
        payload = json.loads(msg.data)
        assert payload["account_id"] == "ACC-2002" and payload["amount"] == 250.0
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == f"{payload['run']}.announce"

        def both_succeeded() -> bool:
            runs = engine.list_runs()
            return len(runs) == 2 and all(r.state == "succeeded" for r in runs)

        await eventually(both_succeeded, timeout=30, interval=0.01, what="two succeeded runs")
        runs = engine.list_runs()
        # the duplicate delivery (same Nats-Msg-Id) started no second run
        assert sorted(r.trigger for r in runs) == ["nats:dispute_filed", "nats:dispute_filed"]
        assert {r.state for r in runs} == {"succeeded"}
        assert received.empty()  # the small dispute was not announced
    finally:
        await engine.stop()
        store.close()
        await nc.close()
