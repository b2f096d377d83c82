"""Every consumer of a bundle's confidence on the score the edge serves (shared/ood.py's
MSP x sqrt(typicality) for a bundle with ``ood``, MSP for one without): the rollout's
quality gate, the quick first bundle, the hard-example band and `aivos doctor`'s check of
the router's threshold overrides. Real bundles: the session's small one, an MSP copy of
it (its ``ood`` removed, as a bundle built before the field), and a quick bundle."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from aivos.cloud.fleet.quality_gate import ServedScorer, evaluate_gate
from aivos.cloud.modelbuild.frozen_build import build_frozen_bundle
from aivos.edge.candidates import candidate_band, candidate_reason
from aivos.edge.doctor import Box
from aivos.edge.doctor.checks import check_router
from aivos.edge.intent.evaluate import evaluate
from aivos.edge.intent.runtime import IntentModel
from aivos.edge.results import Understood
from aivos.edge.router import MSP_SCORE, RouterPolicy, route, served_score
from aivos.shared.bundle import load_bundle_manifest, write_manifest
from aivos.shared.datasets import OOS_LABEL, Example, load_examples
from aivos.shared.ood import OOD_FILE, OodStats
from aivos.shared.ood import SCORE as OOD_SCORE


def _msp_copy(bundle: Path, dest: Path) -> Path:
    """`bundle` without its out-of-scope statistics: served on MSP, as before `ood`."""
    shutil.copytree(bundle, dest)
    manifest = load_bundle_manifest(dest)
    (dest / OOD_FILE).unlink()
    files = {k: v for k, v in manifest.files.items() if k != OOD_FILE}
    write_manifest(
        dest,
        msgspec.structs.replace(
            manifest, ood=None, files=files, bundle_version=f"{manifest.bundle_version}-msp"
        ),
    )
    return dest


def _runtime_rows(model: IntentModel, texts: list[str]) -> list[str]:
    """What the edge answers each text alone: the intent, or "oos" when out of scope."""
    out = []
    for text in texts:
        p = model.classify(text)
        out.append(p.intent if p.in_scope else OOS_LABEL)
    return out


def _rates(got: list[str], rows: list[Example]) -> tuple[float, float]:
    ins = [g == e.label for g, e in zip(got, rows, strict=True) if e.label != OOS_LABEL]
    oos = [g == OOS_LABEL for g, e in zip(got, rows, strict=True) if e.label == OOS_LABEL]
    return round(sum(ins) / len(ins), 4), round(sum(oos) / len(oos), 4)


@pytest.fixture(scope="module")
def heldout(small_clinc: Path) -> list[Example]:
    return [*load_examples(f"{small_clinc}#val"), *load_examples(f"{small_clinc}#test")]


def test_the_gate_judges_each_bundle_as_the_edge_serves_it(
    tmp_path: Path, small_bundle: Path, heldout: list[Example]
) -> None:
    msp_bundle = _msp_copy(small_bundle, tmp_path / "msp")
    texts = [e.text for e in heldout]
    served = IntentModel.load(small_bundle, spelling=False)
    assert served.ood is not None  # the build writes the statistics
    as_served = _runtime_rows(served, texts)
    as_msp = _runtime_rows(IntentModel.load(msp_bundle, spelling=False), texts)
    # the two scores disagree on some rows, so judging the new bundle on MSP would differ
    assert as_served != as_msp

    # the gate's per-row decisions are the runtime's, each bundle on its own score
    assert ServedScorer(small_bundle).predict(texts)[0] == as_served
    assert ServedScorer(msp_bundle).predict(texts)[0] == as_msp

    # a golden query that fails: the edge rejects it
    oos_text = next(t for t, got in zip(texts, as_served, strict=True) if got == OOS_LABEL)
    golden = [Example(oos_text, "balance")]
    report = evaluate_gate(small_bundle, msp_bundle, heldout, golden)
    manifest = load_bundle_manifest(small_bundle)
    assert manifest.ood is not None
    assert (report.candidate.score, report.candidate.threshold) == (
        OOD_SCORE,
        pytest.approx(manifest.ood.threshold),
    )
    assert (report.baseline.score, report.baseline.threshold) == (
        MSP_SCORE,
        pytest.approx(manifest.threshold),
    )
    cand, base = report.candidate, report.baseline
    assert (cand.in_scope_accuracy, cand.oos_recall) == _rates(as_served, heldout)
    assert (base.in_scope_accuracy, base.oos_recall) == _rates(as_msp, heldout)
    # a golden miss reports the confidence the edge serves, on its scale
    [miss] = report.golden_misses
    assert miss.got == OOS_LABEL
    assert miss.confidence == pytest.approx(served.classify(oos_text).confidence, abs=1e-4)


def test_the_quick_bundle_carries_the_score_its_runtime_serves(
    tmp_path: Path, small_clinc: Path
) -> None:
    out = tmp_path / "quick"
    manifest = build_frozen_bundle(small_clinc, out, console=Console(file=io.StringIO()))
    assert manifest.ood is not None and manifest.ood.score == OOD_SCORE
    assert OOD_FILE in manifest.files and (out / OOD_FILE).is_file()
    assert load_bundle_manifest(out) == manifest  # ood.npz hashed like the model
    model = IntentModel.load(out, spelling=False)
    assert model.ood is not None and model.threshold == manifest.ood.threshold
    val = load_examples(f"{small_clinc}#val")
    report = evaluate(model, val, latency_samples=0)
    assert report.oos_score == OOD_SCORE
    # the manifest's validation figures are the served score's, as the runtime measures
    # them; within 2 rows: the int8 graph quantizes activations per run, so the runtime's
    # batches of 4 and the build's of 64 move a score near the threshold
    n_in, n_oos = report.n_in_scope, report.n_oos
    assert (n_in, n_oos) == (manifest.metrics["val_n_in_scope"], manifest.metrics["val_n_oos"])
    got_in, want_in = report.in_scope_accuracy, manifest.metrics["val_in_scope_accuracy"]
    got_oos, want_oos = report.oos_recall, manifest.metrics["val_oos_recall"]
    assert abs(got_in - want_in) * n_in <= 2 + 1e-6, (got_in, want_in)
    assert abs(got_oos - want_oos) * n_oos <= 2 + 1e-6, (got_oos, want_oos)
    assert report.msp_oos_recall is not None
    assert abs(report.msp_oos_recall - manifest.metrics["val_msp_oos_recall"]) * n_oos <= 2

    # fitted on the in-scope rows only, one mean per intent (`oos` rows left out)
    stats = OodStats.load(out / OOD_FILE)
    in_scope = sorted(manifest.labels.index(k) for k in manifest.labels if k != OOS_LABEL)
    assert stats.label_index.tolist() == in_scope
    assert stats.means.shape == (len(in_scope), manifest.embedding_dim)


def _low_confidence(model: IntentModel, texts: list[str]) -> int:
    """How many of `texts` the hard-example keeper takes as low-confidence local answers,
    with the band of the score `model` serves."""
    band = candidate_band(served_score(model))
    n = 0
    for p in model.classify_batch(texts):
        decided = route(RouterPolicy(), p.intent, p.confidence, model.threshold, OOS_LABEL)
        u = Understood("r", 0.0, p, model.version, [], decided)
        n += candidate_reason(u, band) == "low_confidence"
    return n


def test_the_hard_example_band_keeps_a_like_share_on_either_score(
    small_bundle: Path, heldout: list[Example]
) -> None:
    texts = [e.text for e in heldout]
    msp = IntentModel.load(small_bundle, spelling=False, ood=False)
    ood = IntentModel.load(small_bundle, spelling=False)
    assert (served_score(msp), served_score(ood)) == (MSP_SCORE, OOD_SCORE)
    on_msp, on_ood = _low_confidence(msp, texts), _low_confidence(ood, texts)
    # the MSP's 0.1 above the ood threshold (0.04 here) kept 15 rows against MSP's 4
    assert abs(on_ood - on_msp) <= 0.015 * len(texts), (on_msp, on_ood)


def _box(data: Path, bundle: Path, *router: str) -> Box:
    data.mkdir(parents=True)
    lines = ['site_id = "site-1"', "[model]", f'bundle = "{bundle}"', *router]
    (data / "config.toml").write_text("\n".join(lines) + "\n")
    return Box.load(data)


def test_doctor_names_msp_overrides_on_a_bundle_serving_the_ood_score(
    tmp_path: Path, small_bundle: Path
) -> None:
    override = ["[router.intents.balance]", "threshold = 0.8"]
    [found] = check_router(_box(tmp_path / "a", small_bundle, *override))
    assert found.status == "warn"
    assert "balance=0.8" in found.message and "stricter" in found.message
    assert found.detail["served_score"] == OOD_SCORE
    # re-derived and declared: fine
    declared = ["[router]", f'threshold_score = "{OOD_SCORE}"', *override]
    [found] = check_router(_box(tmp_path / "b", small_bundle, *declared))
    assert found.status == "ok", found.message
    # the same MSP overrides on a bundle served on MSP: fine
    msp_bundle = _msp_copy(small_bundle, tmp_path / "msp")
    [found] = check_router(_box(tmp_path / "c", msp_bundle, *override))
    assert (found.status, found.detail["served_score"]) == ("ok", MSP_SCORE)
    # no overrides at all
    [found] = check_router(_box(tmp_path / "d", small_bundle))
    assert found.status == "ok" and "no per-intent threshold overrides" in found.message
