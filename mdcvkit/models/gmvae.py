"""The Gaussian-mixture variational autoencoder: a categorical cluster y and a Gaussian z given y."""

import math
import numbers

import torch
from torch import nn

from .base import BaseAutoencoder
from .losses import gaussian_kl, gaussian_nll
from .mlp import FeedForward
from .vae import LOG_VAR_MAX, LOG_VAR_MIN

__all__ = ["GaussianMixtureVAE"]


class GaussianMixtureVAE(BaseAutoencoder):
    """Variational autoencoder whose prior is a mixture of ``n_clusters`` Gaussians.

    Generative model: y ~ Cat(1/K), z | y ~ N(μ_y, diag σ_y²) with learned
    cluster means and variances, x | z ~ N(f(z), diag σₓ²) with a learned
    decoder variance that does not depend on z. Inference model:
    q(y|x) = Cat(π(x)) and q(z|x, y) = N(μ(x, y), diag σ²(x, y)). The loss is
    the negative ELBO with the sum over y done exactly (Shu, 2016; Bozkurt
    Varolgüneş et al. 2020), as three per-frame terms:

    ``reconstruction`` = Σ_y π_y(x) · [−log p(x | z_y)],  z_y ~ q(z|x, y),
    ``kl_z`` = Σ_y π_y(x) · KL(q(z|x, y) ‖ p(z|y))  (closed form),
    ``kl_y`` = KL(q(y|x) ‖ Cat(1/K)) = Σ_y π_y log(K π_y),

    with x the normalised features (likelihood summed over features). In
    evaluation mode z_y = μ(x, y), so the validation loss is deterministic.
    :meth:`encode` returns the mean of q(z|x), Σ_y π_y(x) μ(x, y): the CV is
    deterministic. :meth:`cluster_probabilities` gives π(x).

    With a lag (``AutoencoderCV(model="gmvae", lag=τ)``) the decoder
    reconstructs x(t + τ) from x(t): the time-lagged variant of the paper.

    Parameters
    ----------
    n_features, n_cv, hidden, activation, scale_groups
        As in :class:`mdcvkit.models.AutoEncoder`.
    n_clusters : int, default 4
        Number K ≥ 2 of mixture components (clusters).

    References
    ----------
    Y. Bozkurt Varolgüneş, T. Bereau, J. F. Rudzinski, "Interpretable embeddings from molecular
    simulations using Gaussian mixture variational autoencoders", Mach. Learn.: Sci. Technol. 1,
    015012 (2020).
    R. Shu, "Gaussian mixture VAE: lessons in variational inference, generative models, and deep
    nets" (2016), http://ruishu.io/2016/12/25/gmvae/.
    N. Dilokthanakul et al., "Deep unsupervised clustering with Gaussian mixture variational
    autoencoders", arXiv:1611.02648 (2016).
    """

    def __init__(self, n_features, n_cv, hidden=(40,), activation="tanh", scale_groups=None, n_clusters=4):
        if not isinstance(n_clusters, numbers.Integral) or isinstance(n_clusters, bool) or n_clusters < 2:
            raise ValueError(f"n_clusters={n_clusters!r} must be an integer >= 2, e.g. 4")
        super().__init__(n_features, n_cv, scale_groups)
        hidden = self._set_layers(hidden, activation)
        self.n_clusters = int(n_clusters)
        self.classifier = FeedForward([n_features, *hidden, n_clusters], activation)
        self.encoder = FeedForward([n_features + n_clusters, *hidden, 2 * n_cv], activation)
        self.decoder = FeedForward([n_cv, *hidden[::-1], n_features], activation)
        self.decoder_log_var = nn.Parameter(torch.zeros(n_features))
        # cluster means spread on a scale of 1 (drawn from the torch RNG that AutoencoderCV seeds)
        self.prior_mean = nn.Parameter(torch.randn(n_clusters, n_cv))
        self.prior_log_var = nn.Parameter(torch.zeros(n_clusters, n_cv))

    def cluster_logits(self, x):
        """Logits of q(y|x) for raw features ``x``, shape (n, n_clusters)."""
        return self.classifier(self.normalization(x))

    def cluster_probabilities(self, x):
        """Soft cluster assignment q(y|x) for raw features ``x``, shape (n, n_clusters); rows sum to 1."""
        return torch.softmax(self.cluster_logits(x), dim=-1)

    def encoder_moments(self, x):
        """Mean and log-variance of q(z|x, y) for every cluster y, each (n, n_clusters, n_cv)."""
        xn = self.normalization(x)
        n, k = len(xn), self.n_clusters
        onehot = torch.eye(k, dtype=xn.dtype, device=xn.device).expand(n, k, k)
        inputs = torch.cat([xn[:, None, :].expand(n, k, xn.shape[-1]), onehot], dim=-1)
        mean, log_var = self.encoder(inputs).chunk(2, dim=-1)
        return mean, log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)

    def encode(self, x):
        """The CV: mean of q(z|x) = Σ_y q(y|x) μ(x, y), shape (n, n_cv)."""
        mean, _ = self.encoder_moments(x)
        return (self.cluster_probabilities(x)[..., None] * mean).sum(dim=1)

    def sample_prior(self, n, generator=None, cluster=None):
        """``n`` latent points from the mixture prior, or from component ``cluster`` only; (n, n_cv)."""
        device = self.prior_mean.device
        if cluster is None:
            y = torch.randint(self.n_clusters, (n,), generator=generator).to(device)
        else:
            if not isinstance(cluster, numbers.Integral) or isinstance(cluster, bool) \
                    or not 0 <= cluster < self.n_clusters:
                raise ValueError(
                    f"cluster={cluster!r} must be an integer in [0, {self.n_clusters - 1}] "
                    f"(n_clusters={self.n_clusters}), or None to sample all clusters"
                )
            y = torch.full((n,), int(cluster), dtype=torch.long, device=device)
        noise = torch.randn(n, self.n_cv, generator=generator).to(device)
        std = torch.exp(0.5 * self.prior_log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX))
        return self.prior_mean[y] + std[y] * noise

    def loss_terms(self, x, target):
        logits = self.cluster_logits(x)
        log_pi = torch.log_softmax(logits, dim=-1)
        pi = log_pi.exp()
        mean, log_var = self.encoder_moments(x)  # (n, K, d)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean) if self.training else mean
        n, k = pi.shape
        decoded = self.decoder(z.reshape(n * k, self.n_cv)).reshape(n, k, self.n_features)
        log_var_x = self.decoder_log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)
        nll = gaussian_nll(self.normalization(target)[:, None, :], decoded, log_var_x)  # (n, K)
        kl_z = gaussian_kl(mean, log_var, self.prior_mean, self.prior_log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX))
        return {"reconstruction": (pi * nll).sum(dim=-1),
                "kl_z": (pi * kl_z).sum(dim=-1),
                "kl_y": (pi * (log_pi + math.log(k))).sum(dim=-1)}
