"""The reverse-KL objective of a variational autoencoder against a Boltzmann density, and its estimates.

For q(x) = ∫ q(x|z) q(z) dz (the decoder and the standard normal prior of
:class:`mdcvkit.models.VariationalAutoEncoder`) and the target p(x) ∝ exp(-β U(x)), the encoder
r(z|x) bounds the entropy of q from below, so that

    L̃ = E_{q(x, z)}[-β U(x) + log r(z|x) - log q(x|z) - log q(z)]  ≤  E_q[log p̃(x) - log q(x)]
      = log Z_β - KL(q ‖ p)

(Schöberl, Zabaras, Koutsourelakis 2020). L̃ is reparametrised, x = μ(z) + σ ⊙ ε, so its gradient
uses the forces at the model's samples. Replacing log q(x) by the importance-weighted estimate
log q̂_K(x) = log (1/K) Σ_k q(x, z_k) / r(z_k|x), z_k ~ r(z|x), whose expectation lies below
log q(x), gives the upper bound U_K = E_q[log p̃(x) - log q̂_K(x)] of the same objective, and the
importance weights w ∝ p̃(x) / q̂_K(x) of the model's samples.
"""

import math

import numpy as np
import torch
from scipy.special import logsumexp

from .._checks import check_int, check_number
from ..biasing.reweight import effective_sample_size as kish_effective_sample_size
from ..models import VariationalAutoEncoder
from ..models.losses import LOG_2PI, gaussian_nll
from ..models.vae import LOG_VAR_MAX, LOG_VAR_MIN

__all__ = ["ReverseKLObjective", "draw", "log_target", "log_q_importance", "kl_estimate",
           "effective_sample_size"]


def _decoder_log_var(model):
    return model.decoder_log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)


def draw(model, z, noise):
    """Reparametrised samples of the model and log q(x, z) = log q(x|z) + log q(z).

    Parameters
    ----------
    model : VariationalAutoEncoder
    z : torch.Tensor, shape (n, n_cv)
        Latent points, drawn from the prior N(0, I).
    noise : torch.Tensor, shape (n, n_features)
        Standard normal noise ε of the decoder.

    Returns
    -------
    x : torch.Tensor, shape (n, n_features)
        Samples in raw coordinates, ``normalization.inverse(μ(z) + σ ε)``.
    log_q : torch.Tensor, shape (n,)
        log q(x|z) + log q(z), with the Jacobian of the normalisation.
    """
    log_var = _decoder_log_var(model)
    y = model.decoder(z) + torch.exp(0.5 * log_var) * noise
    log_q = -0.5 * (noise ** 2 + log_var + LOG_2PI).sum(-1) - 0.5 * (z ** 2 + LOG_2PI).sum(-1)
    return model.normalization.inverse(y), log_q - torch.log(model.normalization.scale).sum()


def _log_q_given(model, x, z):
    """log q(x|z) + log q(z) for given x (n, n_features) and z (..., n, n_cv)."""
    y = model.normalization(x)
    log_q = -gaussian_nll(y, model.decoder(z), _decoder_log_var(model)) - 0.5 * (z ** 2 + LOG_2PI).sum(-1)
    return log_q - torch.log(model.normalization.scale).sum()


def log_target(potential, x, beta):
    """Unnormalised log-density -β U(x) + log J(x) of the target, and the energies (kJ/mol).

    Raises
    ------
    ValueError
        When the potential or its Jacobian is NaN or infinite at a sample, naming the sample.
    """
    energy, log_jacobian = potential.energy(x), potential.log_jacobian(x)
    log_p = -beta * energy + log_jacobian
    bad = ~torch.isfinite(log_p)
    if bad.any():
        k = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"the potential is {float(energy[k].detach())} kJ/mol (log-Jacobian {float(log_jacobian[k].detach())}) "
            f"at sample {k} of the model, x = {x[k].detach().cpu().numpy().round(4).tolist()}; {int(bad.sum())} "
            "samples are not finite: make the potential finite there (e.g. soften a singularity)")
    return log_p, energy


def log_q_importance(model, x, n_importance, generator=None):
    """Importance-weighted estimate log q̂_K(x) with the encoder r(z|x) as proposal, shape (n,)."""
    mean, log_var = model.encoder_moments(x)
    eps = torch.randn(n_importance, *mean.shape, generator=generator).to(mean)
    z = mean + torch.exp(0.5 * log_var) * eps
    log_r = -0.5 * (eps ** 2 + log_var + LOG_2PI).sum(-1)
    return torch.logsumexp(_log_q_given(model, x, z) - log_r, dim=0) - math.log(n_importance)


def kl_estimate(log_q, energy, log_jacobian, beta):
    """KL(q ‖ p_β) estimated from samples of q: mean(log q - log p̃) + log mean(p̃ / q) (≥ 0 by Jensen).

    Parameters
    ----------
    log_q, energy, log_jacobian : numpy.ndarray, shape (n,)
        log q̂(x), U(x) in kJ/mol and log J(x) at samples x of q.
    beta : float or numpy.ndarray
        Inverse temperature(s) in mol/kJ.

    Returns
    -------
    float or numpy.ndarray
    """
    beta = np.asarray(beta, dtype=float)[..., None]
    log_ratio = -beta * energy + log_jacobian - log_q
    return logsumexp(log_ratio, axis=-1) - np.log(log_ratio.shape[-1]) - log_ratio.mean(axis=-1)


def effective_sample_size(log_weights):
    """Kish's effective sample size (Σw)² / Σw² per sample: :func:`mdcvkit.biasing.effective_sample_size` / n.

    Parameters
    ----------
    log_weights : array_like, shape (n,)
        Natural logarithms of the importance weights, any normalisation.

    Returns
    -------
    float
        In (0, 1]; 1 for uniform weights.

    Raises
    ------
    ValueError
        When ``log_weights`` is empty, holds NaN or ``+inf``, or all weights are zero.
    """
    return kish_effective_sample_size(log_weights) / np.size(log_weights)


class ReverseKLObjective:
    """The objective α·KL(p‖q) + (1 - α)·KL(q‖p_β) as an objective of :meth:`mdcvkit.training.Trainer.fit`.

    The data term is the model's own loss (the negative ELBO of the data frames); the physics term is
    -L̃ on ``batch_size`` fresh samples of the model per step. The validation loss evaluates both on
    fixed draws (common random numbers), and :meth:`validate` records the two bounds of the physics
    objective, L̃ (``lower_bound``) and U_K (``upper_bound``), and the effective sample size of the
    importance weights, per epoch.

    Parameters
    ----------
    potential : mdcvkit.physics.Potential
    beta : float
        Inverse temperature in mol/kJ of the (tempered) target.
    alpha : float, default 0
        Weight of the data term, in [0, 1].
    batch_size : int, default 256
        Samples of the model per step.
    steps_per_epoch : int, default 10
        Steps of an epoch when there are no data frames.
    n_validation : int, default 1024
        Fixed samples of the validation loss and the bounds.
    n_importance : int, default 16
        Encoder samples K of log q̂_K.
    seed : int, default 0
        Seed of the fixed validation draws.
    """

    def __init__(self, potential, beta, *, alpha=0.0, batch_size=256, steps_per_epoch=10, n_validation=1024,
                 n_importance=16, seed=0):
        self.potential = potential
        self.beta = check_number("beta", beta, strict=True, example="1.0")
        self.alpha = check_alpha(alpha)
        for name, value in (("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch),
                            ("n_validation", n_validation), ("n_importance", n_importance)):
            check_int(value, name)
        self.batch_size, self.steps_per_epoch = int(batch_size), int(steps_per_epoch)
        self.n_validation, self.n_importance, self.seed = int(n_validation), int(n_importance), int(seed)

    def _physics(self, model, z, noise):
        """Per-sample L̃ terms -β U(x) + log J(x) + log r(z|x) - log q(x, z), the samples x and log p̃(x)."""
        x, log_q = draw(model, z, noise)
        mean, log_var = model.encoder_moments(x)
        log_r = -gaussian_nll(z, mean, log_var)
        log_p, _ = log_target(self.potential, x, self.beta)
        return log_p + log_r - log_q, x, log_p

    def loss(self, model, x, target):
        """Loss of one step, and its terms ``data`` and ``physics`` (each before the weights α, 1 - α)."""
        check_model(model)
        total, terms = 0.0, {}
        if self.alpha > 0:
            data, _ = model.loss(x, target)
            total, terms["data"] = self.alpha * data, data.detach()
        if self.alpha < 1:
            device = model.decoder_log_var.device
            z = torch.randn(self.batch_size, model.n_cv, device=device)
            noise = torch.randn(self.batch_size, model.n_features, device=device)
            physics = -self._physics(model, z, noise)[0].mean()
            total, terms["physics"] = total + (1 - self.alpha) * physics, physics.detach()
        return total, terms

    def validate(self, model, data_loss):
        """Validation loss on the fixed draws, with ``lower_bound``, ``upper_bound``, ``ess`` and ``beta_s``."""
        check_model(model)
        generator = torch.Generator().manual_seed(self.seed)
        device = model.decoder_log_var.device
        z = torch.randn(self.n_validation, model.n_cv, generator=generator).to(device)
        noise = torch.randn(self.n_validation, model.n_features, generator=generator).to(device)
        model.eval()
        with torch.no_grad():
            bound, x, log_p = self._physics(model, z, noise)
            log_w = (log_p - log_q_importance(model, x, self.n_importance, generator)).double().cpu().numpy()
        lower, upper = float(bound.mean()), float(log_w.mean())
        validation = (1 - self.alpha) * -lower + (self.alpha * data_loss if data_loss is not None else 0.0)
        return {"validation": validation, "lower_bound": lower, "upper_bound": upper,
                "ess": effective_sample_size(log_w), "beta_s": self.beta}


def check_alpha(alpha):
    """Return ``alpha`` as float, or raise ValueError unless it is a number in [0, 1]."""
    try:
        value = float(alpha)
    except (TypeError, ValueError) as err:
        raise ValueError(f"alpha={alpha!r} must be a number in [0, 1], e.g. alpha=0.5") from err
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha={alpha!r} must be in [0, 1] (0: potential only, 1: data only); e.g. alpha=0.5")
    return value


def check_model(model):
    """Raise TypeError unless ``model`` is a :class:`mdcvkit.models.VariationalAutoEncoder`."""
    if not isinstance(model, VariationalAutoEncoder):
        raise TypeError(f"reverse-KL training needs a VariationalAutoEncoder (a decoder density q(x|z) and an "
                        f"encoder r(z|x)), not {type(model).__name__}")
