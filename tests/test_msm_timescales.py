"""Tests of mdcvkit.msm.implied_timescales: physics oracle, agreement with deeptime, error contracts.

The oracle (tests/msm_cases.py) is overdamped Langevin dynamics in a 1-D double well, whose
slowest relaxation time comes from a fine-grid Smoluchowski generator. The checks shared by
all of mdcvkit.msm (trajectories, dt from the time coordinate, bad input) are tested here.
"""

import warnings

import numpy as np
import pytest
import xarray as xr
from deeptime.markov import TransitionCountEstimator
from deeptime.markov.msm import MarkovStateModel, MaximumLikelihoodMSM
from msm_cases import (
    DT_FRAME,
    LAGS,
    N_CLUSTERS,
    as_dataarray,
    exact_slowest_timescale,
    four_state_chain_cv,
    simulate_double_well,
)

from mdcvkit import msm


@pytest.fixture(scope="module")
def double_well():
    return simulate_double_well()


@pytest.fixture(scope="module")
def double_well_its(double_well):
    return msm.implied_timescales(double_well, lags=LAGS, n_clusters=N_CLUSTERS, n_timescales=2, dt=DT_FRAME,
                                  n_samples=20, seed=0)


@pytest.fixture(scope="module")
def chain_cv():
    return four_state_chain_cv()


# ---------------------------------------------------------------------------------------------------------
# physics oracle
# ---------------------------------------------------------------------------------------------------------
def test_exact_reference_is_grid_converged():
    assert exact_slowest_timescale(1000) == pytest.approx(exact_slowest_timescale(4000), rel=1e-4)


def test_double_well_slowest_timescale_matches_generator(double_well_its):
    exact = exact_slowest_timescale()
    slowest = double_well_its.isel(process=0)
    converged = slowest.sel(lag=10)  # 0.5 time units, ten times the relaxation inside a well
    inside = converged.lower <= exact <= converged.upper
    assert inside or abs(float(converged.timescales) / exact - 1) < 0.10, (exact, converged)
    # flat beyond a modest lag: every lag >= 5 frames within 10 % of the exact value
    np.testing.assert_allclose(slowest.timescales.sel(lag=[5, 10, 20]), exact, rtol=0.10)
    # the processes are ordered: the second one is much faster
    assert float(double_well_its.timescales.sel(lag=10, process=2)) < 0.2 * exact


def test_implied_timescales_dataset_layout(double_well_its):
    ds = double_well_its
    assert ds.timescales.dims == ("lag", "process")
    assert set(ds.data_vars) >= {"timescales", "mean", "lower", "upper", "n_states", "centers"}
    np.testing.assert_array_equal(ds.lag, LAGS)
    np.testing.assert_allclose(ds.lag_time, np.array(LAGS) * DT_FRAME)
    np.testing.assert_array_equal(ds.process, [1, 2])
    for name in ("timescales", "mean", "lower", "upper"):
        assert ds[name].attrs["units"] == "ps" and ds[name].attrs["long_name"]
    assert ds.attrs["units"] == "ps" and ds.attrs["long_name"] == "implied timescales"
    assert np.all(ds.lower <= ds.upper)
    assert np.all(ds.n_states == N_CLUSTERS)


# ---------------------------------------------------------------------------------------------------------
# the wrapper adds, it does not change: deeptime on the same discrete trajectory
# ---------------------------------------------------------------------------------------------------------
def _deeptime_timescales(dtrajs, lag, n_states, k):
    estimator = TransitionCountEstimator(lagtime=lag, count_mode="effective", n_states=n_states)
    counts = estimator.fit_fetch(dtrajs)
    return MaximumLikelihoodMSM(reversible=True).fit_fetch(counts.submodel_largest()).timescales(k)


def test_ml_timescales_identical_to_deeptime(double_well, double_well_its):
    centers = double_well_its.centers.values
    dtrajs = [np.argmin(np.abs(x[:, None] - centers[:, 0][None, :]), axis=1) for x in double_well]
    for lag in LAGS:
        expected = _deeptime_timescales(dtrajs, lag, N_CLUSTERS, 2) * DT_FRAME
        np.testing.assert_allclose(double_well_its.timescales.sel(lag=lag), expected, rtol=1e-12)


def test_discrete_trajectory_given_as_cv_gives_deeptime_timescales():
    model = MarkovStateModel(np.array([[0.95, 0.04, 0.01], [0.05, 0.90, 0.05], [0.01, 0.04, 0.95]]))
    dtrajs = [model.simulate(3000, seed=s) for s in (3, 4)]
    ds = msm.implied_timescales([d.astype(float) for d in dtrajs], lags=[1, 3], n_clusters=3, n_timescales=2,
                                n_samples=5)
    np.testing.assert_allclose(np.sort(ds.centers.values[:, 0]), [0, 1, 2])
    for lag in (1, 3):
        expected = _deeptime_timescales(dtrajs, lag, 3, 2)  # labels permuted: same up to the MLE tolerance
        np.testing.assert_allclose(ds.timescales.sel(lag=lag), expected, rtol=1e-7)
    assert ds.attrs["units"] == "frames"  # no dt, no time coordinate


def test_seed_gives_identical_results(chain_cv):
    _, cv = chain_cv
    first = msm.implied_timescales(cv, lags=[1, 2], n_clusters=4, n_timescales=2, n_samples=10, seed=3)
    second = msm.implied_timescales(cv, lags=[1, 2], n_clusters=4, n_timescales=2, n_samples=10, seed=3)
    other = msm.implied_timescales(cv, lags=[1, 2], n_clusters=4, n_timescales=2, n_samples=10, seed=4)
    xr.testing.assert_identical(first, second)
    assert not np.allclose(first["mean"], other["mean"])


# ---------------------------------------------------------------------------------------------------------
# several trajectories stay separate; dt from the time coordinate
# ---------------------------------------------------------------------------------------------------------
def test_dataarray_trajectories_stay_separate(double_well, double_well_its):
    data = as_dataarray(double_well, DT_FRAME)
    from_dataarray = msm.implied_timescales(data, lags=LAGS, n_clusters=N_CLUSTERS, n_timescales=2,
                                            n_samples=20, seed=0)
    xr.testing.assert_allclose(from_dataarray, double_well_its, rtol=1e-12)  # dt read from time
    joined = msm.implied_timescales(np.concatenate(double_well), lags=LAGS, n_clusters=N_CLUSTERS,
                                    n_timescales=2, dt=DT_FRAME, n_samples=20, seed=0)
    assert not np.allclose(joined.timescales, double_well_its.timescales, rtol=1e-6)


def test_disconnected_trajectories_warn_and_use_largest_set():
    rng = np.random.default_rng(0)
    pieces = [-1.0 + 0.1 * rng.standard_normal(200), 1.0 + 0.1 * rng.standard_normal(400),
              -1.0 + 0.1 * rng.standard_normal(200)]
    with pytest.warns(UserWarning, match=r"not connected.*lag=1: 2 of 4 states dropped \(50\.0% of frames\)"):
        ds = msm.implied_timescales(pieces, lags=[1], n_clusters=4, n_timescales=1, n_samples=5)
    assert int(ds.n_states.sel(lag=1)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # joined into one trajectory, left -> right -> left connects them
        joined = msm.implied_timescales(np.concatenate(pieces), lags=[1], n_clusters=4, n_timescales=1,
                                        n_samples=5)
    assert int(joined.n_states.sel(lag=1)) == 4


def test_trajectories_that_never_return_are_rejected():
    with pytest.raises(ValueError, match=r"at lag=1 no two clusters are connected.*pass fewer clusters"):
        msm.implied_timescales(np.linspace(0, 1, 100), lags=[1], n_clusters=10, n_samples=2)


def test_time_coordinate_that_restarts_needs_trajectory_coordinate(double_well):
    data = as_dataarray(double_well[:2], DT_FRAME).drop_vars("trajectory")
    with pytest.raises(ValueError, match=r"'time' coordinate of trajs does not increase at frame 3000.*"
                                         r"'trajectory' coordinate"):
        msm.implied_timescales(data, lags=[1], n_clusters=5)


def test_inputs_are_not_modified(double_well):
    data = as_dataarray(double_well[:2], DT_FRAME)
    before = data.copy(deep=True)
    array = double_well[0][:, None].copy()
    msm.implied_timescales([data], lags=[1], n_clusters=5, n_timescales=1, n_samples=2)
    msm.ck_test(array, lag=1, n_sets=2, mlags=2, n_clusters=5, n_samples=2)
    xr.testing.assert_identical(data, before)
    np.testing.assert_array_equal(array, double_well[0][:, None])


# ---------------------------------------------------------------------------------------------------------
# error contracts
# ---------------------------------------------------------------------------------------------------------
SHORT = np.sin(0.7 * np.arange(50))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lags": [1, 50]}, r"lag 50 is not smaller than the shortest trajectory .*50 frames.*lags below 50"),
        ({"lags": [0, 1]}, r"lags=\[0, 1\] must be positive integers.*got \[0\]"),
        ({"lags": [-2]}, r"must be positive integers"),
        ({"lags": [1.5, 2]}, r"must be positive integers \(numbers of frames\).*np.round\(t / dt\)"),
        ({"lags": []}, r"non-empty"),
        ({"n_clusters": 200}, r"n_clusters=200 is larger than the number of frames \(130\)"),
        ({"n_timescales": 10}, r"n_timescales=10 must be smaller than n_clusters=10"),
        ({"n_samples": 1}, r"n_samples=1 must be an integer >= 2"),
        ({"seed": -1}, r"seed=-1 must be an integer between 0 and 2\*\*32 - 1"),
        ({"dt": -1.0}, r"dt=-1.0 must be a positive number of ps per frame"),
    ],
)
def test_implied_timescales_rejects_bad_input(kwargs, match):
    settings = {"lags": [1, 2], "n_clusters": 10, "n_samples": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        msm.implied_timescales([SHORT, np.sin(0.9 * np.arange(80))], **settings)


def test_nan_in_cv_is_rejected():
    cv = np.sin(0.3 * np.arange(100))
    cv[17] = np.nan
    with pytest.raises(ValueError, match=r"trajs\[1\] holds 1 NaN or infinite values \(first at frame 17\)"):
        msm.implied_timescales([SHORT, cv], lags=[1], n_clusters=5)
    data = xr.DataArray(cv, dims=("frame",), coords={"trajectory": ("frame", np.repeat([0, 1], 50))})
    with pytest.raises(ValueError, match=r"trajs \(trajectory=0\) holds 1 NaN or infinite values"):
        msm.ck_test(data, lag=1, n_sets=2, n_clusters=5)


def test_bad_cv_types_and_shapes():
    with pytest.raises(TypeError, match="pass an xarray.DataArray"):
        msm.implied_timescales("cv.xtc", lags=[1])
    with pytest.raises(ValueError, match=r"shape \(10, 2, 3\).*\(n_frames, n_cv\)"):
        msm.implied_timescales(np.zeros((10, 2, 3)), lags=[1])
    with pytest.raises(ValueError, match=r"different numbers of CVs \[1, 2\]"):
        msm.implied_timescales([np.zeros(10), np.zeros((10, 2))], lags=[1])
