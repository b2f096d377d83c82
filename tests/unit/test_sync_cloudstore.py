"""Cloud store (SQLite) upserts, reads, and the `aivos cloud stats|audit` CLI contract."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from aivos.cli import cli
from aivos.cloud.ingest import CloudStore
from aivos.shared.syncwire import SyncEnvelope, decode_envelope, encode_envelope, msg_id


def env(site: str, n: int, data_class: str = "audit", **payload: object) -> SyncEnvelope:
    return SyncEnvelope(
        id=f"{data_class}-{n}",
        site=site,
        data_class=data_class,
        kind="decision" if data_class == "audit" else "fact",
        seq=n,
        created_at="2026-01-01T00:00:00Z",
        payload={"id": f"r{n}", "intent": "billing", **payload},
        trace_id=f"{n:032x}",
    )


def test_upsert_is_idempotent_per_site_and_id(tmp_path: Path) -> None:
    store = CloudStore.open(tmp_path)
    first = store.upsert_many([env("a", 1), env("a", 2), env("b", 1)])
    again = store.upsert_many([env("a", 2), env("a", 3), env("b", 1, changed=True)])
    assert (first.inserted, first.duplicates) == (3, 0)
    assert (again.inserted, again.duplicates) == (1, 2)
    assert store.total() == 4 and store.duplicates_ignored() == 2
    assert store.records(site="b")[0].payload == {"id": "r1", "intent": "billing"}  # first wins
    store.close()


def test_records_come_back_in_site_order(tmp_path: Path) -> None:
    store = CloudStore.open(tmp_path)
    store.upsert_many([env("a", 5), env("b", 2), env("a", 1), env("a", 3, "memory")])
    assert [(r.site, r.seq) for r in store.records()] == [("a", 1), ("a", 3), ("a", 5), ("b", 2)]
    assert [r.seq for r in store.records(data_class="audit", site="a")] == [1, 5]
    assert [r.seq for r in store.records(data_class="audit", limit=1)] == [1]
    assert store.counts() == {"a": {"audit": 2, "memory": 1}, "b": {"audit": 1}}
    store.close()


def test_store_survives_reopen(tmp_path: Path) -> None:
    store = CloudStore.open(tmp_path)
    store.upsert_many([env("a", 1)])
    store.close()
    again = CloudStore.open(tmp_path)
    assert again.upsert_many([env("a", 1)]).inserted == 0
    assert again.total() == 1
    again.close()


def test_wire_envelope_roundtrip_and_strictness() -> None:
    e = env("a", 7)
    assert decode_envelope(encode_envelope(e)) == e
    body = json.loads(encode_envelope(e))
    body["unexpected"] = 1
    with pytest.raises(msgspec.ValidationError):
        decode_envelope(json.dumps(body).encode())
    assert msg_id("a", "audit-1") == "a:audit-1" != msg_id("b", "audit-1")


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    store = CloudStore.open(tmp_path / "cloud")
    store.upsert_many([env("s1", 1), env("s1", 2), env("s1", 3, "memory"), env("s2", 1)])
    store.close()
    return tmp_path / "cloud"


def test_cli_stats_json(filled: Path) -> None:
    result = CliRunner().invoke(cli, ["cloud", "stats", "--data-dir", str(filled), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "sites": {"s1": {"audit": 2, "memory": 1}, "s2": {"audit": 1}}
    }


def test_cli_audit_json_lines(filled: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["cloud", "audit", "--data-dir", str(filled), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["site"], r["seq"]) for r in rows] == [("s1", 1), ("s1", 2), ("s2", 1)]
    assert rows[0]["payload"]["intent"] == "billing" and rows[0]["trace_id"] == f"{1:032x}"
    result = runner.invoke(
        cli,
        ["cloud", "audit", "--data-dir", str(filled), "--site", "s1", "--limit", "1", "--json"],
    )
    assert [json.loads(line)["id"] for line in result.output.splitlines()] == ["audit-1"]


def test_cli_human_tables(filled: Path) -> None:
    runner = CliRunner()
    stats = runner.invoke(cli, ["cloud", "stats", "--data-dir", str(filled)])
    audit = runner.invoke(cli, ["cloud", "audit", "--data-dir", str(filled)])
    assert stats.exit_code == 0 and "s1" in stats.output and "memory" in stats.output
    assert audit.exit_code == 0 and "audit-1" in audit.output and "billing" in audit.output


def test_cli_defaults_to_aivos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIVOS_HOME", str(tmp_path))
    store = CloudStore.open()
    store.upsert_many([env("home", 1)])
    store.close()
    assert (tmp_path / "cloud" / "cloud.db").exists()
    result = CliRunner().invoke(cli, ["cloud", "stats", "--json"])
    assert json.loads(result.output) == {"sites": {"home": {"audit": 1}}}
