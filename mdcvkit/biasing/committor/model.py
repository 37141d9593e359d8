"""The committor network and its variational loss, trained through :class:`mdcvkit.training.Trainer`.

A committor is a :class:`~mdcvkit.analysis.CollectiveVariable` like every CV: positions (Å) ->
featurizer -> :class:`CommittorModel` (normalisation -> MLP -> sigmoid) -> q in [0, 1]. It
compiles to an OpenMM expression wherever the featurizer does, so umbrella windows along logit q bias
through :func:`mdcvkit.biasing.add_cv_bias`.

The loss is the time-discrete form of the variational principle for the committor (Dirichlet
form), on pairs ``(X_0, X_τ)`` where ``X_0`` was drawn in a window and ``X_τ`` ended an unbiased
trajectory of length τ started there:

``L(q) = ½ Σ_n w_n (q̃(X_τ,n) − q̃(X_0,n))² / Σ_n w_n + λ Σ_{x ∈ A ∪ B} (q(x) − 1_B(x))² / n``,

with ``q̃ = 0`` on A, ``1`` on B and ``q`` elsewhere, and ``w_n`` the weight of ``X_0,n`` in the
unbiased density (MBAR). The first term's minimiser over functions is the committor; the second
makes the network itself 0 on A and 1 on B. The Trainer takes one feature matrix: each pair is a
"trajectory" of two rows (lag 1), and the two extra columns hold the basin label (0 A, 1 B, −1
neither) and the weight, so that the weights enter the loss as importance weights rather than
through the Trainer's multinomial resampling, which would draw the rare transition-region frames
too seldom.

References
----------
G. M. Rotskoff, A. R. Mitchell, E. Vanden-Eijnden, "Active importance sampling for variational
objectives dominated by rare events: consequences for optimization and generalization",
Proceedings of Machine Learning Research 145, 757 (2022).
"""

import copy

import numpy as np
import torch
from torch import nn

from ..._checks import check_int, check_number
from ..._params import get_params
from ...models import ACTIVATIONS, FeedForward, Normalization
from ...models.base import BaseAutoencoder, check_hidden
from ...training import normalize_weights

__all__ = ["CommittorModel", "fit_committor"]

#: label of a frame in no basin, in basin A, in basin B
NEITHER, IN_A, IN_B = -1, 0, 1


class CommittorModel(nn.Module):
    """Features -> normalisation -> MLP -> sigmoid: the committor q in [0, 1] as a one-component CV.

    Parameters
    ----------
    n_features : int
        Number of input features.
    hidden : sequence of int, default (32, 32)
        Hidden layer sizes.
    activation : {"tanh", "relu", "elu"}, default "tanh"
        Activation of the hidden layers (tanh keeps ∇q smooth for the reactive flux).
    boundary_weight : float, default 1.0
        λ of the boundary term (dimensionless).
    scale_groups : array_like of int, optional
        Scale group of each feature (a featurizer's ``scale_groups``).

    Examples
    --------
    >>> model = CommittorModel(2, hidden=(16,))
    >>> cv = mk.CollectiveVariable(Positions(1, axes=(0, 1)), model)   # doctest: +SKIP
    """

    n_cv = 1

    def __init__(self, n_features, hidden=(32, 32), activation="tanh", boundary_weight=1.0, scale_groups=None):
        super().__init__()
        self.n_features = check_int(n_features, "n_features", fix="pass the featurizer's n_features")
        if activation not in ACTIVATIONS or activation is None:
            raise ValueError(f"activation={activation!r} is not known; use one of "
                             f"{[a for a in ACTIVATIONS if a is not None]}")
        self.hidden = check_hidden(hidden)
        self.activation = activation
        self.boundary_weight = check_number("boundary_weight", boundary_weight, strict=True, example="1.0")
        self.normalization = Normalization(self.n_features, scale_groups)
        self.scale_groups = None if scale_groups is None else self.normalization.groups.tolist()
        self.encoder = nn.Sequential(FeedForward([self.n_features, *self.hidden, 1], activation), nn.Sigmoid())

    def get_params(self):
        """Settings read back from ``__init__`` (``type(m)(**m.get_params())`` builds an untrained twin)."""
        return get_params(self)

    def encode(self, x):
        """Committor of raw features ``x`` (n_frames, n_features) -> (n_frames, 1)."""
        return self.encoder(self.normalization(x))

    def logit(self, x):
        """``z = logit q`` of raw features ``x`` (n_frames, n_features) -> (n_frames, 1), before the sigmoid."""
        return self.encoder[:-1](self.normalization(x))

    def logit_model(self):
        """A copy whose output is ``z = logit q`` (the samplers bias z, not q)."""
        logit = copy.deepcopy(self)
        logit.encoder = logit.encoder[:-1]
        return logit

    def forward(self, x):
        return self.encode(x)


def _clamped(q, label):
    """q with the basin values put in: 0 on A, 1 on B, q elsewhere."""
    return torch.where(label >= 0, label, q)


class _PairColumns(nn.Module):
    """Fits the committor's normalisation on the feature columns of the Trainer's wider matrix."""

    def __init__(self, normalization):
        super().__init__()
        self.inner = normalization

    def fit(self, features, weights=None):
        self.inner.fit(features[:, :-2], weights)
        return self


class _PairLoss(nn.Module):
    """What the Trainer trains: a :class:`CommittorModel` seen through rows ``[features, label, weight]``."""

    def __init__(self, committor):
        super().__init__()
        self.committor = committor
        self.n_features = committor.n_features + 2
        self.normalization = _PairColumns(committor.normalization)

    def loss_terms(self, x, target):
        n = self.committor.n_features
        q0 = self.committor.encode(x[:, :n])[:, 0]
        qt = self.committor.encode(target[:, :n])[:, 0]
        label0, label_t, weight = x[:, n], target[:, n], x[:, n + 1]
        variational = 0.5 * weight * (_clamped(qt, label_t) - _clamped(q0, label0)) ** 2
        boundary = sum(torch.where(label >= 0, (q - label) ** 2, torch.zeros_like(q))
                       for q, label in ((q0, label0), (qt, label_t)))
        return {"variational": variational, "boundary": self.committor.boundary_weight * boundary}

    loss = BaseAutoencoder.loss  # each term's weighted mean over the batch, as for every model the Trainer fits


def fit_committor(model, features, lagged_features, labels, lagged_labels, log_weights, trainer):
    """Train a copy of ``model`` on pairs ``(X_0, X_τ)`` through ``trainer``.

    Parameters
    ----------
    model : CommittorModel
        The starting point (copied, never changed): a fresh model or the previous iteration's.
    features, lagged_features : numpy.ndarray, shape (n_pairs, n_features)
        Features of ``X_0`` and ``X_τ``.
    labels, lagged_labels : numpy.ndarray of int, shape (n_pairs,)
        Basin of each frame: 0 in A, 1 in B, −1 in neither.
    log_weights : numpy.ndarray, shape (n_pairs,)
        Log weights of ``X_0`` in the unbiased density (any normalisation).
    trainer : mdcvkit.training.Trainer

    Returns
    -------
    model : CommittorModel
        The fitted copy, in eval mode.
    history : xarray.Dataset
        The Trainer's loss history (terms ``train_variational`` and ``train_boundary``).
    """
    n_pairs = len(features)
    weights = normalize_weights(n_pairs, log_weights=log_weights) * n_pairs  # mean 1: the loss keeps its scale
    rows = np.empty((2 * n_pairs, model.n_features + 2))
    rows[0::2, :-2], rows[1::2, :-2] = features, lagged_features
    rows[0::2, -2], rows[1::2, -2] = labels, lagged_labels
    rows[0::2, -1] = rows[1::2, -1] = weights
    result = trainer.fit(_PairLoss(model), rows, lengths=[2] * n_pairs, lag=1)
    return result.model.committor.eval(), result.history
