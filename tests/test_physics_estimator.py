"""Tests of mdcvkit.physics.estimator: reverse-KL training of a VAE from a potential, with tempering.

The physics oracle is the tilted double well of Schöberl et al. (``TiltedDoubleWell2D``), whose
mode weights and moments are exact by quadrature; the model learns it without any sample.
"""

import numpy as np
import pytest
import torch
from scipy.integrate import quad, trapezoid

from mdcvkit.physics import PhysicsVAE, TorchPotential
from mdcvkit.systems import TiltedDoubleWell2D
from mdcvkit.training import Trainer

TOY = TiltedDoubleWell2D()


def _exact_moments():
    density = TOY.probability("x1", grid=np.linspace(*TOY.bounds[0], 4001))
    x1 = density["x1"].values
    return trapezoid(x1 * density.values, x1), trapezoid(x1 ** 2 * density.values, x1)


def _exact_samples(n, seed):
    """Independent samples of the toy's Boltzmann density (inverse CDF along x1, Gaussian x2)."""
    rng = np.random.default_rng(seed)
    density = TOY.probability("x1", grid=np.linspace(*TOY.bounds[0], 4001))
    cdf = np.cumsum(density.values)
    x1 = np.interp(rng.uniform(0, cdf[-1], n), cdf, density["x1"].values)
    x2 = rng.normal(0, 1 / np.sqrt(TOY.d * TOY.beta), n)
    return np.stack([x1, x2], axis=1)


def test_the_oracle_mode_weights_and_saddle_match_adaptive_quadrature():
    """The toy's saddle is a stationary point of V(x1), and its mode weights equal quad over the whole line."""
    def v1(x1):
        return TOY.a / 4 * x1 ** 4 - TOY.b / 2 * x1 ** 2 + TOY.c * x1

    assert TOY.a * TOY.saddle ** 3 - TOY.b * TOY.saddle + TOY.c == pytest.approx(0.0, abs=1e-12)
    assert v1(TOY.saddle) > max(v1(TOY.saddle - 0.1), v1(TOY.saddle + 0.1))  # a barrier top, not a well
    left, right = (quad(lambda x: np.exp(-TOY.beta * v1(x)), *limits)[0]
                   for limits in ((-np.inf, TOY.saddle), (TOY.saddle, np.inf)))
    np.testing.assert_allclose(TOY.mode_weights(), [left / (left + right), right / (left + right)], atol=1e-4)


@pytest.fixture(scope="module")
def tempered():
    torch.set_num_threads(1)
    estimator = PhysicsVAE(TorchPotential.from_toy(TOY), TOY.beta, n_cv=1, hidden=(20, 20), kl_threshold=0.3,
                           steps_per_epoch=5, n_validation=256, n_importance=8,
                           trainer=Trainer(max_epochs=200, patience=15, learning_rate=3e-3, seed=0))
    return estimator.fit()


@pytest.fixture(scope="module")
def untempered():
    estimator = PhysicsVAE(TorchPotential.from_toy(TOY), TOY.beta, n_cv=1, hidden=(20, 20),
                           kl_threshold=np.inf, beta_start=TOY.beta, steps_per_epoch=5, n_validation=256,
                           n_importance=8, trainer=Trainer(max_epochs=200, patience=15, learning_rate=3e-3, seed=0))
    return estimator.fit()


def _minor_weight(samples):
    return float((samples.x.values[:, 0] > TOY.saddle).mean())


def test_tempered_reverse_kl_recovers_both_modes_and_the_moments(tempered):
    """Without any sample: mode weights within 0.03 of exact; reweighted <x1>, <x1²> within 5 %."""
    samples = tempered.sample(20000, seed=1)
    assert abs(_minor_weight(samples) - TOY.mode_weights()[1]) < 0.03
    x1, weight = samples.x.values[:, 0].astype(float), samples.weight.values
    mean, second = _exact_moments()
    assert abs(np.sum(weight * x1) - mean) < 0.05 * abs(mean)
    assert abs(np.sum(weight * x1 ** 2) - second) < 0.05 * second
    assert tempered.stages_.sizes["stage"] > 2 and tempered.stages_.beta_s.values[-1] == TOY.beta
    assert np.all(np.diff(tempered.stages_.beta_s.values) > 0)


def test_the_latent_coordinate_separates_the_modes(tempered):
    """The encoder maps the two wells to disjoint latent intervals (one threshold classifies > 97 %)."""
    data = _exact_samples(4000, seed=2)
    z = tempered.transform(data)[:, 0]
    minor = data[:, 0] > TOY.saddle
    accuracy = max(np.mean((z > t) == minor) for t in np.quantile(z, np.linspace(0.01, 0.99, 99)))
    accuracy = max(accuracy, max(np.mean((z < t) == minor) for t in np.quantile(z, np.linspace(0.01, 0.99, 99))))
    assert accuracy > 0.97


def test_without_tempering_reverse_kl_loses_the_minor_mode(untempered):
    """The same training started at the target β collapses onto the major mode."""
    assert _minor_weight(untempered.sample(20000, seed=1)) < 0.02
    assert untempered.stages_.sizes["stage"] == 1


def test_the_mixed_objective_learns_both_modes_from_50_samples_and_the_potential():
    """α = 0.5: 50 exact samples plus the tempered potential give mode weights within 0.05 of exact."""
    estimator = PhysicsVAE(TorchPotential.from_toy(TOY), TOY.beta, n_cv=1, hidden=(20, 20), alpha=0.5,
                           kl_threshold=0.3, n_validation=256, n_importance=8,
                           trainer=Trainer(max_epochs=400, patience=40, learning_rate=3e-3, seed=0))
    samples = estimator.fit(_exact_samples(50, seed=3)).sample(20000, seed=1)
    assert abs(_minor_weight(samples) - TOY.mode_weights()[1]) < 0.05
    assert "train_data" in estimator.history_ and "train_physics" in estimator.history_


def test_history_records_beta_bounds_and_ess(tempered):
    history = tempered.history_
    for name in ("beta_s", "lower_bound", "upper_bound", "ess", "stage"):
        assert name in history
    assert np.all(np.isfinite(history.lower_bound)) and np.all((history.ess > 0) & (history.ess <= 1))
    last = history.isel(epoch=-1)
    # both bound log Z - KL from below and above (in expectation); at the end they nearly meet at log Z
    x1 = np.linspace(*TOY.bounds[0], 4001)
    energy = TOY.potential(np.stack([x1, np.zeros_like(x1)], axis=1))
    log_z = np.log(trapezoid(np.exp(-TOY.beta * energy), x1)) + 0.5 * np.log(2 * np.pi / (TOY.d * TOY.beta))
    assert float(last.lower_bound) <= float(last.upper_bound) + 0.05
    assert float(last.upper_bound) == pytest.approx(log_z, abs=0.1)
