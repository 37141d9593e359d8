"""The variational autoencoder: Gaussian encoder and decoder, standard normal prior."""

import torch
from torch import nn

from .._checks import check_number
from .base import BaseAutoencoder
from .losses import gaussian_nll, standard_normal_kl
from .mlp import FeedForward
from .priors import make_prior

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
    decoder_prior : None, "gaussian", "ard", dict or prior object, default None
        Prior on the decoder parameters θ (see :mod:`mdcvkit.models.priors`) for MAP training: the
        loss gets the term ``prior`` = −log p(θ) / n_train (n_train training frames, set by the
        trainer through :meth:`on_fit_start`), so that training maximises the log posterior. None
        trains by maximum likelihood, as before. Stored as its settings dict.

        .. versionadded:: 0.1

    References
    ----------
    D. P. Kingma, M. Welling, "Auto-encoding variational Bayes", ICLR 2014, arXiv:1312.6114.
    M. Schöberl, N. Zabaras, P.-S. Koutsourelakis, "Predictive collective variable discovery with
    deep Bayesian models", J. Chem. Phys. 150, 024109 (2019).
    """

    def __init__(self, n_features, n_cv, hidden=(40,), activation="tanh", scale_groups=None, beta=1.0,
                 decoder_prior=None):
        beta = check_number("beta", beta, example="1.0")
        prior = make_prior(decoder_prior)
        super().__init__(n_features, n_cv, scale_groups)
        hidden = self._set_layers(hidden, activation)
        self.beta = beta
        self.encoder = FeedForward([n_features, *hidden, 2 * n_cv], activation)
        self.decoder = FeedForward([n_cv, *hidden[::-1], n_features], activation)
        self.decoder_log_var = nn.Parameter(torch.zeros(n_features))
        self._decoder_prior = prior
        self.decoder_prior = None if prior is None else prior.config()

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
        terms = {"reconstruction": gaussian_nll(self.normalization(target), self.decoder(z), log_var_x),
                 "kl": self.beta * standard_normal_kl(mean, log_var)}
        if self._decoder_prior is not None:  # the same value for every frame: its weighted mean is itself
            terms["prior"] = self.prior_term().expand(len(x))
        return terms

    def on_fit_start(self, n_frames):
        """Record the number of training frames (called by :class:`mdcvkit.training.Trainer`); it scales the prior."""
        self.n_train = int(n_frames)

    def decoder_parameters(self):
        """The decoder parameters θ as one flat tensor (weights and biases of ``decoder``, with gradient)."""
        return torch.cat([p.reshape(-1) for p in self.decoder.parameters()])

    def prior_term(self):
        """−log p(θ) / n_train of the decoder prior (a scalar tensor); 0 without a prior."""
        if self._decoder_prior is None:
            return self.decoder_log_var.new_zeros(())
        if getattr(self, "n_train", None) is None:
            raise ValueError("decoder_prior is scaled by the number of training frames, which this model does not "
                             "know yet; train it with mdcvkit.training.Trainer (or call on_fit_start(n_frames))")
        return self._decoder_prior.penalty(self.decoder_parameters()) / self.n_train
