"""Hard examples: which decisions are candidates (edge), the cloud's candidate store and its
labels (real SQLite cloud store fed with sync envelopes), and the from-fleet training rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aivos.cloud.console.clusters import ClusterCache, cluster_candidates
from aivos.cloud.ingest.candidates import CandidateStore
from aivos.cloud.ingest.store import CloudStore
from aivos.cloud.modelbuild.fromfleet import fleet_training_data, merge_reviewed
from aivos.edge.candidates import (
    CANDIDATE_BAND,
    CandidateKeeper,
    candidate_band,
    candidate_reason,
)
from aivos.edge.intent.runtime import Prediction
from aivos.edge.results import Understood
from aivos.edge.router import MSP_SCORE, Route
from aivos.edge.store import Store
from aivos.shared.datasets import Example, load_examples
from aivos.shared.errors import DataError, InvalidInput, NotFound
from aivos.shared.ood import SCORE as OOD_SCORE
from aivos.shared.residency import DataClass, ResidencyPolicy
from aivos.shared.syncwire import SyncEnvelope


def _understood(confidence: float, route: Route, intent: str = "balance") -> Understood:
    pred = Prediction(intent, confidence, True, np.zeros(4, dtype=np.float32), False, 5)
    return Understood("r1", 0.0, pred, "v1", [], route)


@pytest.mark.parametrize(
    ("confidence", "route", "expected"),
    [
        (0.2, Route("escalate", "out_of_scope", 0.5), "out_of_scope"),
        (0.9, Route("escalate", "open_ended", 0.5), "escalated"),
        (0.9, Route("escalate", "policy", 0.5), "escalated"),
        (0.55, Route("local", "default", 0.5), "low_confidence"),
        (0.61, Route("local", "default", 0.5), None),
        (0.9, Route("refuse", "policy", 0.5), None),
    ],
)
def test_candidate_reason(confidence: float, route: Route, expected: str | None) -> None:
    assert candidate_reason(_understood(confidence, route), band=0.1) == expected


def test_the_band_is_the_served_scores_own(tmp_path: Path) -> None:
    # an ood bundle's threshold is ~0.07 where the MSP's was ~0.5; its scores spread down to
    # it, so the MSP's 0.1 above it would keep 2.5-3x the share of traffic
    assert candidate_band(MSP_SCORE) == CANDIDATE_BAND == 0.1
    assert candidate_band(OOD_SCORE) == 0.04
    with pytest.raises(ValueError):
        candidate_band("softmax")
    ood_route = Route("local", "default", 0.07)
    assert candidate_reason(_understood(0.10, ood_route), candidate_band(OOD_SCORE)) == (
        "low_confidence"
    )
    assert candidate_reason(_understood(0.12, ood_route), candidate_band(OOD_SCORE)) is None
    with Store.open(tmp_path / "edge") as store:
        keeper = CandidateKeeper(store)
        assert (keeper.score, keeper.band) == (MSP_SCORE, 0.1)
        keeper.serve(OOD_SCORE)  # the agent loaded (or swapped to) an ood bundle
        assert (keeper.score, keeper.band) == (OOD_SCORE, 0.04)
        keeper.serve(MSP_SCORE)
        assert keeper.band == 0.1
        with pytest.raises(ValueError):
            keeper.serve("softmax")
        assert keeper.band == 0.1


def test_hard_examples_stay_on_site_unless_the_policy_names_them() -> None:
    assert ResidencyPolicy().rule(DataClass.HARD_EXAMPLE) == "local-only"
    policy = ResidencyPolicy.from_mapping({"classes": {"hard_example": "mask"}})
    assert policy.rule(DataClass.HARD_EXAMPLE) == "mask"


def _env(site: str, rid: str, seq: int, kind: str, payload: dict[str, object]) -> SyncEnvelope:
    return SyncEnvelope(
        id=f"{kind}-{rid}-{seq}",
        site=site,
        data_class=kind if kind == "audit" else "hard_example",
        kind="decision" if kind == "audit" else kind,
        seq=seq,
        created_at="2026-01-01T00:00:00+00:00",
        payload=payload,
    )


def _cand(rid: str, text: str, intent: str = "oos") -> dict[str, object]:
    return {
        "request_id": rid,
        "text": text,
        "intent": intent,
        "confidence": 0.31,
        "threshold": 0.5,
        "decision": "escalate",
        "reason": "out_of_scope",
        "route_reason": "out_of_scope",
        "answered_by": "cloud",
        "answer": "A cloud answer",
        "model_version": "v1",
    }


@pytest.fixture
def store(tmp_path: Path) -> CandidateStore:
    cloud = CloudStore(tmp_path / "cloud.db")
    cloud.upsert_many(
        [
            _env("a", "r1", 1, "candidate", _cand("r1", "I was charged twice for my card")),
            _env("a", "r2", 2, "candidate", _cand("r2", "my card got billed two times")),
            _env("b", "r3", 1, "candidate", _cand("r3", "what is the meaning of life", "weather")),
            _env("a", "r1", 3, "feedback", {"request_id": "r1", "helpful": True}),
            _env("a", "r1", 4, "feedback", {"request_id": "r1", "helpful": False}),
            _env("a", "x", 5, "audit", {"id": "x"}),
            _env("a", "bad", 6, "candidate", {"request_id": "bad"}),  # unreadable: skipped
        ]
    )
    candidates = CandidateStore(cloud)
    yield candidates
    cloud.close()


def test_candidates_with_latest_feedback(store: CandidateStore) -> None:
    found = {c.request_id: c for c in store.candidates()}
    assert set(found) == {"r1", "r2", "r3"}
    assert found["r1"].helpful is False  # the later rating wins
    assert found["r2"].helpful is None
    assert found["r1"].answer == "A cloud answer"
    assert found["r3"].site == "b"


def test_label_records_who_and_feeds_reviewed(store: CandidateStore) -> None:
    stored = store.label([("a", "r1"), ("a", "r2")], "new_intent", "card_dispute", "alice", ["x"])
    assert stored == "card_dispute"
    assert [c.request_id for c in store.candidates(unlabelled=True)] == ["r3"]
    labelled = store.candidates(unlabelled=False)
    assert {(c.label, c.label_kind, c.labelled_by) for c in labelled} == {
        ("card_dispute", "new_intent", "alice")
    }
    assert store.label([("b", "r3")], "oos", "", "bob") == "oos"
    assert sorted((r.text, r.label) for r in store.reviewed()) == [
        ("I was charged twice for my card", "card_dispute"),
        ("my card got billed two times", "card_dispute"),
        ("what is the meaning of life", "oos"),
    ]
    # a relabel replaces the label and its author
    store.label([("b", "r3")], "intent", "weather", "carol", ["weather"])
    r3 = next(c for c in store.candidates() if c.request_id == "r3")
    assert (r3.label, r3.labelled_by) == ("weather", "carol")


@pytest.mark.parametrize(
    ("kind", "label", "known", "field"),
    [
        ("intent", "Bad Name!", None, "label"),
        ("intent", "not_there", ["weather"], "label"),
        ("new_intent", "weather", ["weather"], "label"),
        ("new_intent", "oos", None, "label"),
        ("maybe", "x", None, "kind"),
    ],
)
def test_bad_labels_are_refused_and_store_nothing(
    store: CandidateStore, kind: str, label: str, known: list[str] | None, field: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        store.label([("a", "r1")], kind, label, "alice", known)
    assert err.value.field == field  # type: ignore[attr-defined]
    assert store.reviewed() == []


def test_unknown_candidate_labels_nothing(store: CandidateStore) -> None:
    with pytest.raises(NotFound, match="a/nope"):
        store.label([("a", "r1"), ("a", "nope")], "oos", "", "alice")
    assert store.reviewed() == []
    with pytest.raises(InvalidInput):
        store.label([], "oos", "", "alice")


def test_merge_reviewed_relabels_base_rows() -> None:
    from aivos.cloud.ingest.candidates import ReviewedExample

    base = [Example("Freeze my card", "freeze_account"), Example("hi", "greeting")]
    reviewed = [ReviewedExample("freeze my card ", "card_dispute", "a", "r1")]
    assert merge_reviewed(base, reviewed) == [
        Example("hi", "greeting"),
        Example("freeze my card ", "card_dispute"),
    ]


def test_fleet_training_data(store: CandidateStore, tmp_path: Path) -> None:
    base = tmp_path / "base.json"
    base.write_text(
        json.dumps(
            {
                "train": [["check my balance", "balance"], ["what is my balance", "balance"]],
                "val": [["balance please", "balance"]],
                "oos_train": [["sing", "oos"]],
                "oos_val": [],
            }
        )
    )
    with pytest.raises(DataError, match="no reviewed examples"):
        fleet_training_data(tmp_path / "cloud.db", base, tmp_path / "out")
    store.label([("a", "r1"), ("a", "r2")], "new_intent", "card_dispute", "alice")
    data = fleet_training_data(tmp_path, base, tmp_path / "out")  # the directory works too
    assert data.train == tmp_path / "out.fleet.jsonl"
    assert data.val == f"{base}#val"
    assert (data.n_base, data.n_reviewed, data.new_labels) == (3, 2, ["card_dispute"])
    rows = load_examples(data.train)
    assert [e.label for e in rows] == ["balance", "balance", "oos", "card_dispute", "card_dispute"]
    with pytest.raises(DataError, match="no cloud store"):
        fleet_training_data(tmp_path / "missing", base, tmp_path / "out")


def test_clusters_without_a_bundle_group_by_guess(store: CandidateStore) -> None:
    clusters = cluster_candidates(store.candidates(), None)
    assert [(c.top_intent, len(c.members)) for c in clusters] == [("oos", 2), ("weather", 1)]


def test_a_late_cloud_answer_fills_the_candidate(store: CandidateStore) -> None:
    # r2 was answered with a fallback; its durable job's cloud answer arrives later
    store.cloud.upsert_many(
        [_env("a", "r2", 7, "answer", {"request_id": "r2", "answer": "Your card was refunded."})]
    )
    found = {c.request_id: c for c in store.candidates()}
    assert (found["r2"].answer, found["r2"].answer_late) == ("Your card was refunded.", True)
    assert (found["r1"].answer, found["r1"].answer_late) == ("A cloud answer", False)


def test_cluster_cache_is_keyed_by_the_open_set(store: CandidateStore) -> None:
    cache = ClusterCache(max_entries=2)
    open_ = store.candidates(unlabelled=True)
    first = cache.clusters(open_, None)
    assert (cache.hits, cache.misses) == (0, 1)
    # the same set again: the grouping is reused, the members' fields are read fresh
    store.cloud.upsert_many([_env("b", "r3", 8, "feedback", {"request_id": "r3", "helpful": True})])
    again = cache.clusters(store.candidates(unlabelled=True), None)
    assert (cache.hits, cache.misses) == (1, 1)
    assert [[m.key for m in c.members] for c in again] == [
        [m.key for m in c.members] for c in first
    ]
    assert next(m for c in again for m in c.members if m.request_id == "r3").helpful is True
    # a label takes examples out of the open set: a new key, recomputed
    store.label([("a", "r1")], "oos", "", "alice")
    after = cache.clusters(store.candidates(unlabelled=True), None)
    assert (cache.hits, cache.misses) == (1, 2)
    assert sorted(m.request_id for c in after for m in c.members) == ["r2", "r3"]
    # a new candidate too; the cache stays bounded (least recently used out)
    store.cloud.upsert_many(
        [_env("b", "r4", 9, "candidate", _cand("r4", "set an alarm for six", "alarm"))]
    )
    cache.clusters(store.candidates(unlabelled=True), None)
    assert (cache.hits, cache.misses, len(cache)) == (1, 3, 2)
