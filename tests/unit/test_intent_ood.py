"""The embedding-distance out-of-scope score (shared/ood.py) and its calibration, on
hand-made embeddings with a known answer."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from aivos.cloud.modelbuild.calibrate import choose_threshold, choose_threshold_on, scores_on
from aivos.shared.bundle import (
    FORMAT_VERSION,
    Manifest,
    OodCalibration,
    TrainingSummary,
    load_bundle_manifest,
    sha256_file,
    write_manifest,
)
from aivos.shared.errors import BundleTampered
from aivos.shared.ood import OodScorer, OodStats, fit, ledoit_wolf


def _clusters(seed: int = 0, n: int = 200, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Three classes around distinct means, with a shared anisotropic covariance."""
    rng = np.random.default_rng(seed)
    means = np.eye(3, d) * 4.0
    scale = np.linspace(0.2, 2.0, d)  # per-dimension spread: Euclidean != Mahalanobis
    y = np.repeat(np.arange(3), n)
    x = means[y] + rng.normal(size=(3 * n, d)) * scale
    return x.astype(np.float32), y


def test_distance_is_the_mahalanobis_distance_to_the_nearest_mean() -> None:
    x, y = _clusters()
    stats = fit(x, y, np.arange(3))
    queries = np.random.default_rng(1).normal(size=(5, x.shape[1])).astype(np.float32) * 3
    p = stats.precision.astype(np.float64)
    brute = np.array(
        [min(float((q - m) @ p @ (q - m)) for m in stats.means.astype(np.float64)) for q in queries]
    )
    np.testing.assert_allclose(OodScorer(stats).distance(queries), brute, rtol=1e-3, atol=1e-3)


def test_shared_covariance_weights_directions_by_their_spread() -> None:
    # Equal Euclidean steps from a mean: along the widest dimension the query is typical,
    # along the narrowest it is far out.
    x, y = _clusters()
    scorer = OodScorer(fit(x, y, np.arange(3)))
    d = x.shape[1]
    wide = np.zeros((1, d), np.float32)
    narrow = np.zeros((1, d), np.float32)
    wide[0, 0], wide[0, d - 1] = 4.0, 1.5
    narrow[0, 0], narrow[0, 1] = 4.0, 1.5
    assert scorer.distance(narrow)[0] > 10 * scorer.distance(wide)[0]


def test_ledoit_wolf_keeps_a_covariance_invertible_with_fewer_rows_than_dimensions() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 30))
    x -= x.mean(0)
    cov, shrinkage = ledoit_wolf(x)
    assert np.linalg.matrix_rank(x.T @ x) < 30  # the sample covariance alone is singular
    assert 0.0 < shrinkage <= 1.0
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    # many rows of a strongly anisotropic distribution: the sample covariance is good and far
    # from the scaled identity, so little shrinkage; an isotropic one is the target itself
    _, small = ledoit_wolf(rng.normal(size=(5000, 5)) * np.array([0.1, 0.5, 1, 3, 9]))
    _, large = ledoit_wolf(rng.normal(size=(5000, 5)))
    assert small < 0.01 < 0.5 < large


def test_typicality_and_score() -> None:
    x, y = _clusters()
    stats = fit(x, y, np.arange(3))
    held_out, _ = _clusters(seed=3)
    stats = stats.with_quantiles(OodScorer(stats).distance(held_out))
    scorer = OodScorer(stats)
    near = stats.means[:1]
    far = stats.means[:1] + 25.0
    typ = scorer.typicality(scorer.distance(np.concatenate([near, far])))
    assert typ[0] > 0.95 and typ[1] == 0.0
    # in-scope rows: the share at least as far out is uniform, so about half lie above 0.5
    assert 0.4 < float((scorer.typicality(scorer.distance(held_out)) > 0.5).mean()) < 0.6
    score = scorer.score(np.array([0.9, 0.9]), np.concatenate([near, far]))
    assert score[0] == pytest.approx(0.9 * np.sqrt(typ[0]))
    assert score[1] == 0.0  # a confident head does not rescue a query far from every intent


def test_statistics_round_trip(tmp_path: Path) -> None:
    x, y = _clusters()
    stats = fit(x, y, np.array([0, 2]))  # class 1's rows are left out (e.g. `oos`)
    stats = stats.with_quantiles(np.arange(10.0))
    loaded = OodStats.load(stats.save(tmp_path / "ood.npz"))
    assert (tmp_path / "ood.npz").is_file()
    assert loaded.means.shape == (2, x.shape[1]) and loaded.precision.dtype == np.float32
    np.testing.assert_array_equal(loaded.label_index, [0, 2])
    np.testing.assert_allclose(loaded.means[1], x[y == 2].mean(0), rtol=1e-5)
    np.testing.assert_array_equal(loaded.quantiles, stats.quantiles)


def test_threshold_on_any_score_matches_the_msp_rule() -> None:
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(3) * 0.3, size=400)
    labels = ["a", "b", "oos"]
    truth = np.asarray(labels)[rng.integers(0, 3, size=400)]
    pred = np.asarray(labels)[probs.argmax(1)]
    for budget in (0.0, 0.01, 0.05):
        t = choose_threshold(probs, list(truth), labels, "oos", budget)
        assert choose_threshold_on(probs.max(1), pred, truth, "oos", budget) == t
    # on another score, the same rule: at most the budget of in-scope accuracy is spent
    score = -rng.random(400) * 100
    t = choose_threshold_on(score, pred, truth, "oos", 0.02)
    base, _ = scores_on(score, pred, truth, -np.inf, "oos")
    acc, _ = scores_on(score, pred, truth, t, "oos")
    assert base - 0.02 <= acc and t > score.min()


def _bundle(tmp_path: Path, ood: OodCalibration | None, files: list[str]) -> Path:
    for name in files:
        (tmp_path / name).write_bytes(name.encode())
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        bundle_version="v1",
        labels=["a", "oos"],
        threshold=0.5,
        embedding_model_id="m",
        embedding_dim=4,
        max_length=8,
        quantization="int8",
        training=TrainingSummary("t", "v", 4, 2, 2, 1, True, 1.0),
        metrics={},
        files={name: sha256_file(tmp_path / name) for name in files},
        created_at="2026-01-01T00:00:00+00:00",
        ood=ood,
    )
    write_manifest(tmp_path, manifest)
    return tmp_path


def test_manifest_lists_and_hashes_the_statistics(tmp_path: Path) -> None:
    ood = OodCalibration(file="ood.npz", score="msp_x_sqrt_typicality", threshold=0.3)
    root = _bundle(tmp_path, ood, ["model.onnx", "tokenizer.json", "ood.npz"])
    assert load_bundle_manifest(root).ood == ood
    (root / "ood.npz").write_bytes(b"changed")  # the hash (and so the signature) covers it
    with pytest.raises(BundleTampered):
        load_bundle_manifest(root)


def test_manifest_naming_statistics_it_does_not_list_is_refused(tmp_path: Path) -> None:
    ood = OodCalibration(file="ood.npz", score="msp_x_sqrt_typicality", threshold=0.3)
    root = _bundle(tmp_path, ood, ["model.onnx", "tokenizer.json"])
    with pytest.raises(BundleTampered, match="ood.npz"):
        load_bundle_manifest(root)


def test_older_manifest_without_statistics_still_loads(tmp_path: Path) -> None:
    root = _bundle(tmp_path, None, ["model.onnx", "tokenizer.json"])
    raw = msgspec.json.decode((root / "manifest.json").read_bytes())
    del raw["ood"]  # as written before the field existed
    (root / "manifest.json").write_bytes(msgspec.json.encode(raw))
    assert load_bundle_manifest(root).ood is None
