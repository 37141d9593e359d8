"""The variational autoencoder: Gaussian encoder and decoder, standard normal prior."""

import torch
from torch import nn

from .._checks import check_number
from .base import BaseAutoencoder
from .losses import gaussian_nll, standard_normal_kl
from .mlp import FeedForward

__all__ = ["VariationalAutoEncoder"]

#: Bounds of the log-variances (normalised feature units) that keep the likelihood finite.
LOG_VAR_MIN, LOG_VAR_MAX = -10.0, 10.0


class VariationalAutoEncoder(BaseAutoencoder):
    """Variational autoencoder with a β-weighted KL term.

    Encoder q(z|x) = N(μ(x), diag σ²(x)); prior p(z) = N(0, I); decoder
    p(x|z) = N(f(z), diag σₓ²) with a learned variance σₓ² per feature that
    does not depend on z (as in Schöberl et al.). The per-frame loss is the
    negative β-ELBO,

    ``reconstruction`` = −log p(x | z),  z = μ(x) + σ(x) ε (reparametrised sample),
    ``kl`` = β · KL(q(z|x) ‖ N(0, I)),

    with x the normalised features, the likelihood summed over features and
    the KL over latent dimensions (in nats). In evaluation mode (validation
    loss) the sample is replaced by the mean, z = μ(x), so the validation
    loss is deterministic. :meth:`encode` returns μ(x): the CV is
    deterministic.

    Parameters
    ----------
    n_features, n_cv, hidden, activation, scale_groups
        As in :class:`mdcvkit.models.AutoEncoder`.
    beta : float, default 1.0
        Weight β ≥ 0 of the KL term (β = 1: the ELBO; Higgins et al., ICLR 2017).

    References
    ----------
    D. P. Kingma, M. Welling, "Auto-encoding variational Bayes", ICLR 2014, arXiv:1312.6114.
    M. Schöberl, N. Zabaras, P.-S. Koutsourelakis, "Predictive collective variable discovery with
    deep Bayesian models", J. Chem. Phys. 150, 024109 (2019).
    """

    def __init__(self, n_features, n_cv, hidden=(40,), activation="tanh", scale_groups=None, beta=1.0):
        beta = check_number("beta", beta, example="1.0")
        super().__init__(n_features, n_cv, scale_groups)
        hidden = self._set_layers(hidden, activation)
        self.beta = beta
        self.encoder = FeedForward([n_features, *hidden, 2 * n_cv], activation)
        self.decoder = FeedForward([n_cv, *hidden[::-1], n_features], activation)
        self.decoder_log_var = nn.Parameter(torch.zeros(n_features))

    def encoder_moments(self, x):
        """Mean and log-variance of q(z|x) for raw features ``x``, each (n, n_cv)."""
        mean, log_var = self.encoder(self.normalization(x)).chunk(2, dim=-1)
        return mean, log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)

    def encode(self, x):
        """The CV: the encoder mean μ(x), shape (n, n_cv)."""
        return self.encoder_moments(x)[0]

    def sample_prior(self, n, generator=None, cluster=None):
        """``n`` latent points drawn from the prior N(0, I), shape (n, n_cv)."""
        if cluster is not None:
            raise ValueError(f"cluster={cluster!r} applies to model='gmvae' only; leave cluster=None")
        return torch.randn(n, self.n_cv, generator=generator).to(self.decoder_log_var.device)

    def loss_terms(self, x, target):
        mean, log_var = self.encoder_moments(x)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean) if self.training else mean
        log_var_x = self.decoder_log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)
        return {"reconstruction": gaussian_nll(self.normalization(target), self.decoder(z), log_var_x),
                "kl": self.beta * standard_normal_kl(mean, log_var)}
