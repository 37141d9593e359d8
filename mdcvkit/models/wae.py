"""The Wasserstein autoencoder with the MMD penalty (WAE-MMD)."""

import torch

from .._checks import check_number
from .ae import AutoEncoder
from .losses import mmd_per_frame

__all__ = ["WassersteinAutoEncoder"]

#: Seed of the prior samples of the validation loss (fixed, so that early stopping sees a deterministic loss).
EVAL_SEED = 0


class WassersteinAutoEncoder(AutoEncoder):
    """Deterministic autoencoder whose latent distribution is pulled to N(0, I) by an MMD penalty.

    The per-frame loss has two terms,

    ``reconstruction`` = mean over features of (f(g(x)) − x)², x the normalised features,
    ``mmd`` = λ · mᵢ, the frame's share of the unbiased estimate of MMD² between the
    encoded batch {g(xᵢ)} and as many samples of the prior N(0, I), with the
    RBF kernel k(a, b) = exp(−‖a − b‖² / (2 h²)),

    see :func:`mdcvkit.models.losses.mmd_per_frame`: the mean of ``mmd`` over
    a minibatch is λ MMD² of that minibatch. MMD² is a statistic of a set of
    frames, so the ``mmd`` term is not a per-frame error in the usual sense
    (a single frame has no MMD); it is split per frame so that it is reduced
    like every other term. Prior samples are fresh in training mode; in
    evaluation mode they come from a fixed seed and the frames are taken in
    a fixed random order, so that blocks of time-ordered validation frames
    are not compared with the prior one region at a time and the validation
    loss is deterministic. The encoder is deterministic; :meth:`encode` is the CV.

    Parameters
    ----------
    n_features, n_cv, hidden, activation, scale_groups
        As in :class:`mdcvkit.models.AutoEncoder`.
    mmd_weight : float, default 10.0
        λ ≥ 0, weight of the MMD penalty (Ojeda-May 2025: λ = 10).
    kernel_bandwidth : float, default 1.0
        Bandwidth h > 0 of the RBF kernel, in latent units (the prior has unit variance).

    References
    ----------
    I. Tolstikhin, O. Bousquet, S. Gelly, B. Schölkopf, "Wasserstein auto-encoders", ICLR 2018,
    arXiv:1711.01558.
    P. Ojeda-May, "Exploring the conformational space of proteins with Wasserstein autoencoders" (2025).
    A. Gretton et al., "A kernel two-sample test", J. Mach. Learn. Res. 13, 723 (2012).
    """

    def __init__(self, n_features, n_cv, hidden=(40,), activation="tanh", scale_groups=None,
                 mmd_weight=10.0, kernel_bandwidth=1.0):
        mmd_weight = check_number("mmd_weight", mmd_weight, example="10.0")
        kernel_bandwidth = check_number("kernel_bandwidth", kernel_bandwidth, strict=True, example="1.0")
        super().__init__(n_features, n_cv, hidden, activation, scale_groups)
        self.mmd_weight = mmd_weight
        self.kernel_bandwidth = kernel_bandwidth

    def sample_prior(self, n, generator=None, cluster=None):
        """``n`` latent points drawn from the prior N(0, I), shape (n, n_cv)."""
        if cluster is not None:
            raise ValueError(f"cluster={cluster!r} applies to model='gmvae' only; leave cluster=None")
        device = next(self.parameters()).device
        if generator is None:
            return torch.randn(n, self.n_cv, device=device)
        return torch.randn(n, self.n_cv, generator=generator).to(device)

    def loss_terms(self, x, target):
        z = self.encode(x)
        error = (self.decoder(z) - self.normalization(target)) ** 2
        if self.training:
            prior = self.sample_prior(len(z)).to(z.dtype)
            mmd = mmd_per_frame(z, prior, self.kernel_bandwidth)
        else:  # fixed prior samples, frames in a fixed random order: blocks mix all of the data
            generator = torch.Generator().manual_seed(EVAL_SEED)
            order = torch.randperm(len(z), generator=generator).to(z.device)
            prior = self.sample_prior(len(z), generator).to(z.dtype)
            mmd = torch.empty_like(error[:, 0])
            mmd[order] = mmd_per_frame(z[order], prior, self.kernel_bandwidth)
        return {"reconstruction": error.mean(dim=1), "mmd": self.mmd_weight * mmd}
