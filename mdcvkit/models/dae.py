"""The denoising autoencoder: reconstruct clean features from corrupted ones."""

import torch

from .._checks import check_number
from .ae import AutoEncoder

__all__ = ["DenoisingAutoEncoder"]


class DenoisingAutoEncoder(AutoEncoder):
    """Bottleneck autoencoder that reconstructs clean features from Gaussian-corrupted inputs.

    In training mode every input is corrupted, x̃ = x + noise · ε with
    ε ~ N(0, 1) per feature, in feature units (Å for positions and
    distances), before encoding; the loss is the mean squared error between
    the decoded CV of x̃ and the clean, normalised target, per frame averaged
    over features. In evaluation mode (validation loss, CV, transform) no
    noise is added, so the CV is deterministic.

    Parameters
    ----------
    n_features, n_cv, hidden, activation, scale_groups
        As in :class:`mdcvkit.models.AutoEncoder`.
    noise : float, default 0.1
        Standard deviation of the corruption, in feature units (Å for
        aligned positions); 0 gives the plain autoencoder.

    References
    ----------
    P. Vincent, H. Larochelle, Y. Bengio, P.-A. Manzagol, "Extracting and composing robust
    features with denoising autoencoders", Proc. ICML 2008, 1096.
    """

    def __init__(self, n_features, n_cv, hidden=(40,), activation="tanh", scale_groups=None, noise=0.1):
        noise = check_number("noise", noise, example="0.1 (std in feature units)")
        super().__init__(n_features, n_cv, hidden, activation, scale_groups)
        self.noise = noise

    def corrupt(self, x):
        """Inputs with Gaussian noise of std ``noise`` added in training mode; ``x`` unchanged otherwise."""
        if self.training and self.noise > 0:
            return x + self.noise * torch.randn_like(x)
        return x

    def loss_terms(self, x, target):
        reconstruction = self.decoder(self.encode(self.corrupt(x)))
        error = (reconstruction - self.normalization(target)) ** 2
        return {"reconstruction": error.mean(dim=1)}
