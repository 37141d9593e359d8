"""The deterministic bottleneck autoencoder of FEBILAE."""

from .base import BaseAutoencoder
from .mlp import FeedForward

__all__ = ["AutoEncoder"]


class AutoEncoder(BaseAutoencoder):
    """Symmetric bottleneck autoencoder: features -> hidden -> CV -> hidden -> features.

    The loss is the mean squared reconstruction error of the normalised
    features, per frame averaged over features, then the weighted mean over
    frames.

    Parameters
    ----------
    n_features : int
        Number of input features.
    n_cv : int
        Dimension of the bottleneck (the CV).
    hidden : sequence of int, default (40,)
        Hidden layer sizes of the encoder; the decoder mirrors them.
    activation : {"tanh", "relu", "elu", None}, default "tanh"
        Activation of hidden layers; None gives a linear autoencoder, whose
        CV spans the same subspace as the leading principal components.
    scale_groups : array_like of int, optional
        See :class:`mdcvkit.models.BaseAutoencoder`.

    References
    ----------
    Z. Belkacemi, P. Gkeka, T. Lelièvre, G. Stoltz, J. Chem. Theory Comput. 18, 59 (2022).
    """

    def __init__(self, n_features, n_cv, hidden=(40,), activation="tanh", scale_groups=None):
        super().__init__(n_features, n_cv, scale_groups)
        hidden = self._set_layers(hidden, activation)
        self.encoder = FeedForward([n_features, *hidden, n_cv], activation)
        self.decoder = FeedForward([n_cv, *hidden[::-1], n_features], activation)

    def loss_terms(self, x, target):
        reconstruction = self.decoder(self.encode(x))
        error = (reconstruction - self.normalization(target)) ** 2
        return {"reconstruction": error.mean(dim=1)}
