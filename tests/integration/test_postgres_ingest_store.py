"""The cloud ingest store on both engines (SQLite file, real PostgreSQL): idempotent
upserts, reads in site order, reopening, recorded migrations, concurrent writers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from aivos.cli import cli
from aivos.cloud.db import applied_migrations
from aivos.cloud.ingest import CloudStore
from aivos.shared.syncwire import SyncEnvelope

pytestmark = pytest.mark.slow


def env(site: str, n: int, data_class: str = "audit", **payload: object) -> SyncEnvelope:
    return SyncEnvelope(
        id=f"{data_class}-{n}",
        site=site,
        data_class=data_class,
        kind="decision",
        seq=n,
        created_at="2026-01-01T00:00:00Z",
        payload={"n": n, **payload},
        trace_id=None if n % 2 else f"{n:032x}",
    )


def _open(tmp_path: Path, db: str | None) -> CloudStore:
    return CloudStore.open(tmp_path / "cloud", db=db)


def test_upsert_is_idempotent_and_reads_in_site_order(tmp_path: Path, db_url: str | None) -> None:
    with _open(tmp_path, db_url) as store:
        first = store.upsert_many([env("a", 5), env("b", 2), env("a", 1), env("a", 3, "memory")])
        again = store.upsert_many([env("a", 5, changed=True), env("a", 7), env("b", 2)])
        assert (first.inserted, first.duplicates) == (4, 0)
        assert (again.inserted, again.duplicates) == (1, 2)
        assert store.total() == 5 and store.duplicates_ignored() == 2
        assert [(r.site, r.seq) for r in store.records()] == [
            ("a", 1),
            ("a", 3),
            ("a", 5),
            ("a", 7),
            ("b", 2),
        ]
        assert store.records(site="a", data_class="audit", limit=2)[1].payload == {"n": 5}
        assert store.records(site="b")[0].trace_id == f"{2:032x}"
        assert store.counts() == {"a": {"audit": 3, "memory": 1}, "b": {"audit": 1}}
        assert store.upsert_many([]).inserted == 0
    with _open(tmp_path, db_url) as again_store:  # reopening applies nothing twice
        assert again_store.total() == 5
        assert applied_migrations(again_store.engine) == ["ingest_0001_records"]


def test_received_at_keeps_subsecond_precision(tmp_path: Path, db_url: str | None) -> None:
    with _open(tmp_path, db_url) as store:
        store.upsert_many([env("a", 1)])
        received = store.records()[0].received_at
        assert received != int(received)  # a DOUBLE, not PostgreSQL's 4-byte REAL


def test_concurrent_writers_store_each_record_once(tmp_path: Path, db_url: str | None) -> None:
    """Two writers (as two ingest replicas) with overlapping batches."""
    batches = [[env("s", n) for n in range(start, start + 200)] for start in range(0, 1000, 100)]
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def writer(store: CloudStore, mine: list[list[SyncEnvelope]]) -> None:
        try:
            for batch in mine:
                r = store.upsert_many(batch)
                results.append((r.inserted, r.duplicates))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    one, two = _open(tmp_path, db_url), _open(tmp_path, db_url)
    try:
        threads = [
            threading.Thread(target=writer, args=(one, batches[0::2])),
            threading.Thread(target=writer, args=(two, batches[1::2])),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert one.total() == 1100
        assert sum(i for i, _ in results) == 1100
        assert sum(i + d for i, d in results) == 2000
        assert [r.seq for r in one.records(site="s")] == list(range(1100))
    finally:
        one.close()
        two.close()


def test_cli_reads_the_database_named_by_the_environment(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CloudStore.open(db=postgres_url) as store:
        store.upsert_many([env("pg", 1), env("pg", 2, "memory")])
    monkeypatch.setenv("AIVOS_CLOUD_DB", postgres_url)
    result = CliRunner().invoke(cli, ["cloud", "stats", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"sites": {"pg": {"audit": 1, "memory": 1}}}
    assert not (tmp_path / "cloud.db").exists()  # not the SQLite default
    bad = CliRunner().invoke(cli, ["cloud", "stats", "--db", "mysql://x/y"])
    assert bad.exit_code != 0 and "postgresql://" in str(bad.exception or bad.output)
