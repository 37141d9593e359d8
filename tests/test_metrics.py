import numpy as np
import pytest
import xarray as xr
from sklearn.linear_model import LinearRegression

from mdcvkit.metrics import knn_score, regscore, regscore_threshold


def test_regscore_matches_scikit_learn():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 2))
    b = np.c_[a @ [1.5, -2.0] + 0.5 * rng.normal(size=300), np.tanh(a[:, 0]) + rng.normal(size=300)]
    expected = LinearRegression().fit(a, b).score(a, b)
    assert regscore(a, b) == pytest.approx(expected, rel=1e-10)


def test_regscore_is_one_for_affine_maps_and_zero_for_independent_cvs():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 2))
    assert regscore(a, 3 * a[:, ::-1] - 7) == pytest.approx(1.0)
    assert regscore(a, rng.normal(size=500)) < 0.02


def test_weighted_regscore_equals_repeated_frames():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 1)), rng.normal(size=(50, 1))
    w = rng.integers(0, 4, 50)
    repeated = np.repeat(np.arange(50), w)
    assert regscore(a, b, weights=w) == pytest.approx(regscore(a[repeated], b[repeated]), rel=1e-10)


def test_regscore_errors():
    with pytest.raises(ValueError, match="a has 3 frames but b has 4"):
        regscore(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        regscore([0.0, np.nan], [1.0, 2.0])


def test_regscore_threshold_from_bootstrap():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 2))
    calls = []

    def fit_cv(indices):
        calls.append(indices)
        rows = np.arange(1000) if indices is None else indices
        direction = np.linalg.svd(x[rows] - x[rows].mean(0))[2][0]  # first principal axis of the sample
        return x @ direction

    threshold, scores = regscore_threshold(fit_cv, 1000, n_bootstrap=8, fraction=0.1, seed=0)
    assert len(calls) == 9 and calls[0] is None and all(len(c) == 100 for c in calls[1:])
    assert scores.shape == (8,) and threshold == pytest.approx(np.percentile(scores, 5))
    assert 0 <= threshold <= 1


def test_knn_score_sees_determined_and_undetermined_targets():
    rng = np.random.default_rng(4)
    t = np.cumsum(rng.normal(size=4000)) / 20  # a slow random walk
    cv = np.c_[np.sin(t), np.cos(t)]
    score = knn_score(cv, np.c_[np.cos(2 * t), rng.normal(size=4000)], lengths=[2000, 2000])
    per_target = score.attrs["per_target"]
    assert per_target[0] > 0.95 and per_target[1] < 0.1
    assert float(score) == pytest.approx(np.mean(per_target))
    # the trajectory coordinate of a CV DataArray gives the same blocks as explicit lengths
    labelled = xr.DataArray(cv, dims=("frame", "cv"), coords={"trajectory": ("frame", np.repeat([0, 1], 2000))})
    targets = np.c_[np.cos(2 * t), rng.normal(size=4000)]
    assert float(knn_score(labelled, targets)) == float(knn_score(cv, targets, lengths=[2000, 2000]))
