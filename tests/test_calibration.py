import pickle

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from reid_lightning.similarity.calibration import (
    Calibration,
    IsotonicCalibration,
    LogisticCalibration,
    calibration_pairs,
    pair_hits,
    reliability_diagram,
)


@pytest.fixture
def noisy_scores():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, size=400)
    hits = rng.uniform(0, 1, size=400) < scores**2
    return scores, hits


def test_isotonic_seed_example():
    calibration = IsotonicCalibration()
    calibration.fit([0, 0.5, 1], [0, 1, 1])
    calibrated = calibration.predict([0, 0.25, 0.8])
    # Plateaus: 0 at centre 0, 1 at centre 0.75 -> linear in between, clipped at 1 beyond 0.75.
    np.testing.assert_allclose(calibrated, [0.0, 1 / 3, 1.0], atol=1e-5)
    assert np.all(np.diff(calibrated) > 0)


def test_isotonic_follows_the_documented_rule():
    tie_break = 1e-3
    calibration = IsotonicCalibration(tie_break=tie_break).fit([0, 1, 2, 3], [0, 1, 0, 1])
    # Isotonic fit: 0 | 0.5, 0.5 | 1 -> centres 0, 1.5, 3 (collinear, so PCHIP is the line x / 3).
    raw = np.array([-1.0, 0.0, 0.75, 2.0, 3.0, 4.0])
    plateau = np.clip(raw, 0, 3) / 3
    order_term = 0.5 + np.arctan(raw / 3 - 0.5) / np.pi
    expected = (1 - tie_break) * plateau + tie_break * order_term
    np.testing.assert_allclose(calibration.predict(raw), expected, rtol=0, atol=1e-12)


def test_isotonic_matches_sklearn_at_plateau_centres(noisy_scores):
    scores, hits = noisy_scores
    calibration = IsotonicCalibration(tie_break=0.0).fit(scores, hits)
    reference = IsotonicRegression().fit(scores, hits)
    centres = np.asarray(calibration.state["centres"])
    assert centres.size > 3
    np.testing.assert_allclose(calibration.predict(centres), reference.predict(centres), atol=1e-12)


def test_isotonic_is_monotone_bounded_and_strict(noisy_scores):
    scores, hits = noisy_scores
    calibration = IsotonicCalibration().fit(scores, hits)
    grid = np.linspace(-0.5, 1.5, 5001)  # includes both clipped tails
    calibrated = calibration.predict(grid)
    assert np.all(calibrated >= 0) and np.all(calibrated <= 1)
    assert np.all(np.diff(calibrated) > 0)
    # Without the tie-break term the plateaus and tails tie, so the term is what orders them.
    untied = IsotonicCalibration(tie_break=0.0).fit(scores, hits).predict(grid)
    assert np.any(np.diff(untied) == 0)
    assert np.all(np.diff(untied) >= 0)
    assert np.max(np.abs(calibrated - untied)) <= 1e-6


def test_isotonic_breaks_ties_inside_a_plateau_in_raw_score_order():
    # Hits 1, 0, 1, 0 pool into one plateau of 0.5 in the middle of the range.
    calibration = IsotonicCalibration().fit([0, 1, 2, 3, 4, 5], [0, 1, 0, 1, 0, 1])
    raw = np.array([1.2, 1.2000001, 1.5, 2.5, 5.0, 7.0, 9.0])
    calibrated = calibration.predict(raw)
    assert np.all(np.diff(calibrated) > 0)
    np.testing.assert_allclose(calibrated[-3:], 1.0, atol=1e-6)


def test_logistic_matches_sklearn(noisy_scores):
    scores, hits = noisy_scores
    grid = np.linspace(-1, 2, 31)
    reference = LogisticRegression(C=0.5).fit(scores[:, None], hits).predict_proba(grid[:, None])[:, 1]
    calibrated = LogisticCalibration(C=0.5).fit(scores, hits).predict(grid)
    np.testing.assert_allclose(calibrated, reference, atol=1e-6)
    assert np.all(np.diff(calibrated) > 0)


@pytest.mark.parametrize("calibration_class", [LogisticCalibration, IsotonicCalibration])
def test_predict_keeps_shape_type_and_nan(calibration_class, noisy_scores):
    scores, hits = noisy_scores
    calibration = calibration_class().fit(
        torch.tensor(scores).reshape(20, 20), torch.tensor(hits).reshape(20, 20)
    )
    matrix = torch.tensor([[0.1, float("nan"), 0.9], [0.5, 0.2, float("nan")]])
    calibrated = calibration.predict(matrix)
    assert isinstance(calibrated, torch.Tensor) and calibrated.shape == (2, 3)
    assert calibrated.dtype == torch.float64
    assert torch.equal(torch.isnan(calibrated), torch.isnan(matrix))
    np.testing.assert_allclose(calibrated[0, [0, 2]].numpy(), calibration.predict([0.1, 0.9]), atol=1e-7)
    assert calibration.predict(0.5).shape == ()


@pytest.mark.parametrize("calibration_class", [LogisticCalibration, IsotonicCalibration])
def test_bad_calibration_inputs_raise(calibration_class):
    calibration = calibration_class()
    with pytest.raises(RuntimeError, match="not fitted"):
        calibration.predict([0.5])
    with pytest.raises(ValueError, match="NaN"):
        calibration.fit([0.1, np.nan, 0.3], [0, 1, 1])
    with pytest.raises(ValueError, match="both matching"):
        calibration.fit([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="same shape"):
        calibration.fit([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        calibration.fit([0.1, 0.2, 0.3], [0, 2, 1])


@pytest.mark.parametrize("calibration_class", [LogisticCalibration, IsotonicCalibration])
def test_save_load_and_pickle_round_trip(calibration_class, noisy_scores, tmp_path):
    scores, hits = noisy_scores
    calibration = calibration_class().fit(scores, hits)
    grid = np.linspace(-0.2, 1.2, 57)
    path = tmp_path / "calibration.json"
    calibration.save(path)
    loaded = Calibration.load(path)
    assert type(loaded) is calibration_class
    np.testing.assert_array_equal(loaded.predict(grid), calibration.predict(grid))
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(calibration)).predict(grid), calibration.predict(grid)
    )
    other = IsotonicCalibration if calibration_class is LogisticCalibration else LogisticCalibration
    with pytest.raises(TypeError, match=f"expected a {other.__name__}"):
        other.load(path)


def test_pair_hits_with_and_without_ids():
    hits, valid = pair_hits(query_labels=np.array(["a", "b"]), gallery_labels=np.array(["b", "a", "a"]))
    np.testing.assert_array_equal(hits, [[False, True, True], [True, False, False]])
    assert valid.all()
    _, valid = pair_hits(
        query_labels=["a", "b"], gallery_labels=["b", "a", "a"], query_ids=[5, 6], gallery_ids=[6, 7, 5]
    )
    np.testing.assert_array_equal(valid, [[True, True, False], [False, True, True]])
    with pytest.raises(ValueError, match="together"):
        pair_hits(query_labels=["a"], gallery_labels=["a"], query_ids=[1])


def test_calibration_pairs_drop_self_pairs_and_nan():
    scores = np.arange(12, dtype=float).reshape(3, 4)
    scores[2, 3] = np.nan
    pair_scores, pair_hit = calibration_pairs(
        scores,
        query_labels=["a", "b", "a"],
        gallery_labels=["a", "b", "a", "c"],
        query_ids=[10, 11, 12],
        gallery_ids=[11, 20, 10, 21],
    )
    # Self-pairs: (0, 2) id 10 and (1, 0) id 11; unscored: (2, 3).
    np.testing.assert_array_equal(pair_scores, [0, 1, 3, 5, 6, 7, 8, 9, 10])
    np.testing.assert_array_equal(pair_hit, [True, False, False, True, False, False, True, False, True])
    with pytest.raises(ValueError, match=r"shape \(3, 4\).*\(2, 4\)"):
        calibration_pairs(scores, query_labels=["a", "b"], gallery_labels=["a", "b", "a", "c"])


def test_calibration_pairs_subsample_without_duplicates():
    rng = np.random.default_rng(1)
    scores = rng.uniform(size=(30, 40))
    scores[rng.uniform(size=scores.shape) < 0.1] = np.nan
    labels = {"query_labels": np.arange(30) % 5, "gallery_labels": np.arange(40) % 5}
    ids = {"query_ids": np.arange(30), "gallery_ids": np.arange(40)}
    all_scores, all_hits = calibration_pairs(scores, **labels, **ids)
    assert all_scores.size == np.sum(~np.isnan(scores)) - np.sum(~np.isnan(scores.diagonal()))
    sampled, sampled_hits = calibration_pairs(scores, **labels, **ids, max_pairs=200, seed=3)
    assert sampled.size == 200 and np.unique(sampled).size == 200
    lookup = dict(zip(all_scores.tolist(), all_hits.tolist()))
    assert all(lookup[score] == hit for score, hit in zip(sampled.tolist(), sampled_hits.tolist()))
    again, _ = calibration_pairs(scores, **labels, **ids, max_pairs=200, seed=3)
    np.testing.assert_array_equal(again, sampled)


def test_reliability_diagram_ece_and_bars_with_empty_bin():
    scores = np.array([0.1, 0.2, 0.6, 0.7, 0.9, 1.0])
    hits = np.array([0, 1, 1, 1, 0, 1])
    ax = Figure().subplots()
    ece = reliability_diagram(scores, hits, ax=ax, num_bins=4)
    # Bins [0, .25): rate .5, mean .15 | [.25, .5): empty | [.5, .75): 1 vs .65 | [.75, 1]: .5 vs .95
    assert ece == pytest.approx((2 * 0.35 + 2 * 0.35 + 2 * 0.45) / 6)
    bars = ax.patches
    assert [bar.get_height() for bar in bars] == pytest.approx([0.5, 1.0, 0.5])
    assert [bar.get_x() + bar.get_width() / 2 for bar in bars] == pytest.approx([0.125, 0.625, 0.875])
    assert all(bar.get_width() == pytest.approx(0.25) for bar in bars)


def test_reliability_diagram_of_perfect_calibration_and_own_figure():
    scores = np.repeat([0.05, 0.55], 20)
    hits = np.r_[np.zeros(19), 1, np.zeros(9), np.ones(11)]
    ece = reliability_diagram(scores, hits)
    assert ece == pytest.approx(0.0, abs=1e-12)
    figure = plt.gcf()
    assert [bar.get_height() for bar in figure.axes[0].patches] == pytest.approx([0.05, 0.55])
    plt.close(figure)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        reliability_diagram([0.5, 1.5], [0, 1], ax=Figure().subplots())


@pytest.mark.parametrize("knots,values", [
    ([0.0, 1.0], [0.2, 0.7]),
    ([0.0, 0.3, 1.0], [0.0, 0.9, 1.0]),
    ([0.0, 0.1, 0.5, 0.6, 1.0], [0.0, 0.05, 0.05, 0.8, 1.0]),  # a flat step and a steep rise
    ([-1.0, -0.2, 0.1, 0.4, 0.45, 0.9], [0.0, 0.1, 0.3, 0.31, 0.9, 1.0]),  # uneven widths
])
def test_runtime_monotone_cubic_equals_scipy_pchip(knots, values):
    from scipy.interpolate import PchipInterpolator

    from reid_lightning.runtime.calibration import monotone_cubic

    x = np.linspace(knots[0], knots[-1], 997)
    np.testing.assert_allclose(monotone_cubic(x, np.array(knots), np.array(values)),
                               PchipInterpolator(knots, values)(x), rtol=0, atol=1e-12)
