"""Tests of mdcvkit.physics.objective: the bounds, the KL estimate, bad input, and the Trainer's objective hook."""

import math

import numpy as np
import pytest
import torch

from mdcvkit.models import AutoEncoder, VariationalAutoEncoder
from mdcvkit.physics import PhysicsVAE, ReverseKLObjective, TorchPotential, effective_sample_size, kl_estimate
from mdcvkit.physics.objective import draw, log_q_importance
from mdcvkit.training import Trainer

#: a Gaussian target N(0, diag(1/(β k))) in 3 dimensions: log Z and KL are exact
STIFFNESS = torch.tensor([1.0, 4.0, 9.0])
GAUSSIAN = TorchPotential(lambda x: 0.5 * (STIFFNESS.to(x) * x ** 2).sum(-1), 3)


def _log_z(beta):
    return float(0.5 * torch.log(2 * math.pi / (beta * STIFFNESS)).sum())


def test_kl_estimate_is_exact_when_the_model_is_the_target():
    """For q = p the log-ratio is the constant log Z, so the estimated KL is 0; for q ≠ p it is positive."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3)) / np.sqrt(STIFFNESS.numpy())
    energy = GAUSSIAN.energy(torch.tensor(x)).numpy()
    log_q = -energy - _log_z(1.0)
    assert kl_estimate(log_q, energy, np.zeros(1000), 1.0) == pytest.approx(0.0, abs=1e-12)
    assert kl_estimate(log_q, energy, np.zeros(1000), 2.0) > 0.05


def test_effective_sample_size_matches_kish():
    weights = np.array([2.0, 0.0, 1.0, 1.0])
    with np.errstate(divide="ignore"):
        assert effective_sample_size(np.log(weights)) == pytest.approx(16 / 6 / 4)


def test_draw_and_importance_estimate_agree_for_a_linear_model():
    """A linear VAE has a Gaussian q(x); log q̂_K(x) with many encoder samples approaches the exact log q(x)."""
    torch.manual_seed(0)
    model = VariationalAutoEncoder(3, 1, hidden=(), activation=None)
    model.normalization.scale.fill_(2.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x, _ = draw(model, torch.randn(200, 1, generator=generator), torch.randn(200, 3, generator=generator))
        weight, bias = model.decoder[0].weight, model.decoder[0].bias
        covariance = 4 * (weight @ weight.T + torch.diag(torch.exp(model.decoder_log_var)))
        exact = torch.distributions.MultivariateNormal(2 * bias, covariance).log_prob(x)
        estimate = log_q_importance(model, x, 2000, generator)
    assert torch.all(estimate <= exact + 0.05)
    np.testing.assert_allclose(estimate.numpy(), exact.numpy(), atol=0.3)


def test_trainer_fits_a_gaussian_target_without_data():
    """Trainer.fit(model, None, objective=...) drives the bounds to log Z of a Gaussian target (KL → 0)."""
    objective = ReverseKLObjective(GAUSSIAN, 1.0, steps_per_epoch=5, n_validation=512, n_importance=8)
    model = VariationalAutoEncoder(3, 2, hidden=(16,))
    result = Trainer(max_epochs=150, patience=20, learning_rate=1e-2, seed=0).fit(model, None, objective=objective)
    last = result.history.isel(epoch=result.best_epoch)
    assert float(last.lower_bound) == pytest.approx(_log_z(1.0), abs=0.15)
    assert float(last.upper_bound) == pytest.approx(_log_z(1.0), abs=0.1)
    assert result.validation.shape == (0,)


def test_a_non_finite_potential_is_reported_with_its_sample():
    bad = TorchPotential(lambda x: torch.where(x[:, 0] > 0, torch.full_like(x[:, 0], float("nan")), x[:, 0] ** 2), 3)
    objective = ReverseKLObjective(bad, 1.0, batch_size=64)
    with pytest.raises(ValueError, match=r"nan kJ/mol .* at sample \d+ of the model, x = \["):
        objective.loss(VariationalAutoEncoder(3, 1), None, None)


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan"), float("inf"), "hot"])
def test_bad_beta_is_named(beta):
    with pytest.raises(ValueError, match="beta="):
        PhysicsVAE(GAUSSIAN, beta)


@pytest.mark.parametrize("threshold", [0.0, -0.5, "x"])
def test_bad_threshold_is_named(threshold):
    with pytest.raises(ValueError, match="kl_threshold="):
        PhysicsVAE(GAUSSIAN, 1.0, kl_threshold=threshold)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "half"])
def test_bad_alpha_is_named(alpha):
    with pytest.raises(ValueError, match="alpha="):
        PhysicsVAE(GAUSSIAN, 1.0, alpha=alpha)


def test_misuse_is_named(tmp_path):
    with pytest.raises(ValueError, match="needs data frames"):
        PhysicsVAE(GAUSSIAN, 1.0, alpha=0.5).fit()
    with pytest.raises(ValueError, match="not fitted"):
        PhysicsVAE(GAUSSIAN, 1.0).sample(10)
    with pytest.raises(TypeError, match="VariationalAutoEncoder"):
        ReverseKLObjective(GAUSSIAN, 1.0).loss(AutoEncoder(3, 1), None, None)
    with pytest.raises(ValueError, match="features=None"):
        Trainer().fit(VariationalAutoEncoder(3, 1), None)
    with pytest.raises(ValueError, match="checkpoint"):
        Trainer(checkpoint=tmp_path / "x.pt").fit(VariationalAutoEncoder(3, 1), None,
                                                  objective=ReverseKLObjective(GAUSSIAN, 1.0))
