"""What every model of the autoencoder family shares: input normalisation, encode, decode, loss."""

import numpy as np
import torch
from torch import nn

from .._checks import check_int, is_int
from .._params import get_params
from ..training import weighted_mean
from .mlp import ACTIVATIONS

__all__ = ["Normalization", "BaseAutoencoder", "apply_in_chunks", "check_hidden"]


def apply_in_chunks(function, values, chunk=65536):
    """Apply a model function to rows of ``values`` in chunks, without gradients.

    Parameters
    ----------
    function : callable
        Maps a float32 tensor (n, ...) to a tensor (n, ...), e.g. ``model.encode``.
    values : array_like or torch.Tensor, shape (n_frames, ...)
        Input rows (a numpy array, memory map or tensor).
    chunk : int, default 65536
        Rows per call, bounding the memory of intermediate activations.

    Returns
    -------
    numpy.ndarray, shape (n_frames, ...)
    """
    with torch.no_grad():
        return np.concatenate([
            function(torch.as_tensor(np.asarray(values[start:start + chunk]), dtype=torch.float32)).numpy()
            for start in range(0, len(values), chunk)])


class Normalization(nn.Module):
    """Standardise features with (weighted) means and standard deviations from the training data.

    Features of one *scale group* share one scale, the root mean square of
    their standard deviations: Cartesian coordinates stay isotropic (so the
    loss is a mean squared deviation in Å, not dominated by the noise of
    atoms that barely move), while features of different kinds (distances,
    sin/cos of dihedrals) are put on a common footing. Every feature in its
    own group gives the usual per-feature standardisation. Features that are
    constant (zero variance) get a scale of 1, map to 0 and are never divided
    by zero; ``constant`` marks them.

    Parameters
    ----------
    n_features : int
        Number of input features.
    groups : array_like of int, shape (n_features,), optional
        Scale group of each feature; each feature its own group when None.
    """

    def __init__(self, n_features, groups=None):
        super().__init__()
        groups = torch.arange(n_features) if groups is None else torch.as_tensor(groups, dtype=torch.long)
        if groups.shape != (n_features,):
            raise ValueError(f"groups has shape {tuple(groups.shape)}; pass one group per feature ({n_features})")
        self.register_buffer("groups", groups)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.register_buffer("constant", torch.zeros(n_features, dtype=torch.bool))

    def fit(self, features, weights=None):
        """Set means and scales from ``features`` (n_frames, n_features) and optional frame weights.

        Statistics are accumulated in float64 through :func:`mdcvkit.training.weighted_mean`.
        """
        x = torch.as_tensor(features).to(torch.float64)
        mean = weighted_mean(x, weights)
        variance = weighted_mean((x - mean) ** 2, weights)
        constant = torch.sqrt(variance) <= 1e-6 * torch.clamp(mean.abs(), min=1.0)
        groups = self.groups.to(x.device)
        n_groups = int(groups.max()) + 1
        live = (~constant).to(variance.dtype)
        group_variance = torch.zeros(n_groups, dtype=variance.dtype, device=x.device).index_add_(
            0, groups, variance * live)
        group_count = torch.zeros(n_groups, dtype=variance.dtype, device=x.device).index_add_(0, groups, live)
        scale = torch.sqrt(group_variance / group_count.clamp(min=1))[groups]
        scale = torch.where(constant | (scale <= 0), torch.ones_like(scale), scale)
        self.mean.copy_(mean.to(self.mean))
        self.scale.copy_(scale.to(self.scale))
        self.constant.copy_(constant)
        return self

    def forward(self, x):
        return (x - self.mean) / self.scale

    def inverse(self, y):
        """Map normalised features back to feature units."""
        return y * self.scale + self.mean


def check_hidden(hidden, name="hidden"):
    """Return ``hidden`` as a tuple of int, or raise naming ``name`` unless it is a sequence of positive integers.

    Parameters
    ----------
    hidden : sequence of int
        Hidden layer sizes, e.g. ``(40,)`` or ``(64, 32)``; an empty sequence means no hidden layer.

    Returns
    -------
    tuple of int

    Raises
    ------
    TypeError
        When ``hidden`` is a single number or a string rather than a sequence.
    ValueError
        When an entry is not a positive integer (``2.5`` is not truncated to 2).
    """
    if isinstance(hidden, (str, bytes)) or is_int(hidden) or not hasattr(hidden, "__iter__"):
        raise TypeError(f"{name}={hidden!r} must be a sequence of layer sizes, e.g. {name}=(40,) for one hidden "
                        f"layer of 40 units or {name}=(64, 32)")
    sizes = tuple(hidden)
    bad = [size for size in sizes if not is_int(size) or size < 1]
    if bad:
        raise ValueError(f"{name}={hidden!r} holds {bad[0]!r}, but layer sizes must be positive integers; "
                         f"pass e.g. {name}=(40,)")
    return tuple(int(size) for size in sizes)


class BaseAutoencoder(nn.Module):
    """Base of the autoencoder family.

    Subclasses build ``self.encoder`` and ``self.decoder`` and may override
    :meth:`encode` (the CV: deterministic, e.g. the encoder mean of a VAE),
    :meth:`decode` and :meth:`loss_terms`. Inputs are raw features; the model
    normalises them with its own :class:`Normalization`, fitted by the trainer.

    Parameters
    ----------
    n_features : int
        Number of input features.
    n_cv : int
        Dimension of the latent space (the CV).
    scale_groups : array_like of int, shape (n_features,), optional
        Scale group of each feature for :class:`Normalization` (a featurizer's
        ``scale_groups``); per-feature standardisation when None.
    """

    #: whether the model needs time-lagged pairs (x(t), x(t+lag)) as targets
    time_lagged = False

    def __init__(self, n_features, n_cv, scale_groups=None):
        super().__init__()
        check_int(n_features, "n_features", fix="pass the number of input features, e.g. n_features=30")
        check_int(n_cv, "n_cv", fix="pass e.g. n_cv=2")
        if not 0 < n_cv < n_features:
            raise ValueError(
                f"n_cv={n_cv} must be at least 1 and smaller than the number of features "
                f"({n_features}); choose a smaller n_cv or richer features"
            )
        self.n_features = int(n_features)
        self.n_cv = int(n_cv)
        self.normalization = Normalization(n_features, scale_groups)
        self.scale_groups = None if scale_groups is None else self.normalization.groups.tolist()

    def _set_layers(self, hidden, activation):
        """Check and store ``hidden`` and ``activation``; return the hidden sizes as a list of int."""
        self.hidden = check_hidden(hidden)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not known; use one of {list(ACTIVATIONS)}")
        self.activation = activation
        return list(self.hidden)

    def get_params(self):
        """Settings of this model, read back from its ``__init__`` signature (plain Python data).

        Returns
        -------
        dict
            ``{name: value}``; ``type(model)(**model.get_params())`` builds an untrained twin.
        """
        return get_params(self)

    def encode(self, x):
        """CV of raw features ``x`` (n_frames, n_features) -> (n_frames, n_cv)."""
        return self.encoder(self.normalization(x))

    def decode(self, z):
        """Features (in feature units) decoded from latent points ``z`` (n_frames, n_cv)."""
        return self.normalization.inverse(self.decoder(z))

    def forward(self, x):
        return self.encode(x)

    def loss_terms(self, x, target):
        """Per-frame loss terms ``{name: tensor (n_frames,)}`` for a batch of raw features."""
        raise NotImplementedError

    def loss(self, x, target=None, weights=None):
        """Total loss and its terms, each the weighted mean over the frames of the batch.

        Parameters
        ----------
        x : torch.Tensor, shape (n, n_features)
            Raw input features.
        target : torch.Tensor, shape (n, n_features), optional
            Raw target features (``x(t + lag)`` for time-lagged models); ``x`` when None.
        weights : torch.Tensor, shape (n,), optional
            Frame weights; uniform when None.

        Returns
        -------
        total : torch.Tensor (scalar)
        terms : dict of str to torch.Tensor
            Each term's weighted mean, detached from the graph.
        """
        terms = self.loss_terms(x, x if target is None else target)
        means = {name: weighted_mean(value, weights) for name, value in terms.items()}
        total = sum(means.values())
        return total, {name: value.detach() for name, value in means.items()}
