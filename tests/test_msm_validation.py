"""Tests of mdcvkit.msm.MSMValidation on a fitted CV (a stand-in with the AutoencoderCV.transform signature)."""

import numpy as np
import pytest
import xarray as xr
from msm_cases import as_dataarray, four_state_chain_cv

from mdcvkit import msm


@pytest.fixture(scope="module")
def chain_cv():
    return four_state_chain_cv()


class _FittedCV:
    def __init__(self, data):
        self.data = data
        self.calls = []

    def transform(self, atomgroup, start=None, stop=None, step=None):
        self.calls.append((atomgroup, start, stop, step))
        return self.data.isel(frame=slice(start, stop, step))


def test_msm_validation_runs_both_on_one_discretisation(chain_cv):
    _, cv = chain_cv
    data = as_dataarray(cv, 1.0)
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


def test_conf_is_a_deprecated_name_of_confidence():
    x = np.cumsum(np.random.default_rng(0).normal(size=2000)) % 3.0
    settings = {"lags": [1, 2], "n_clusters": 10, "n_samples": 10, "dt": 1.0}
    new = msm.implied_timescales(x, confidence=0.9, **settings)
    with pytest.warns(DeprecationWarning, match="conf= is deprecated; pass confidence="):
        old = msm.implied_timescales(x, conf=0.9, **settings)
    xr.testing.assert_identical(old, new)
    assert new.attrs["confidence"] == 0.9
    with pytest.raises(ValueError, match=r"confidence=1.5 must be a probability"):
        msm.ck_test(x, lag=2, n_sets=2, mlags=3, n_clusters=10, n_samples=10, dt=1.0, confidence=1.5)
