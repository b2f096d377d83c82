"""The hard-example loop of a site whose policy keeps hard examples on site (the default:
no rule for ``hard_example``): a real agent keeps the requests its bundle cannot serve in its
own store, nothing queued to leave; `aivos candidates list` clusters them with the site's
bundle, `label` labels a cluster and single requests, `export` writes the JSONL that
`aivos models build --from-site` merges into the base training data (the merge is run here;
the build itself is the from-fleet test's, tests/integration/test_hard_examples.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from aivos.cloud.modelbuild.fromfleet import site_training_data
from aivos.edge.candidates_cli import export_cmd, label_cmd, list_cmd
from aivos.shared.datasets import load_examples
from tests.fixtures.edge import EdgeHarness

# a card-dispute request the 8-intent test bundle has no intent for (it says `oos`)
DISPUTES = [
    "I was charged twice for my card",
    "my card was billed two times for the same purchase",
    "there is a duplicate charge on my card",
    "I see the same payment twice on my card statement",
    "the shop charged my card twice",
    "why was my card debited twice for one order",
    "I got double charged on my credit card",
]
OTHERS = ["who won the world cup in 1998", "how tall is mount everest"]


def _audit_candidate(data_dir: Path, request_id: str) -> str | None:
    with sqlite3.connect(data_dir / "aivos.db") as conn:
        row = conn.execute("SELECT detail FROM audit WHERE id = ?", (request_id,)).fetchone()
    assert row is not None
    return json.loads(row[0]).get("candidate")


def _invoke(cmd: click.Command, *args: object) -> Result:
    return CliRunner().invoke(cmd, [str(a) for a in args])


def test_a_local_only_site_reviews_its_own_hard_examples(
    edge_harness: EdgeHarness,
    small_bundle: Path,
    small_clinc: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    h = edge_harness
    ids = {}
    for text in DISPUTES + OTHERS:
        r = h.post("/v1/infer", json={"text": text})
        assert r.status_code == 200, r.text
        ids[text] = r.json()["request_id"]
    confident = h.post("/v1/infer", json={"text": "what is my checking balance"}).json()
    kept = {rid for rid in ids.values() if _audit_candidate(h.data_dir, rid)}
    disputes = {ids[t] for t in DISPUTES} & kept
    assert len(disputes) >= 5  # a bundle without the intent is unsure about most
    assert _audit_candidate(h.data_dir, confident["request_id"]) is None
    rated = sorted(disputes)[0]
    voted = h.post("/v1/feedback", json={"request_id": rated, "helpful": False})
    assert voted.status_code == 201, voted.text
    with sqlite3.connect(h.data_dir / "aivos.db") as conn:
        queued = conn.execute(
            "SELECT count(*) FROM outbox WHERE data_class = 'hard_example'"
        ).fetchone()[0]
    assert queued == 0  # the policy keeps them local: nothing waits to leave

    # list: the site's candidates, clustered with its own bundle, with the rating
    site = ("--data-dir", h.data_dir, "--bundle", small_bundle)
    listed = _invoke(list_cmd, *site, "--json")
    assert listed.exit_code == 0, listed.output
    clusters = json.loads(listed.output)["clusters"]
    members = {m["request_id"]: m for c in clusters for m in c["members"]}
    assert set(members) == kept
    assert members[rated]["helpful"] is False
    assert {members[i]["text"] for i in disputes} <= set(DISPUTES)  # the site's own text
    # the disputes mostly share one cluster: label it as a new intent in one go
    best = max(clusters, key=lambda c: len({m["request_id"] for m in c["members"]} & disputes))
    in_best = {m["request_id"] for m in best["members"]}
    assert len(in_best & disputes) >= 3
    assert in_best <= disputes  # world cups and mountains are not card disputes
    shown = _invoke(list_cmd, *site)
    assert f"cluster c{best['id']}" in shown.output

    unknown = _invoke(label_cmd, *site, f"c{best['id']}", "--intent", "card_dispute")
    assert unknown.exit_code == 2
    assert "use --new-intent" in unknown.output
    r = _invoke(label_cmd, *site, f"c{best['id']}", "--new-intent", "card_dispute")
    assert r.exit_code == 0, r.output
    for rid in sorted(disputes - in_best):  # the rest one by one, now as a known intent
        r = _invoke(label_cmd, *site, rid, "--intent", "card_dispute")
        assert r.exit_code == 0, r.output
    others = sorted(kept - disputes)
    if others:
        r = _invoke(label_cmd, *site, *others, "--oos")
        assert r.exit_code == 0, r.output
    left = json.loads(_invoke(list_cmd, *site, "--json").output)
    assert left == {"clusters": []}

    # export: what --from-site merges; the merge gives the new class its rows
    out = tmp_path / "site-labels.jsonl"
    r = _invoke(export_cmd, "--data-dir", h.data_dir, "--out", out)
    assert r.exit_code == 0, r.output
    exported = {(e.text, e.label) for e in load_examples(out)}
    assert exported == {(t, "card_dispute") for t in DISPUTES if ids[t] in disputes} | {
        (t, "oos") for t in OTHERS if ids[t] in kept
    }
    merged = site_training_data(out, small_clinc, tmp_path / "bundles" / "v2")
    rows = load_examples(merged.train)
    assert merged.new_labels == ["card_dispute"]
    assert sum(e.label == "card_dispute" for e in rows) == len(disputes)
    assert len(rows) == merged.n_base + len(exported)  # none of the texts was in the base
    assert merged.val == f"{small_clinc}#val"
