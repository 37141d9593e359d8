"""Tests of mdcvkit.msm: physics oracles, agreement with deeptime, error contracts.

The oracle is overdamped Langevin dynamics in a 1-D double well, simulated here with
numpy; its slowest relaxation time comes from the generator of the Smoluchowski
equation discretised on a fine grid (square-root approximation, a finite-volume
scheme that is exact for the stationary density and converges to the continuous
operator as the grid is refined).
"""

import warnings

import numpy as np
import pytest
import xarray as xr
from deeptime.markov import TransitionCountEstimator
from deeptime.markov.msm import MarkovStateModel, MaximumLikelihoodMSM
from scipy.linalg import eigh_tridiagonal

from mdcvkit import msm

BARRIER = 3.0  # kT, V(x) = BARRIER (x^2 - 1)^2
DIFFUSION = 1.0  # length^2 / time
DT_FRAME = 0.05  # time between saved frames
N_CLUSTERS = 30
LAGS = [1, 2, 5, 10, 20]


def _double_well_force(x):
    return -4.0 * BARRIER * x * (x * x - 1.0)


def simulate_double_well(n_walkers=20, n_frames=3000, stride=50, seed=1):
    """Euler–Maruyama trajectories of dx = -D V'(x) dt + sqrt(2 D) dW (kT = 1), one per walker."""
    rng = np.random.default_rng(seed)
    step = DT_FRAME / stride
    x = rng.choice([-1.0, 1.0], size=n_walkers)
    out = np.empty((n_frames, n_walkers))
    for frame in range(n_frames):
        for _ in range(stride):
            noise = np.sqrt(2 * DIFFUSION * step) * rng.standard_normal(n_walkers)
            x = x + DIFFUSION * _double_well_force(x) * step + noise
        out[frame] = x
    return list(out.T)


def exact_slowest_timescale(n_cells=2000, lo=-2.5, hi=2.5):
    """Slowest relaxation time of the double well from a fine-grid Smoluchowski rate matrix.

    Rates between neighbouring cells k_{i->i±1} = D/h² exp(-(V_{i±1} - V_i) / 2) (kT = 1); the matrix
    is similar to a symmetric tridiagonal one with off-diagonal D/h², whose second-largest
    eigenvalue -1/t_1 gives the timescale.
    """
    x = np.linspace(lo, hi, n_cells)
    h = x[1] - x[0]
    potential = BARRIER * (x * x - 1.0) ** 2
    up = DIFFUSION / h**2 * np.exp(-(potential[1:] - potential[:-1]) / 2)
    down = DIFFUSION / h**2 * np.exp(-(potential[:-1] - potential[1:]) / 2)
    diagonal = np.zeros(n_cells)
    diagonal[:-1] -= up
    diagonal[1:] -= down
    eigenvalues = eigh_tridiagonal(diagonal, np.sqrt(up * down), select="i",
                                   select_range=(n_cells - 2, n_cells - 1), eigvals_only=True)
    return -1.0 / np.sort(eigenvalues)[0]


@pytest.fixture(scope="module")
def double_well():
    return simulate_double_well()


@pytest.fixture(scope="module")
def double_well_its(double_well):
    return msm.implied_timescales(double_well, lags=LAGS, n_clusters=N_CLUSTERS, n_timescales=2, dt=DT_FRAME,
                                  n_samples=20, seed=0)


def four_state_chain():
    """Two metastable sets {0, 1} and {2, 3} of two fast-exchanging states each."""
    return MarkovStateModel(np.array([[0.90, 0.09, 0.01, 0.00],
                                      [0.09, 0.90, 0.00, 0.01],
                                      [0.01, 0.00, 0.90, 0.09],
                                      [0.00, 0.01, 0.09, 0.90]]))


def emit(model, positions, n_trajectories=4, n_steps=20000, noise=0.05, seed=0):
    """CV trajectories of a Markov chain: state i emits positions[i] plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    dtrajs = [model.simulate(n_steps, seed=seed + i) for i in range(n_trajectories)]
    return dtrajs, [np.asarray(positions)[d] + noise * rng.standard_normal(len(d)) for d in dtrajs]


@pytest.fixture(scope="module")
def chain_cv():
    return emit(four_state_chain(), [0.0, 1.0, 3.0, 4.0])


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
# Chapman-Kolmogorov test
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain_ck(chain_cv):
    _, cv = chain_cv
    return msm.ck_test(cv, lag=2, n_sets=2, mlags=5, n_clusters=4, n_samples=30, dt=1.0)


def test_ck_test_passes_on_known_two_state_chain(chain_ck):
    ds = chain_ck
    assert bool(ds.passed.all()) and bool(ds.overlap.all())
    # PCCA+ finds the metastable sets {0, 1} and {3, 4} of the emitted positions
    centers = ds.centers.values[:, 0]
    sets = ds.set_assignment.values
    assert len(set(sets[centers < 2])) == 1 and len(set(sets[centers > 2])) == 1
    assert sets[centers < 2][0] != sets[centers > 2][0]
    # the predictions agree with the exact set-to-set probabilities of the chain (about 400 transitions
    # between the sets per direction: a relative error of a few %)
    chain = four_state_chain()
    pi, matrix = chain.stationary_distribution, chain.transition_matrix
    left = 0 if sets[np.argmin(centers)] == 0 else 1
    members = [[0, 1], [2, 3]] if left == 0 else [[2, 3], [0, 1]]
    for k in range(6):
        power = np.linalg.matrix_power(matrix, 2 * k)
        for i, a in enumerate(members):
            for j, b in enumerate(members):
                exact = pi[a] @ power[np.ix_(a, b)].sum(axis=1) / pi[a].sum()
                assert float(ds.predicted[k, i, j]) == pytest.approx(exact, abs=0.01)


def test_ck_test_dataset_layout(chain_ck):
    ds = chain_ck
    assert ds.predicted.dims == ("mlag", "from_set", "to_set")
    assert ds.sizes == {"mlag": 6, "from_set": 2, "to_set": 2, "cluster": 4, "cv": 1}
    for name in ("predicted", "estimated"):
        for suffix in ("", "_lower", "_upper"):
            assert name + suffix in ds and ds[name + suffix].attrs["long_name"]
    assert ds.passed.dtype == bool and ds.overlap.dtype == bool
    assert bool((ds.overlap | ~ds.passed).all())  # an estimate inside the predicted interval overlaps it
    np.testing.assert_allclose(ds.lag_time, np.arange(6) * 2.0)
    assert ds.lag_time.attrs["units"] == "ps"
    np.testing.assert_allclose(ds.predicted.sum("to_set"), 1.0)
    np.testing.assert_allclose(ds.predicted.isel(mlag=0), np.eye(2))
    np.testing.assert_allclose(ds.predicted.isel(mlag=1), ds.estimated.isel(mlag=1))


def test_ck_test_with_given_sets_matches_pcca(chain_cv, chain_ck):
    _, cv = chain_cv
    given = msm.ck_test(cv, lag=2, n_sets=chain_ck.set_assignment.values, mlags=5, n_clusters=4, n_samples=30,
                        dt=1.0)
    np.testing.assert_array_equal(given.set_assignment, chain_ck.set_assignment)
    # crisp sets instead of PCCA+'s nearly crisp memberships: the same probabilities to a few 1e-3
    np.testing.assert_allclose(given.predicted, chain_ck.predicted, atol=5e-3)
    np.testing.assert_allclose(given.estimated, chain_ck.estimated, atol=5e-3)
    assert bool(given.passed.all())


def test_ck_test_fails_for_non_markovian_cv():
    # the slow sets A = {0, 1} and B = {2, 3} share the CV value 1: clusters on the CV lose memory
    hidden = MarkovStateModel(np.array([[0.97, 0.03, 0.00, 0.00],
                                        [0.30, 0.69, 0.01, 0.00],
                                        [0.00, 0.01, 0.69, 0.30],
                                        [0.00, 0.00, 0.03, 0.97]]))
    _, cv = emit(hidden, [0.0, 1.0, 1.0, 2.0], seed=10)
    ds = msm.ck_test(cv, lag=1, n_sets=2, mlags=8, n_clusters=3, n_samples=30)
    assert not bool(ds.passed.all()) and not bool(ds.overlap.all())


# ---------------------------------------------------------------------------------------------------------
# several trajectories stay separate; dt from the time coordinate
# ---------------------------------------------------------------------------------------------------------
def _as_dataarray(trajectories, dt):
    values = np.concatenate(trajectories)
    trajectory = np.concatenate([np.full(len(t), i) for i, t in enumerate(trajectories)])
    time = np.concatenate([np.arange(len(t)) * dt for t in trajectories])  # restarts in each trajectory
    return xr.DataArray(values[:, None], dims=("frame", "cv"),
                        coords={"frame": np.arange(len(values)), "time": ("frame", time),
                                "trajectory": ("frame", trajectory)})


def test_dataarray_trajectories_stay_separate(double_well, double_well_its):
    data = _as_dataarray(double_well, DT_FRAME)
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
    data = _as_dataarray(double_well[:2], DT_FRAME).drop_vars("trajectory")
    with pytest.raises(ValueError, match=r"'time' coordinate of trajs does not increase at frame 3000.*"
                                         r"'trajectory' coordinate"):
        msm.implied_timescales(data, lags=[1], n_clusters=5)


def test_inputs_are_not_modified(double_well):
    data = _as_dataarray(double_well[:2], DT_FRAME)
    before = data.copy(deep=True)
    array = double_well[0][:, None].copy()
    msm.implied_timescales([data], lags=[1], n_clusters=5, n_timescales=1, n_samples=2)
    msm.ck_test(array, lag=1, n_sets=2, mlags=2, n_clusters=5, n_samples=2)
    xr.testing.assert_identical(data, before)
    np.testing.assert_array_equal(array, double_well[0][:, None])


# ---------------------------------------------------------------------------------------------------------
# MSMValidation on a fitted CV (a stand-in with the AutoencoderCV.transform signature)
# ---------------------------------------------------------------------------------------------------------
class _FittedCV:
    def __init__(self, data):
        self.data = data
        self.calls = []

    def transform(self, atomgroup, start=None, stop=None, step=None):
        self.calls.append((atomgroup, start, stop, step))
        return self.data.isel(frame=slice(start, stop, step))


def test_msm_validation_runs_both_on_one_discretisation(chain_cv):
    _, cv = chain_cv
    data = _as_dataarray(cv, 1.0)
    fitted = _FittedCV(data)
    validation = msm.MSMValidation(fitted, "atoms", lags=[1, 2, 5, 10], n_sets=2, mlags=4, n_clusters=4,
                                   n_timescales=2, n_samples=10).run()
    results = validation.results
    assert fitted.calls == [("atoms", None, None, None)]
    assert results.lag in (1, 2, 5, 10)
    assert results.ck_test.attrs["lag"] == results.lag
    xr.testing.assert_identical(results.implied_timescales.centers, results.ck_test.centers)
    assignments = results.discretization.assignments
    assert assignments.dims == ("frame",) and len(assignments) == data.sizes["frame"]
    np.testing.assert_array_equal(assignments.trajectory, data.trajectory)
    centers = results.discretization.centers.values[:, 0]
    nearest = np.argmin(np.abs(data.values[:, :1] - centers[None, :]), axis=1)
    np.testing.assert_array_equal(assignments, nearest)
    assert bool(results.ck_test.passed.all())


def test_msm_validation_needs_a_fitted_cv():
    with pytest.raises(TypeError, match="without a transform.*AutoencoderCV"):
        msm.MSMValidation(object(), None)


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


def test_ck_test_rejects_bad_input(chain_cv):
    _, cv = chain_cv
    with pytest.raises(ValueError, match=r"n_sets=5 must be between 2 and the number of connected clusters "
                                         r"at lag=2 \(4\)"):
        msm.ck_test(cv, lag=2, n_sets=5, mlags=2, n_clusters=4, n_samples=2)
    with pytest.raises(ValueError, match=r"lag \* mlags=25000: lag 25000 is not smaller than the shortest"):
        msm.ck_test(cv, lag=2500, n_sets=2, mlags=10, n_clusters=4)
    with pytest.raises(ValueError, match=r"lag=2.5 must be an integer >= 1"):
        msm.ck_test(cv, lag=2.5, n_sets=2, n_clusters=4)
    with pytest.raises(ValueError, match=r"n_sets assigns the connected clusters to sets \[0, 2\]"):
        msm.ck_test(cv, lag=2, n_sets=np.array([0, 0, 2, 2]), mlags=2, n_clusters=4, n_samples=2)
