"""Tests of mdcvkit.biasing.settings: the FEBILAE loop's Sampling and Convergence settings, checked on construction."""

import numpy as np
import pytest

from mdcvkit.biasing.settings import Convergence, Sampling, as_settings


def test_defaults_are_frozen_and_replace_checks_again():
    sampling = Sampling()
    assert sampling.steps == 1_000_000 and sampling.kappa is None and sampling.weights == "abf"
    with pytest.raises(AttributeError):
        sampling.steps = 5  # frozen: a loop's settings cannot change under it
    assert sampling.replace(n_bins=30).n_bins == 30 and sampling.n_bins == 50
    with pytest.raises(ValueError, match=r"n_bins=1 must be an integer >= 2"):
        sampling.replace(n_bins=1)
    assert Convergence().patience == 2 and Convergence(min_score=1).min_score == 1.0


def test_kappa_is_stored_as_a_tuple_of_floats():
    assert Sampling(kappa=40).kappa == (40.0,)
    assert Sampling(production_kappa=[100, 200]).production_kappa == (100.0, 200.0)


@pytest.mark.parametrize("name, value, message", [
    ("steps", 0, r"steps=0 must be an integer >= 1"),
    ("steps", 2.5, r"steps=2.5 must be an integer >= 1"),
    ("sample_frequency", -1, r"sample_frequency=-1 must be an integer >= 1"),
    ("n_bins", "50", r"n_bins='50' must be an integer >= 2"),
    ("full_samples", 0, r"full_samples=0 must be an integer >= 1"),
    ("bias_stride", 0, r"bias_stride=0 must be an integer >= 1"),
    ("production_steps", -5, r"production_steps=-5 must be an integer >= 0"),
    ("grid_margin", -0.1, r"grid_margin=-0.1 must be a non-negative fraction of the span"),
    ("grid_margin", "wide", r"grid_margin='wide' must be a non-negative fraction"),
    ("production_grid_margin", np.inf, r"production_grid_margin=inf must be a non-negative fraction"),
    ("kappa", 0.0, r"kappa=0.0 must be a positive coupling constant"),
    ("kappa", [1.0, 2.0, 3.0], r"kappa=\[1.0, 2.0, 3.0\] must be a positive coupling constant"),
    ("production_kappa", np.nan, r"production_kappa=nan must be a positive coupling constant"),
    ("route", "fast", r"route='fast' is not a bias route"),
    ("start", "first", r"start='first' must be one of \['previous', 'initial'\]"),
    ("reweight", "yes", r"reweight='yes' must be True or False"),
    ("weights", "mbar", r"weights='mbar' must be one of \['abf', 'czar'\]"),
    ("ess_threshold", 1.0, r"ess_threshold=1.0 must be a fraction in \[0, 1\)"),
])  # fmt: skip
def test_bad_sampling_settings_are_named(name, value, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**{name: value})


@pytest.mark.parametrize("name, value, message", [
    ("criterion", "r2", r"criterion='r2' must be one of \['knn', 'regscore'\]"),
    ("min_score", 1.5, r"min_score=1.5 must be a regscore <= 1, e.g. 0.99, or None"),
    ("min_score", "high", r"min_score='high' must be a regscore"),
    ("patience", 0, r"patience=0 must be an integer >= 1"),
    ("max_iterations", 1.5, r"max_iterations=1.5 must be an integer >= 1"),
    ("n_bootstrap", 0, r"n_bootstrap=0 must be an integer >= 1"),
    ("score_weights", "boltzmann", r"score_weights='boltzmann' must be one of \['training', 'uniform'\]"),
])  # fmt: skip
def test_bad_convergence_settings_are_named(name, value, message):
    with pytest.raises(ValueError, match=message):
        Convergence(**{name: value})


def test_as_settings_takes_none_an_instance_or_a_dict():
    assert as_settings(None, Sampling, "sampling") == Sampling()
    given = Convergence(patience=3)
    assert as_settings(given, Convergence, "convergence") is given
    assert as_settings({"patience": 3}, Convergence, "convergence") == given
    with pytest.raises(ValueError, match=r"convergence=\{'patiense': 3\}: \['patiense'\] not among its settings"):
        as_settings({"patiense": 3}, Convergence, "convergence")
    with pytest.raises(TypeError, match=r"sampling must be a Sampling or a dict of its settings, not list"):
        as_settings([1], Sampling, "sampling")
