"""The on-site hard-example loop over a real agent store (SQLite in a tmp dir): candidates the
residency policy keeps on site (edge/store/reviewed.py), `aivos candidates list|label|export`
(edge/candidates_cli.py) and the `--from-site` merge (cloud/modelbuild/fromfleet.py).
No bundle here: `list` groups by the model's guess; the integration test clusters with one."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from aivos.cloud.modelbuild.cli import build_cmd
from aivos.cloud.modelbuild.fromfleet import site_training_data
from aivos.edge.candidates_cli import export_cmd, label_cmd, list_cmd
from aivos.edge.store import Store
from aivos.edge.store import feedback as _feedback
from aivos.edge.store import reviewed as _reviewed
from aivos.shared.clustering import leader_clusters
from aivos.shared.errors import DataError


def _payload(
    rid: str, text: str, intent: str = "oos", reason: str = "out_of_scope"
) -> dict[str, Any]:
    return {
        "request_id": rid,
        "text": text,
        "intent": intent,
        "confidence": 0.31,
        "threshold": 0.5,
        "decision": "escalate",
        "reason": reason,
        "route_reason": reason,
        "answered_by": "fallback",
        "answer": None,
        "model_version": "v1",
    }


ROWS = [
    ("01AAAAAAAAAAAAAAAAAAAAAAA1", "I was charged twice for my card", "oos", "out_of_scope"),
    ("01AAAAAAAAAAAAAAAAAAAAAAA2", "duplicate charge on my card", "oos", "out_of_scope"),
    ("01BBBBBBBBBBBBBBBBBBBBBBB3", "what's my balance, roughly", "balance", "low_confidence"),
    ("01CCCCCCCCCCCCCCCCCCCCCCC4", "write me a poem about the sea", "oos", "escalated"),
]


@pytest.fixture(autouse=True)
def _no_default_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No bundle of this machine's own `aivos` home is found by default."""
    monkeypatch.setenv("AIVOS_HOME", str(tmp_path / "home"))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    data = tmp_path / "edge"
    store = Store.open(data)
    try:
        for rid, text, intent, reason in ROWS:
            store.transact_sync(
                lambda c, p=_payload(rid, text, intent, reason): _reviewed.keep(c, p)
            )
        # a rating, and the late cloud answer of a durable escalation job
        store.transact_sync(lambda c: _feedback.upsert(c, ROWS[3][0], "oos", False, None, None))

        async def job() -> None:
            made = await store.create_job("escalation", {"request_id": ROWS[3][0], "text": "x"})
            await store.update_job(made.id, state="done", result={"answer": "The sea, in verse"})

        asyncio.run(job())
    finally:
        store.close()
    return data


def _cli(cmd: Any, *args: str) -> Any:
    return CliRunner().invoke(cmd, list(args), catch_exceptions=False)


def test_list_groups_open_candidates_with_rating_and_late_answer(site: Path) -> None:
    r = _cli(list_cmd, "--data-dir", str(site), "--json")
    assert r.exit_code == 0, r.output
    clusters = json.loads(r.output)["clusters"]
    # no bundle: grouped by the guess, numbered in first-seen order, shown largest first
    assert [(c["id"], c["top_intent"], len(c["members"])) for c in clusters] == [
        (1, "oos", 3),
        (2, "balance", 1),
    ]
    poem = next(m for m in clusters[0]["members"] if m["request_id"] == ROWS[3][0])
    assert (poem["helpful"], poem["answer"], poem["answer_late"]) == (
        False,
        "The sea, in verse",
        True,
    )
    only = json.loads(
        _cli(list_cmd, "--data-dir", str(site), "--json", "--reason", "escalated").output
    )["clusters"]
    assert [(c["id"], [m["request_id"] for m in c["members"]]) for c in only] == [
        (1, [ROWS[3][0]])  # the filter narrows what is shown, not the cluster numbers
    ]
    later = _cli(list_cmd, "--data-dir", str(site), "--json", "--since", "2999-01-01")
    assert json.loads(later.output) == {"clusters": []}
    text = CliRunner().invoke(list_cmd, ["--data-dir", str(site)], env={"COLUMNS": "200"})
    assert "cluster c1" in text.output and "I was charged twice for my card" in text.output


def test_label_export_and_merge(site: Path, tmp_path: Path) -> None:
    r = _cli(
        label_cmd,
        "--data-dir",
        str(site),
        ROWS[0][0],
        ROWS[1][0],
        "--new-intent",
        "card_dispute",
    )
    assert r.exit_code == 0, r.output
    assert "labelled 2 example(s) as card_dispute" in r.output
    # committed when the command reported: a fresh connection sees it
    with sqlite3.connect(site / "aivos.db") as conn:
        rows = conn.execute(
            "SELECT request_id, label, label_kind FROM site_candidates WHERE label IS NOT NULL"
        ).fetchall()
    assert sorted(rows) == [
        (ROWS[0][0], "card_dispute", "new_intent"),
        (ROWS[1][0], "card_dispute", "new_intent"),
    ]
    # an earlier new intent is an intent from now on; the open set renumbers
    open_now = json.loads(_cli(list_cmd, "--data-dir", str(site), "--json").output)["clusters"]
    assert [(c["id"], c["top_intent"]) for c in open_now] == [(1, "balance"), (2, "oos")]
    assert _cli(label_cmd, "--data-dir", str(site), "c2", "--oos").exit_code == 0
    r = _cli(label_cmd, "--data-dir", str(site), ROWS[2][0][:8], "--intent", "card_dispute")
    assert r.exit_code == 0, r.output

    out = tmp_path / "site-labels.jsonl"
    r = _cli(export_cmd, "--data-dir", str(site), "--out", str(out))
    assert r.exit_code == 0, r.output
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported == [
        {"text": ROWS[0][1], "label": "card_dispute"},
        {"text": ROWS[1][1], "label": "card_dispute"},
        {"text": ROWS[2][1], "label": "card_dispute"},
        {"text": ROWS[3][1], "label": "oos"},
    ]
    assert out.stat().st_mode & 0o077 == 0  # the site's own texts: owner only

    base = tmp_path / "base.jsonl"
    base.write_text(
        "".join(
            json.dumps(row) + "\n"
            for row in (
                {"text": "what's my balance, roughly", "label": "balance"},  # relabelled
                {"text": "how much money do I have", "label": "balance"},
                {"text": "freeze my account", "label": "freeze_account"},
            )
        )
    )
    merged = site_training_data(out, base, tmp_path / "bundles" / "v2")
    assert merged.train == tmp_path / "bundles" / "v2.site.jsonl"
    rows = [json.loads(line) for line in merged.train.read_text().splitlines()]
    assert rows == [
        {"text": "how much money do I have", "label": "balance"},
        {"text": "freeze my account", "label": "freeze_account"},
        *exported,
    ]
    assert (merged.n_base, merged.n_reviewed, merged.new_labels) == (3, 4, ["card_dispute", "oos"])
    assert merged.per_label == {"card_dispute": 3, "oos": 1}


def test_bad_input_is_refused_and_writes_nothing(site: Path, tmp_path: Path) -> None:
    def labelled() -> int:
        with sqlite3.connect(site / "aivos.db") as conn:
            return int(
                conn.execute(
                    "SELECT count(*) FROM site_candidates WHERE label IS NOT NULL"
                ).fetchone()[0]
            )

    cases = [
        (["01ZZZZZZZZZZ", "--oos"], "is not a candidate"),
        (["01AAAAAAAAAA", "--oos"], "matches several candidates"),
        (["01A", "--oos"], "too short a prefix"),
        (["c9", "--oos"], "no open cluster c9"),
        ([ROWS[0][0], "--new-intent", "Card Dispute"], "lower_snake_case"),
        ([ROWS[0][0], "--new-intent", "oos"], "lower_snake_case"),
        ([ROWS[0][0], "--intent", "card_dispute"], "pass --bundle"),
        ([ROWS[0][0]], "exactly one of"),
        ([ROWS[0][0], "--oos", "--new-intent", "x"], "exactly one of"),
    ]
    for args, message in cases:
        r = CliRunner().invoke(label_cmd, ["--data-dir", str(site), *args])
        assert r.exit_code != 0 and message in r.output, (args, r.output)
    assert labelled() == 0
    r = CliRunner().invoke(export_cmd, ["--data-dir", str(site)])
    assert r.exit_code == 1 and "no labelled examples yet" in r.output

    empty = tmp_path / "empty"
    Store.open(empty).close()
    r = CliRunner().invoke(label_cmd, ["--data-dir", str(empty), "c1", "--oos"])
    assert r.exit_code == 1 and "no candidates on this site yet" in r.output
    r = CliRunner().invoke(list_cmd, ["--data-dir", str(empty)])
    assert r.exit_code == 0 and "no open candidates on this site" in r.output
    r = CliRunner().invoke(list_cmd, ["--data-dir", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no agent store in" in r.output
    assert not (tmp_path / "nowhere").exists()


def test_unlabelled_candidates_are_capped_labels_are_kept(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "edge")
    try:
        keep = store.transact_sync
        keep(lambda c: _reviewed.keep(c, _payload("R0", "first"), cap=2))
        keep(lambda c: _reviewed.label(c, ["R0"], "oos", "oos"))
        for i in range(1, 5):
            keep(lambda c, i=i: _reviewed.keep(c, _payload(f"R{i}", f"text {i}"), cap=2))
        keep(lambda c: _reviewed.keep(c, _payload("R4", "again"), cap=2))  # kept once
        conn = store.readers.get()
        assert [(c.request_id, c.text) for c in _reviewed.candidates(conn)] == [
            ("R0", "first"),
            ("R3", "text 3"),
            ("R4", "text 4"),
        ]
    finally:
        store.close()


def test_leader_clusters_first_seen_order_and_appends() -> None:
    v = np.array([[1, 0, 0], [0, 1, 0], [0.96, 0.28, 0], [0, 0, 1]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    found = leader_clusters(v[:3], threshold=0.9)
    assert [g.members for g in found] == [[0, 2], [1]]
    assert found[1].cohesion == 1.0 and 0.9 < found[0].cohesion < 1.0
    more = leader_clusters(v, threshold=0.9)  # an append: earlier clusters unchanged
    assert [g.members for g in more] == [[0, 2], [1], [3]]


def test_build_takes_one_source_of_reviewed_examples(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"text": "hi", "label": "oos"}) + "\n")
    r = CliRunner().invoke(build_cmd, ["--from-fleet", str(tmp_path), "--from-site", str(labels)])
    assert r.exit_code == 2 and "do not go together" in r.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no .*examples"):
        site_training_data(empty, labels, tmp_path / "out")
