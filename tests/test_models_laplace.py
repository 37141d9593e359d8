"""Tests of mdcvkit.models.laplace: exact on a linear-Gaussian decoder, draws, structures and errors."""

import numpy as np
import pytest
import torch
from linear_gaussian_cases import analytic_precision, linear_gaussian, marginal_bias_precision, train_linear

from mdcvkit.models import AutoEncoder, VariationalAutoEncoder, fit_laplace
from mdcvkit.training import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::mdcvkit.training.ConvergenceWarning")


@pytest.fixture(scope="module")
def linear():
    x = linear_gaussian(200, 0)
    return train_linear(x), x


@pytest.mark.parametrize("structure", ["full", "last_layer"])
def test_covariance_matches_the_analytic_posterior_of_a_linear_gaussian_decoder(linear, structure):
    model, x = linear
    laplace = fit_laplace(model, x, structure=structure, latents="fixed")
    exact = np.linalg.inv(analytic_precision(model, x))
    covariance = laplace.covariance().numpy()
    assert np.abs(covariance - exact).max() <= 0.01 * np.abs(exact).max()
    assert np.allclose(np.diag(covariance), np.diag(exact), rtol=0.01)
    diag = fit_laplace(model, x, structure="diag", latents="fixed")
    assert np.allclose(diag.precision.numpy(), np.diag(analytic_precision(model, x)), rtol=0.01)


def test_integrated_latents_give_the_marginal_posterior_of_the_bias(linear):
    # with z integrated out, x | θ ~ N(b + ..., W Wᵀ + σ²): the bias block of the precision is N (W Wᵀ + σ²)⁻¹ + τ
    model, x = linear
    precision = fit_laplace(model, x, structure="full", latents="integrated").precision.numpy()
    exact = marginal_bias_precision(model, len(x))
    assert np.allclose(precision[3:, 3:], exact, rtol=0.01, atol=1e-8 * np.abs(exact).max())


def test_draws_have_the_posterior_mean_and_covariance(linear):
    model, x = linear
    laplace = fit_laplace(model, x, structure="last_layer")
    draws = laplace.sample(40_000, torch.Generator().manual_seed(0))
    covariance = laplace.covariance()
    scale = covariance.diagonal().sqrt()
    assert torch.all((draws.mean(0) - laplace.mean).abs() < 5 * scale / 200)
    assert torch.allclose(torch.cov(draws.T) / torch.outer(scale, scale), covariance / torch.outer(scale, scale),
                          atol=0.03)
    assert torch.allclose(laplace.model_at(laplace.mean).decoder[0].weight, model.decoder[0].weight)
    diag = fit_laplace(model, x, structure="diag")
    assert torch.allclose(diag.sample(40_000).var(0) * diag.precision, torch.ones(6, dtype=torch.float64),
                          atol=0.05)


def test_last_layer_of_a_deeper_decoder_covers_only_its_parameters(linear):
    _, x = linear
    model = VariationalAutoEncoder(3, 1, hidden=(4,), decoder_prior="gaussian")
    model = Trainer(max_epochs=5, seed=0).fit(model, x).model
    laplace = fit_laplace(model, x)
    assert laplace.names == ["2.weight", "2.bias"] and laplace.n_parameters == 4 * 3 + 3
    moved = laplace.model_at(laplace.mean + 1.0)
    assert torch.equal(moved.decoder[0].weight, model.decoder[0].weight)
    assert torch.allclose(moved.decoder[2].bias, model.decoder[2].bias + 1.0)


def test_errors_name_the_problem(linear):
    model, x = linear
    with pytest.raises(ValueError, match="structure='kron'"):
        fit_laplace(model, x, structure="kron")
    with pytest.raises(ValueError, match="latents='sampled'"):
        fit_laplace(model, x, latents="sampled")
    with pytest.raises(ValueError, match="not been trained yet"):
        fit_laplace(VariationalAutoEncoder(3, 1), x)
    with pytest.raises(ValueError, match="Gaussian decoder"):
        fit_laplace(AutoEncoder(3, 1), x)
    with pytest.raises(ValueError, match="features have shape"):
        fit_laplace(model, x[:, :2])
    with pytest.raises(ValueError, match="weights"):
        fit_laplace(model, x, weights=np.zeros(len(x)))
