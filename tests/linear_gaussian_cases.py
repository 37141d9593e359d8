"""A linear-Gaussian toy and its exact posterior (the oracle of the prior, Laplace and uncertainty tests).

Data x = W z + b + σ ε, z ~ N(0, 1), ε ~ N(0, I₃), with W = (2, 1, −1), b = (1, −2, 0.5) and σ = 0.5: a
linear VAE (``hidden=()``, ``activation=None``) with a Gaussian decoder prior of precision τ is Bayesian
linear regression, whose posterior precision is known in closed form. numpy only, independent of
mdcvkit's Laplace code.

Imported by tests/test_models_laplace.py, tests/test_models_priors.py, tests/test_uncertainty.py and
benchmarks/bench_uncertainty.py.
"""

import numpy as np
import torch

from mdcvkit.models import VariationalAutoEncoder
from mdcvkit.training import Trainer

__all__ = ["W_TRUE", "B_TRUE", "SIGMA", "TAU", "linear_gaussian", "train_linear", "analytic_precision",
           "marginal_bias_precision"]

W_TRUE, B_TRUE, SIGMA = np.array([[2.0], [1.0], [-1.0]]), np.array([1.0, -2.0, 0.5]), 0.5
#: precision of the Gaussian decoder prior of :func:`train_linear`
TAU = 1.0


def linear_gaussian(n, seed, noise_feature=False):
    """``n`` frames x = W z + b + σ ε (float32, shape (n, 3)); with ``noise_feature`` a 4th, independent N(0, 1) one."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 1))
    x = z @ W_TRUE.T + B_TRUE + SIGMA * rng.normal(size=(n, 3))
    if noise_feature:
        x = np.hstack([x, rng.normal(size=(n, 1))])
    return x.astype(np.float32)


def train_linear(x, seed=0, max_epochs=40, patience=30):
    """The MAP linear VAE of ``x`` (n, 3): full batch, Gaussian decoder prior of precision :data:`TAU`."""
    model = VariationalAutoEncoder(3, 1, hidden=(), activation=None,
                                   decoder_prior={"kind": "gaussian", "precision": TAU})
    return Trainer(max_epochs=max_epochs, batch_size=len(x), learning_rate=2e-2, validation_fraction=0,
                   patience=patience, seed=seed).fit(model, x).model


def analytic_precision(model, x):
    """Posterior precision (6, 6) of θ = (W row-major, b) given the encoder means (latents fixed).

    Bayesian linear regression of the normalised features on the encoder means: the block of feature k
    is Σᵢ aᵢaᵢᵀ / σₖ² + τ I with aᵢ = (zᵢ, 1).
    """
    with torch.no_grad():
        z = model.encode(torch.as_tensor(x)).double().numpy()
    a = np.hstack([z, np.ones((len(z), 1))])
    variance = np.exp(model.decoder_log_var.detach().double().numpy())
    precision = np.zeros((6, 6))
    for k in range(3):
        index = [k, 3 + k]
        precision[np.ix_(index, index)] = a.T @ a / variance[k] + TAU * np.eye(2)
    return precision


def marginal_bias_precision(model, n):
    """Posterior precision (3, 3) of the bias b with z integrated out: n (W Wᵀ + σ²)⁻¹ + τ I, n frames."""
    w = model.decoder[0].weight.detach().double().numpy()
    variance = np.exp(model.decoder_log_var.detach().double().numpy())
    return n * np.linalg.inv(w @ w.T + np.diag(variance)) + TAU * np.eye(3)
