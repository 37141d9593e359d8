"""Laplace posterior of the decoder parameters θ of a Gaussian-decoder generative model (``model="vae"``).

q(θ | X) = N(θ_MAP, S), with S⁻¹ the Hessian of the negative log posterior at the MAP estimate, in the
generalised Gauss–Newton form (the Fisher information of the Gaussian likelihood, exact for a decoder
linear in θ) plus the prior precision:

S⁻¹ = Σᵢ Jᵢᵀ Cᵢ⁻¹ Jᵢ + diag(τ),

Jᵢ = ∂f(zᵢ)/∂θ the Jacobian of the decoder mean at the encoder mean zᵢ = μ(xᵢ) of training frame i
(normalised features), τ the prior precision (the E-step ⟨τ_j⟩ for ARD) and Cᵢ the covariance of xᵢ
given θ. With ``latents="integrated"`` (default), Cᵢ = diag σₓ² + Jzᵢ Jzᵢᵀ, Jzᵢ = ∂f/∂z: the latent
variable of each frame is integrated out by a joint Laplace approximation in (θ, zᵢ) with the prior
N(0, I) on zᵢ (the Schur complement of its block); for a linear-Gaussian decoder this is the exact
marginal likelihood. With ``latents="fixed"``, Cᵢ = diag σₓ²: the latents are treated as observed,
which measurably understates the uncertainty (``docs/findings/uncertainty.md``). The decoder
noise σₓ² and the encoder stay at their MAP values.

Structures: ``"last_layer"`` (full covariance of the last ``nn.Linear`` of the decoder, the other layers
at MAP), ``"diag"`` (diagonal over every decoder parameter) and ``"full"`` (every decoder parameter,
P² memory: small decoders only). Their accuracy against the full Hessian is measured on the findings page.
"""

import copy

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from .vae import LOG_VAR_MAX, LOG_VAR_MIN

__all__ = ["STRUCTURES", "LATENTS", "LaplaceApproximation", "fit_laplace"]

#: Forms of the posterior covariance accepted by :func:`fit_laplace`.
STRUCTURES = ("last_layer", "diag", "full")
#: How :func:`fit_laplace` treats the latent variable of each training frame.
LATENTS = ("integrated", "fixed")


class LaplaceApproximation:
    """A Gaussian posterior N(θ_MAP, S) over (some of) the decoder parameters of a fitted model.

    Made by :func:`fit_laplace`; holds a copy of the model at the MAP estimate.

    Attributes
    ----------
    model : BaseAutoencoder
        The MAP model (evaluation mode).
    names : list of str
        Names (in ``model.decoder``) of the parameters θ covers, in the order of ``mean``.
    mean : torch.Tensor of float64, shape (P,)
        θ_MAP.
    precision : torch.Tensor of float64, shape (P, P), or (P,) for ``structure="diag"``
        S⁻¹.
    structure, latents : str
        As passed to :func:`fit_laplace`.
    n_frames : int
        Training frames the likelihood sums over.
    """

    def __init__(self, model, names, mean, precision, structure, latents, n_frames):
        self.model, self.names, self.mean = model, list(names), mean
        self.precision, self.structure, self.latents, self.n_frames = precision, structure, latents, n_frames
        if structure == "diag":
            if not torch.all(precision > 0):
                raise ValueError("the posterior precision has non-positive entries; train with a decoder prior "
                                 "(decoder_prior='gaussian' or 'ard') so that every parameter has one")
            self._scale = precision.rsqrt()
        else:
            factor, info = torch.linalg.cholesky_ex(precision)
            if int(info) != 0:
                raise ValueError("the posterior precision is not positive definite (parameters the data do not "
                                 "determine); train with a decoder prior (decoder_prior='gaussian' or 'ard')")
            self._factor = factor

    @property
    def n_parameters(self):
        """P, the number of parameters θ covers."""
        return len(self.mean)

    def covariance(self):
        """S, shape (P, P) (a diagonal matrix for ``structure="diag"``), float64."""
        if self.structure == "diag":
            return torch.diag(1 / self.precision)
        return torch.cholesky_inverse(self._factor)

    def sample(self, n, generator=None):
        """``n`` draws θ ~ N(θ_MAP, S), shape (n, P), float64 (``generator``: a seeded torch.Generator)."""
        noise = torch.randn(n, self.n_parameters, generator=generator, dtype=torch.float64)
        if self.structure == "diag":
            return self.mean + noise * self._scale
        # θ = θ_MAP + L⁻ᵀ ε has covariance (L Lᵀ)⁻¹ = S
        return self.mean + torch.linalg.solve_triangular(self._factor.T, noise.T, upper=True).T

    def model_at(self, theta):
        """A copy of the MAP model with the parameters θ (shape (P,)) set in its decoder."""
        model = copy.deepcopy(self.model)
        params = dict(model.decoder.named_parameters())
        theta = torch.as_tensor(theta, dtype=torch.float64)
        start = 0
        with torch.no_grad():
            for name in self.names:
                param = params[name]
                param.copy_(theta[start:start + param.numel()].reshape(param.shape).to(param.dtype))
                start += param.numel()
        return model


def _covered(decoder, structure):
    """Names of the decoder parameters the posterior covers."""
    if structure == "last_layer":
        last = [name for name, module in decoder.named_modules() if isinstance(module, nn.Linear)][-1]
        return [f"{last}.weight", f"{last}.bias"]
    return [name for name, _ in decoder.named_parameters()]


def _check(model, structure, latents):
    if structure not in STRUCTURES:
        raise ValueError(f"structure={structure!r} is not known; use one of {list(STRUCTURES)}")
    if latents not in LATENTS:
        raise ValueError(f"latents={latents!r} is not known; use one of {list(LATENTS)}")
    if not hasattr(model, "decoder_log_var") or not hasattr(model, "decoder"):
        raise ValueError(f"a Laplace posterior needs a Gaussian decoder with a learned variance (model='vae'); "
                         f"got a {type(model).__name__}")
    if getattr(model, "n_train", None) is None:
        raise ValueError("the model has not been trained yet, so there is no MAP estimate to build a posterior "
                         "around; train it first (AutoencoderCV.run() or mdcvkit.training.Trainer.fit)")


def fit_laplace(model, features, *, structure="last_layer", latents="integrated", weights=None, chunk=128):
    """Laplace posterior of the decoder parameters of a trained Gaussian-decoder model.

    Parameters
    ----------
    model : VariationalAutoEncoder
        Trained (MAP) model, e.g. ``TrainingResult.model`` or ``cv.results.model.model``.
    features : array_like, shape (n_frames, n_features)
        Raw features of the training frames (the frames the likelihood sums over).
    structure : {"last_layer", "diag", "full"}, default "last_layer"
    latents : {"integrated", "fixed"}, default "integrated"
        See the module notes.
    weights : array_like, shape (n_frames,), optional
        Frame weights (any normalisation; rescaled to sum to n_frames).
    chunk : int, default 128
        Frames per vectorised Jacobian evaluation (bounds memory).

    Returns
    -------
    LaplaceApproximation

    Raises
    ------
    ValueError
        For an unknown structure or latents, a model without a Gaussian decoder, an untrained model,
        features of the wrong shape or with NaN, or a precision that is not positive definite.

    Examples
    --------
    >>> posterior = fit_laplace(fit.model, features)           # doctest: +SKIP
    >>> members = [posterior.model_at(t) for t in posterior.sample(100)]  # doctest: +SKIP
    """
    _check(model, structure, latents)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    if x.ndim != 2 or x.shape[1] != model.n_features or len(x) < 1 or not torch.isfinite(x).all():
        raise ValueError(f"features have shape {tuple(x.shape)}; pass the finite raw training features, shape "
                         f"(n_frames, {model.n_features})")
    w = torch.ones(len(x), dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (len(x),) or not torch.all(torch.isfinite(w) & (w >= 0)) or w.sum() <= 0:
        raise ValueError(f"weights must be {len(x)} finite non-negative numbers, not all zero")
    w = w * len(x) / w.sum()
    model = copy.deepcopy(model).eval()
    decoder = copy.deepcopy(model.decoder).double()
    names = _covered(decoder, structure)
    params = {name: p.detach() for name, p in decoder.named_parameters()}
    covered = {name: params[name] for name in names}
    variance = torch.exp(model.decoder_log_var.detach().double().clamp(LOG_VAR_MIN, LOG_VAR_MAX))

    def mean(theta, z):
        return functional_call(decoder, {**params, **theta}, (z[None],))[0]

    n_params = sum(p.numel() for p in covered.values())
    precision = torch.zeros((n_params,) if structure == "diag" else (n_params, n_params), dtype=torch.float64)
    with torch.no_grad():
        latent = model.encode(x).double()
    for start in range(0, len(x), chunk):
        z = latent[start:start + chunk]
        jac = vmap(jacrev(mean, argnums=0), in_dims=(None, 0))(covered, z)
        j_theta = torch.cat([jac[name].reshape(len(z), model.n_features, -1) for name in names], dim=-1)
        cov = torch.diag_embed(variance.expand(len(z), -1))
        if latents == "integrated":
            j_z = vmap(jacrev(mean, argnums=1), in_dims=(None, 0))(covered, z)
            cov = cov + j_z @ j_z.transpose(1, 2)
        whitened = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), j_theta, upper=False)
        whitened = whitened * w[start:start + chunk, None, None].sqrt()  # A with AᵀA = Σ wᵢ Jᵢᵀ Cᵢ⁻¹ Jᵢ
        if structure == "diag":
            precision += (whitened ** 2).sum(dim=(0, 1))
        else:
            flat = whitened.reshape(-1, n_params)
            precision += flat.T @ flat
    theta_map = torch.cat([covered[name].reshape(-1) for name in names])
    prior = getattr(model, "_decoder_prior", None)
    if prior is not None:
        tau = prior.prior_precision(theta_map)
        precision += tau if structure == "diag" else torch.diag(tau)
    return LaplaceApproximation(model, names, theta_map, precision, structure, latents, len(x))
