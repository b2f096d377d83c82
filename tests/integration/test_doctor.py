"""`aivos doctor` on a healthy box, and on a box with one thing wrong in each check."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from aivos.edge.doctor import Box
from aivos.edge.doctor.clock import PROBES, check_clock
from aivos.edge.store import Store
from aivos.edge.store.audit import AuditRecord
from aivos.shared.natsconf.permissions import site_permissions
from aivos.shared.natsconf.server import NatsServer, free_port
from tests.fixtures.model import run_aivos
from tests.fixtures.nats import start_leaf


def _box(data: Path, bundle: Path, *extra: str, records: int = 3) -> Path:
    with Store.open(data) as store:

        async def append() -> None:
            for n in range(records):
                await store.append_audit(AuditRecord(id=f"req-{n}", intent="balance"))

        asyncio.run(append())
    lines = ['site_id = "site-1"', "[model]", f"bundle = {json.dumps(str(bundle))}", *extra]
    (data / "config.toml").write_text("\n".join(lines) + "\n")
    return data


def _doctor(data: Path) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    result = run_aivos("doctor", "--data-dir", str(data), "--json")
    body = json.loads(result.stdout)
    by_check: dict[str, list[dict[str, Any]]] = {}
    for finding in body["findings"]:
        by_check.setdefault(finding["check"], []).append(finding)
    assert body["ok"] == (result.returncode == 0)
    return result.returncode, by_check


def _statuses(findings: list[dict[str, Any]]) -> set[str]:
    return {f["status"] for f in findings}


def test_a_healthy_box_passes(tmp_path: Path, small_bundle: Path, nats_hub: NatsServer) -> None:
    data = _box(tmp_path / "edge", small_bundle, "[uplink]", f'nats_url = "{nats_hub.url}"')
    code, found = _doctor(data)
    assert code == 0, found
    for check in ("disk", "store", "audit", "outbox", "retention", "bundle", "provider", "nats"):
        assert _statuses(found[check]) == {"ok"}, found[check]
    assert "audit chain intact (3 rows)" in found["audit"][0]["message"]
    assert "3 records waiting to sync" in found["outbox"][0]["message"]
    assert "every file matches its sha256" in found["bundle"][0]["message"]
    # the provider is proven by a real inference, not read from the settings
    assert found["provider"][0]["detail"]["provider"] == "CPUExecutionProvider"
    assert "a real inference ran on CPUExecutionProvider" in found["provider"][0]["message"]
    assert found["nats"][0]["message"].startswith(f"connected to {nats_hub.url}")


def _expired_cert(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site-1-g1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(Encoding.PEM))


def test_doctor_says_what_is_wrong_and_exits_1(tmp_path: Path, small_bundle: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(small_bundle, bundle)
    with (bundle / "tokenizer.json").open("ab") as fh:
        fh.write(b" ")  # no longer the file the manifest hashed
    closed = free_port()
    data = _box(
        tmp_path / "site-kit" / "edge-data",
        bundle,
        "[uplink]",
        f'nats_url = "nats://127.0.0.1:{closed}"',
        "[outbox]",
        "quota = 2",
    )
    conn = sqlite3.connect(data / "aivos.db")
    conn.execute("UPDATE audit SET intent = 'tampered' WHERE seq = 2")
    conn.commit()
    conn.close()
    kit = data.parent  # an enrolled box keeps its data dir inside the kit
    (kit / "credentials").mkdir()
    _expired_cert(kit / "credentials" / "site-1-g1.crt")
    (kit / "credentials" / "site-1-g1.key").write_text("not really a key\n")
    (kit / "credentials" / "site-1-g1.key").chmod(0o644)
    (kit / "leaf.conf").write_text(
        f'leafnodes {{ remotes = [ {{ url: "nats-leaf://127.0.0.1:{free_port()}" }} ] }}\n'
    )

    code, found = _doctor(data)
    assert code == 1
    assert "sha256 does not match" in found["bundle"][0]["message"]
    assert _statuses(found["provider"]) == {"fail"}
    assert "audit chain broken" in found["audit"][0]["message"]
    assert _statuses(found["store"]) == {"ok"}  # the file itself is sound
    assert "full" in found["outbox"][0]["message"] and found["outbox"][0]["status"] == "fail"
    nats = [f["message"] for f in found["nats"]]
    assert any(m.startswith(f"cannot connect to nats://127.0.0.1:{closed}") for m in nats)
    assert any("the hub cannot be reached from this box" in m for m in nats)
    certs = [f["message"] for f in found["certificates"] if f["status"] == "fail"]
    assert any(m.startswith("site-1-g1.crt expired on") for m in certs)
    assert any("readable by other users: site-1-g1.key" in m for m in certs)

    human = run_aivos("doctor", "--data-dir", str(data))
    assert human.returncode == 1
    assert "problem(s)" in human.stdout and "FAIL" in human.stdout


def _hub_with_buckets(hub: NatsServer) -> None:
    """The config bucket, as the fleet service creates it on the hub."""
    from aivos.cloud.fleet.config import ConfigStore

    async def create() -> None:
        nc = await nats.connect(hub.url)
        try:
            await ConfigStore.open(nc.jetstream())
        finally:
            await nc.close()

    asyncio.run(create())


def test_clock_skew_against_the_hub_through_the_leaf(
    tmp_path: Path, small_bundle: Path, nats_hub_factory: Callable[[], NatsServer]
) -> None:
    hub = nats_hub_factory()  # private: this test creates the hub's config bucket
    leaf = start_leaf(tmp_path / "leaf", "site-1", hub.leaf_url)
    try:
        box = Box.load(
            _box(tmp_path / "edge", small_bundle, "[uplink]", f'nats_url = "{leaf.url}"')
        )
        # the hub's JetStream has nothing to answer with yet: said, not guessed
        (before,) = check_clock(box)
        assert before.status == "warn" and "stream not found" in before.message, before

        _hub_with_buckets(hub)
        # the doctor asks what a site may ask (the hub enforces this for a real site)
        allowed = site_permissions("site-1").publish or ()
        assert set(PROBES) <= set(allowed)

        (same,) = check_clock(box)  # one machine, one clock: no skew beyond the round trip
        assert same.status == "ok", same
        assert abs(same.detail["skew_s"]) <= same.detail["rtt_s"] / 2 + 0.001
        assert same.message.startswith("this box's clock is ")

        behind = check_clock(box, clock=lambda: time.time() - 2.5)[0]
        assert behind.status == "warn", behind
        assert "s behind the hub's" in behind.message and "no time sync" in behind.message
        assert behind.detail["skew_s"] > 0

        ahead = check_clock(box, clock=lambda: time.time() + 90)[0]
        assert ahead.status == "fail", ahead
        assert "s ahead of the hub's" in ahead.message and ahead.detail["skew_s"] < 0
        assert "generation deadlines" in ahead.message

        # and in the command's findings, with this box's real clock
        code, found = _doctor(box.data_dir)
        assert code == 0, found
        assert [f["status"] for f in found["clock"]] == ["ok"], found["clock"]
    finally:
        leaf.stop()
