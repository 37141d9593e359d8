"""Tests of mdcvkit.msm.ck_test: a known two-state chain passes, a non-Markovian CV fails, errors."""

import numpy as np
import pytest
from deeptime.markov.msm import MarkovStateModel
from msm_cases import emit, four_state_chain, four_state_chain_cv

from mdcvkit import msm


@pytest.fixture(scope="module")
def chain_cv():
    return four_state_chain_cv()


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
