"""NumPy twins of learned CVs: the per-step value and gradient of the Python force without torch.

A CV that OpenMM cannot compile (Kabsch-aligned or raw Cartesian inputs) is evaluated from Python
at every MD step, on one frame. Through torch that is some sixty tiny operations, forward and
backward, and their dispatch is most of the cost: about 0.5 ms for a 30-40-2 encoder on the
aligned heavy atoms of alanine dipeptide, some 45 times the unbiased step. The same arithmetic
written out in NumPy, with the closed-form gradient of the Kabsch rotation, takes an eighth of
that (``benchmarks/bench_iterative.py``, ``benchmarks/bench_bias.py``). :func:`numpy_twin` builds
it for the CVs the package trains: a :class:`~mdcvkit.analysis.CollectiveVariable` (or
FEBILAE's scaled CV) on :class:`~mdcvkit.features.AlignedPositions` or
:class:`~mdcvkit.features.Positions`, whose model encodes through its normalisation and a
feed-forward encoder of linear layers and tanh, ReLU or ELU (the VAE's encoder mean included).
Anything else stays with torch.
"""

import numpy as np
from torch import nn

from ..analysis import CollectiveVariable
from ..features import AlignedPositions, Positions
from ..models.base import BaseAutoencoder
from ..models.vae import VariationalAutoEncoder

__all__ = ["NumpyCV", "numpy_twin"]


_NEXT, _AFTER = [1, 2, 0], [2, 0, 1]


def _cross(a, b):
    """``np.cross`` along the last axis, without its per-call overhead (a fifth of the time on small arrays)."""
    return a[..., _NEXT] * b[..., _AFTER] - a[..., _AFTER] * b[..., _NEXT]


def _tanh(x):
    y = np.tanh(x)
    return y, 1.0 - y * y


def _relu(x):
    return np.maximum(x, 0.0), (x > 0).astype(float)


def _elu(alpha):
    def elu(x):
        negative = alpha * np.expm1(np.minimum(x, 0.0))
        return np.where(x > 0, x, negative), np.where(x > 0, 1.0, negative + alpha)

    return elu


def _layer(module):
    """``("linear", W, b)`` or ``("activation", f)`` with ``f(x) -> (value, derivative)``; None if unknown."""
    if isinstance(module, nn.Linear):
        weight = module.weight.detach().double().cpu().numpy()
        bias = module.bias.detach().double().cpu().numpy() if module.bias is not None else np.zeros(len(weight))
        return "linear", weight, bias
    if isinstance(module, nn.Tanh):
        return "activation", _tanh
    if isinstance(module, nn.ReLU):
        return "activation", _relu
    if isinstance(module, nn.ELU):
        return "activation", _elu(float(module.alpha))
    if isinstance(module, nn.Identity):
        return "activation", lambda x: (x, np.ones_like(x))
    return None


class NumpyCV:
    """A CV on aligned or raw Cartesian positions with a feed-forward encoder, in NumPy (float64).

    Built by :func:`numpy_twin`; evaluates one frame at a time.

    Parameters
    ----------
    n_atoms : int
        Atoms the CV reads.
    reference : numpy.ndarray, shape (n_atoms, 3) or None
        Kabsch reference in Å (:class:`~mdcvkit.features.AlignedPositions`); None for raw positions.
    weights : numpy.ndarray, shape (n_atoms,) or None
        Fitting weights of the Kabsch fit.
    mean, std : numpy.ndarray, shape (n_features,)
        The model's feature normalisation, ``(f - mean) / std``.
    layers : list
        Encoder layers, as :func:`_layer` returns them.
    offset, scale : numpy.ndarray, shape (n_cv,)
        Output shift and scale, ``(z - offset) / scale``.
    atoms : sequence of int, optional
        Atoms whose aligned coordinates are the features (:class:`~mdcvkit.features.AlignedPositions`);
        default all.
    """

    def __init__(self, n_atoms, reference, weights, mean, std, layers, offset, scale, atoms=None):
        self.n_atoms = int(n_atoms)
        self.atoms = np.arange(self.n_atoms) if atoms is None else np.asarray(atoms)
        self.w = None if reference is None else weights / weights.sum()
        self.reference = None if reference is None else reference - self.w @ reference
        self.mean, self.std = mean, std
        self.layers = layers
        self.offset, self.scale = offset, scale
        self._output_jacobian = np.diag(1.0 / scale)  # d((z - offset) / scale) / dz

    def _fit(self, x):
        """Kabsch fit of one frame: fitted positions, covariance and rotation (``centred @ q``)."""
        centred = x - self.w @ x
        covariance = (self.w[:, None] * centred).T @ self.reference
        u, _, vt = np.linalg.svd(covariance)
        if np.linalg.det(u @ vt) < 0:  # proper rotations only: flip the axis of the smallest singular value
            u[:, 2] = -u[:, 2]
        rotation = u @ vt
        return centred @ rotation, covariance, rotation

    def _fit_vjp(self, upstream, fitted, covariance, rotation):
        """Gradients on the positions of upstream gradients ``(k, n_atoms, 3)`` on the fitted positions.

        See :class:`mdcvkit.features._KabschFit` for the formula.
        """
        a = rotation.T @ covariance
        a = 0.5 * (a + a.T)
        k = np.trace(a) * np.eye(3) - a
        torque = _cross(fitted[None], upstream).sum(1)  # (k, 3)
        v = np.linalg.solve(k, torque.T).T
        turned = upstream + self.w[None, :, None] * _cross(self.reference[None], v[:, None, :])
        back = turned @ rotation.T
        return back - self.w[None, :, None] * back.sum(1, keepdims=True)

    def __call__(self, positions):
        """CV values and gradients at one configuration.

        Parameters
        ----------
        positions : numpy.ndarray, shape (n_atoms, 3)
            Positions in Å.

        Returns
        -------
        values : numpy.ndarray, shape (n_cv,)
            CV values, in the CV's units.
        gradients : numpy.ndarray, shape (n_cv, n_atoms, 3)
            ``dξ_k/dx`` in CV units per Å.
        """
        if self.reference is not None:
            fitted, covariance, rotation = self._fit(positions)
        else:
            fitted = positions
        h = (fitted[self.atoms].reshape(-1) - self.mean) / self.std
        slopes = []
        for layer in self.layers:
            if layer[0] == "linear":
                h = layer[1] @ h + layer[2]
            else:
                h, slope = layer[1](h)
                slopes.append(slope)
        values = (h - self.offset) / self.scale
        jacobian = self._output_jacobian
        for layer in reversed(self.layers):
            jacobian = jacobian @ layer[1] if layer[0] == "linear" else jacobian * slopes.pop()[None, :]
        upstream = np.zeros((len(values), self.n_atoms, 3))
        upstream[:, self.atoms] = (jacobian / self.std[None, :]).reshape(len(values), len(self.atoms), 3)
        if self.reference is None:
            return values, upstream
        return values, self._fit_vjp(upstream, fitted, covariance, rotation)


def numpy_twin(cv):
    """The :class:`NumpyCV` that computes ``cv``, or None when ``cv`` is not of a form it covers.

    Covered: a :class:`~mdcvkit.analysis.CollectiveVariable` (or the scaled CV of
    :class:`~mdcvkit.biasing.IterativeCVLearning`) on :class:`~mdcvkit.features.AlignedPositions`
    or :class:`~mdcvkit.features.Positions`, whose model is an autoencoder with the base
    ``encode`` (normalisation, then an ``nn.Sequential`` encoder of ``nn.Linear``, ``nn.Tanh``,
    ``nn.ReLU``, ``nn.ELU`` and ``nn.Identity``: AE, time-lagged, denoising and Wasserstein AEs)
    or a VAE (the encoder mean); not the Gaussian-mixture VAE, whose CV mixes clusters. The twin
    is a float64 copy of the parameters at the time of the call.

    Parameters
    ----------
    cv : object
        A CV, positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``.

    Returns
    -------
    NumpyCV or None
    """
    from .iterative import _ScaledCV  # at call time: iterative imports boundary, which imports this module

    if type(cv) not in (CollectiveVariable, _ScaledCV):
        return None
    featurizer, model = cv.featurizer, cv.model
    if type(featurizer) not in (AlignedPositions, Positions) or not isinstance(model, BaseAutoencoder):
        return None
    variational = type(model).encode is VariationalAutoEncoder.encode
    if not (type(model).encode is BaseAutoencoder.encode or variational):
        return None
    if not isinstance(model.encoder, nn.Sequential):
        return None
    layers = [_layer(module) for module in model.encoder]
    if not layers or any(layer is None for layer in layers):
        return None
    n_cv = model.n_cv
    if variational:  # the CV is the encoder mean: the first n_cv outputs of its last (linear) layer
        if layers[-1][0] != "linear":
            return None
        layers[-1] = ("linear", layers[-1][1][:n_cv], layers[-1][2][:n_cv])
    if isinstance(cv, _ScaledCV):
        offset, scale = (cv.offset.detach().double().cpu().numpy(), cv.scale.detach().double().cpu().numpy())
    else:
        offset, scale = np.zeros(n_cv), np.ones(n_cv)
    norm = model.normalization
    if isinstance(featurizer, AlignedPositions):
        reference = featurizer.reference.detach().double().cpu().numpy()
        weights = featurizer.weights.detach().double().cpu().numpy()
        atoms = featurizer.atoms
    else:
        reference = weights = atoms = None
    return NumpyCV(featurizer.n_atoms, reference, weights, norm.mean.detach().double().cpu().numpy(),
                   norm.scale.detach().double().cpu().numpy(), layers, offset, scale, atoms)  # fmt: skip
