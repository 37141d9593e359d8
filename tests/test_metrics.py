import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.linear_model import LinearRegression

import mdcvkit as mk
from mdcvkit.metrics import knn_regscore, knn_score, regscore, regscore_threshold, unwrap_angles


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
    # another comparison of two CVs replaces regscore, on the same sub-samples
    pairs = []
    threshold, scores = regscore_threshold(fit_cv, 1000, n_bootstrap=8, fraction=0.1, seed=0,
                                           score=lambda full, sub: pairs.append((full, sub)) or -1.0)  # fmt: skip
    assert len(pairs) == 8 and threshold == -1.0 and np.all(scores == -1.0)
    assert all(np.array_equal(full, fit_cv(None)) for full, _ in pairs)


def test_knn_regscore_accepts_smooth_maps_and_sees_lumped_frames():
    """1 for a smooth invertible map that regscore penalises; below 1 when one CV lumps frames the
    other separates (a fold), whichever of the two is passed first."""
    rng = np.random.default_rng(5)
    a = rng.uniform(-2, 2, size=(6000, 2))
    bent = np.c_[np.sinh(a[:, 0]) + a[:, 1], a[:, 1] + 0.5 * a[:, 0] ** 2]  # invertible, not affine
    assert regscore(a, bent) < 0.9 and regscore(bent, a) < 0.9  # measured 0.89, 0.85
    assert knn_regscore(a, bent) > 0.99  # measured 0.9988
    folded = np.c_[np.abs(a[:, 0]), a[:, 1]]  # frames at ±a₀ lumped together
    assert knn_regscore(a, folded) < 0.6 and knn_regscore(folded, a) == knn_regscore(a, folded)  # measured 0.46
    with pytest.raises(ValueError, match=r"a has 6000 frames but b has 10; evaluate both CVs on the same frames"):
        knn_regscore(a, bent[:10])


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
    with pytest.raises(ValueError, match=r"lengths=\[2000, 1000\] add up to 3000 frames but cv has 4000"):
        knn_score(cv, targets, lengths=[2000, 1000])


def test_unwrap_angles_makes_torsions_a_linear_reference():
    """On the shipped vacuum run (C7eq and C5), (φ, ψ) cut where the system never goes is a clean affine
    reference; the same angles explain only part of their own sines and cosines (see unwrap_angles)."""
    universe = mk.datasets.alanine_dipeptide("vacuum")
    group = universe.select_atoms("not name H*")
    dihedrals = mk.features.make_featurizer("dihedrals", group)
    positions = np.array([group.positions.copy() for _ in universe.trajectory[::10]])
    raw = np.degrees(mk.features.dihedral_angles(torch.as_tensor(positions, dtype=torch.float64),
                                                 dihedrals.quadruplets).numpy())  # fmt: skip
    angles = unwrap_angles(raw, (-240, -120))
    assert np.all((angles >= [-240, -120]) & (angles < [120, 240]))
    np.testing.assert_allclose(np.sin(np.radians(angles)), np.sin(np.radians(raw)), atol=1e-12)
    assert np.ptp(angles[:, 0]) < 180 and np.ptp(angles[:, 1]) < 300  # neither torsion is cut
    assert np.ptp(raw[:, 1]) > 350  # ψ of C5 crosses ±180° uncut
    trig = dihedrals(torch.as_tensor(positions)).numpy()
    assert regscore(angles, trig) < 0.85
    assert regscore(2.0 * angles + 3.0, angles) == pytest.approx(1.0)
    assert regscore(raw, angles) < 0.9  # the uncut angles are not an affine function of the cut ones
    np.testing.assert_allclose(unwrap_angles([-190.0, 370.0], 0), [170.0, 10.0])
    with pytest.raises(ValueError, match="one lower bound per column"):
        unwrap_angles(np.zeros((3, 2)), (0, 0, 0))


def test_weighted_scores_ignore_frames_without_weight():
    """Two CVs that agree where the weight is and differ elsewhere score 1 under those weights."""
    rng = np.random.default_rng(6)
    a = rng.uniform(-2, 2, size=(6000, 2))
    b = a.copy()
    elsewhere = a[:, 0] > 1
    b[elsewhere] = rng.normal(size=(elsewhere.sum(), 2))
    weights = np.where(elsewhere, 0.0, rng.uniform(0.5, 1.5, size=6000))
    assert regscore(a, b) < 0.9 and knn_regscore(a, b) < 0.9
    assert regscore(a, b, weights=weights) == pytest.approx(1.0)
    assert knn_regscore(a, b, weights=weights) > 0.99  # measured 0.9995 (0.56 unweighted)
    with pytest.raises(ValueError, match=r"weights has length 5 but there are 6000 frames"):
        knn_score(a, b, weights=np.ones(5))
    with pytest.raises(ValueError, match=r"weights are zero on every held-out frame"):
        knn_score(a, b, weights=np.r_[np.ones(10), np.zeros(5990)], test_fraction=0.01, seed=0)
