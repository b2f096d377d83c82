"""A data dir written by the previous release (tests/fixtures/upgrade) opens with the
current code, migrates, and loses nothing: audit chain, jobs, memory, outbox, workflow runs,
tokens and the knowledge document; the agent starts on it and answers."""

from __future__ import annotations

import json
import sqlite3
import tarfile
from pathlib import Path

from litestar.testing import TestClient

from aivos.edge.api.app import create_app
from aivos.edge.store import Store
from aivos.edge.store.migrations import MIGRATIONS, applied
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.natsconf.server import free_port
from tests.fixtures.edge import make_edge_settings
from tests.fixtures.model import run_aivos
from tests.fixtures.upgrade.make_fixture import ARCHIVE, HERE, row_counts, settings_overrides

# The fixture only gets older: retention (tested on its own elsewhere) must not delete the
# records this test looks for. A century is "never" here.
_KEEP = {
    "memory.retention_days": 36_500,
    "retention.jobs_days": 36_500,
    "retention.runs_days": 36_500,
    "retention.outbox_sent_days": 36_500,
}


def _audit_verify(data: Path) -> str:
    result = run_aivos("audit", "verify", "--data-dir", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_previous_release_data_dir_opens_with_nothing_lost(
    tmp_path: Path, small_bundle: Path
) -> None:
    fixture = json.loads((HERE / "fixture.json").read_text())
    data = tmp_path / "edge"
    with tarfile.open(HERE / ARCHIVE) as tar:
        tar.extractall(data, filter="data")
    expected = fixture["counts"]
    assert row_counts(data / "aivos.db") == expected

    # the store applies this release's new migrations and keeps every row
    with Store.open(data) as store:
        names = applied(store.readers.get())
    assert names == [name for name, _ in MIGRATIONS]
    assert names[: len(fixture["migrations"])] == fixture["migrations"]
    assert row_counts(data / "aivos.db") == expected
    assert f"audit chain intact: {expected['audit']} rows" in _audit_verify(data)

    conn = sqlite3.connect(f"file:{data / 'aivos.db'}?mode=ro", uri=True)
    for local in fixture["local"]:
        row = conn.execute(
            "SELECT intent, decision FROM audit WHERE id = ?", (local["request_id"],)
        )
        assert row.fetchone() == (local["intent"], "local")
    conn.close()

    bundle = load_bundle_manifest(small_bundle)
    overrides = {**settings_overrides(data, free_port()), **_KEEP}
    settings = make_edge_settings(data, small_bundle, **overrides)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()
        assert ready["ready"] is True, ready

        # the previous release's tokens still authenticate, and still own what they made
        client_auth = {"Authorization": f"Bearer {fixture['tokens']['client']}"}
        operator_auth = {"Authorization": f"Bearer {fixture['tokens']['operator']}"}

        waiting = client.get(f"/v1/jobs/{fixture['escalation']['job_id']}", headers=client_auth)
        assert waiting.status_code == 200, waiting.text
        assert waiting.json()["status"] == "waiting_for_uplink"  # still queued for the cloud
        done = client.get(f"/v1/jobs/{fixture['background_job']['job_id']}", headers=client_auth)
        assert done.json()["status"] == "done"
        assert done.json()["result"]["intent"] == fixture["background_job"]["intent"]

        session = fixture["session"]
        memory = client.get(f"/v1/sessions/{session['session_id']}", headers=client_auth).json()
        assert len(memory["turns"]) == session["turns"]
        assert [f["value"] for f in memory["facts"]] == [session["fact"]]

        run = client.get(f"/v1/runs/{fixture['run']['run_id']}", headers=operator_auth).json()
        assert run["run"]["state"] == "succeeded"
        assert [s["step"] for s in run["steps"]] == ["review", "answer"]
        assert run["steps"][0]["approval"]["decided_by"] == "fixture-operator"

        # the index was embedded by the fixture's bundle; the agent re-embeds it on start
        # when this bundle's embedding version differs, and the document is found either way
        found = client.get(
            "/v1/knowledge/search",
            params={"q": "when is the branch open on saturday"},
            headers=client_auth,
        ).json()
        assert found["passages"][0]["source"] == fixture["document"]["source"]
        assert found["embedding_version"] == bundle.embedding_version

        answer = client.post(
            "/v1/infer",
            headers=client_auth,
            json={"text": "what is the balance in my checking account"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["decision"] == "local"
        assert answer.json()["model_version"] == bundle.bundle_version

    index = json.loads((data / "knowledge" / "manifest.json").read_text())
    assert index["embedding_version"] == bundle.embedding_version
    after = row_counts(data / "aivos.db")
    assert after["audit"] == expected["audit"] + 1  # the new answer, chained onto the old rows
    assert after["outbox_unsent"] == expected["outbox_unsent"] + 1  # nothing synced or lost
    assert f"audit chain intact: {after['audit']} rows" in _audit_verify(data)
