"""A CV module as NumPy: the per-step evaluation of the "python" route, derived layer by layer.

The torch module stays the one definition of a CV. For a :class:`mdcvkit.analysis.CollectiveVariable`
of featurizer -> normalisation -> encoder, :class:`NumpyCV` reads the module's own parts: the
featurizer's NumPy form (:meth:`mdcvkit.features.Featurizer.to_numpy`, which runs the same Kabsch
code as the torch forward), the normalisation's mean and scale, and each ``nn.Linear`` and
activation of the encoder with its derivative from :data:`NUMPY_ACTIVATIONS`. Its values and
Jacobian equal torch's to rounding (tested on the shipped data), at a fraction of the cost for one
frame: torch pays a fixed overhead per operation that one frame of a small network cannot repay.
Measured on :doc:`/findings/bias_routes`.
"""

import copy

import numpy as np
import torch
from torch import nn

__all__ = ["NUMPY_ACTIVATIONS", "NumpyCV", "network_layers"]


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


#: element-wise activations: module type -> (value of x, derivative given x and the value)
NUMPY_ACTIVATIONS = {
    nn.Tanh: (np.tanh, lambda x, y: 1.0 - y * y),
    nn.ReLU: (lambda x: np.maximum(x, 0.0), lambda x, y: (x > 0).astype(x.dtype)),
    nn.Sigmoid: (_sigmoid, lambda x, y: y * (1.0 - y)),
    nn.SiLU: (lambda x: x * _sigmoid(x), lambda x, y: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x)))),
    nn.Softplus: (lambda x: np.logaddexp(0.0, x), lambda x, y: _sigmoid(x)),
    nn.ELU: (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))), lambda x, y: np.where(x > 0, 1.0, y + 1.0)),
    nn.Identity: (lambda x: x, None),
    nn.Dropout: (lambda x: x, None),
}


def _flatten(module):
    if isinstance(module, nn.Sequential):
        return [layer for child in module for layer in _flatten(child)]
    return [module]


def network_layers(cv):
    """``(featurizer, mean, std, layers)`` of a CollectiveVariable whose CV is ``encoder(normalization(x))``.

    Parameters
    ----------
    cv : mdcvkit.analysis.CollectiveVariable
        The CV module.

    Returns
    -------
    featurizer : mdcvkit.features.Featurizer
    mean, std : numpy.ndarray, shape (n_features,)
        The normalisation: the encoder reads ``(features - mean) / std``.
    layers : list of torch.nn.Module
        The encoder's layers in float64, the last ``nn.Linear`` cut to the CV's ``n_cv`` outputs
        (a VAE's encoder also gives log-variances).

    Raises
    ------
    ValueError
        If the CV is not of that form (a mixture model's weighted means, a plain function); the
        result is checked against ``cv.model.encode`` on random features.
    """
    featurizer = getattr(cv, "featurizer", None)
    model = getattr(cv, "model", None)
    normalization = getattr(model, "normalization", None)
    encoder = getattr(model, "encoder", None)
    if featurizer is None or normalization is None or not isinstance(encoder, nn.Sequential):
        raise ValueError(
            f"{type(cv).__name__} is not a CollectiveVariable of featurizer -> normalization -> encoder; "
            f"bias it through route='python' (which evaluates it in torch)"
        )
    n_cv = int(cv.n_cv)
    layers = [copy.deepcopy(layer).double() for layer in _flatten(encoder)]
    if layers and isinstance(layers[-1], nn.Linear) and layers[-1].out_features > n_cv:
        last = layers[-1]
        cut = nn.Linear(last.in_features, n_cv, bias=last.bias is not None).double()
        with torch.no_grad():
            cut.weight.copy_(last.weight[:n_cv])
            if last.bias is not None:
                cut.bias.copy_(last.bias[:n_cv])
        layers[-1] = cut
    mean = normalization.mean.detach().double()
    std = normalization.scale.detach().double()
    features = mean + std * torch.randn(16, len(mean), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        expected = copy.deepcopy(model).double().eval().encode(features)
        try:
            got = nn.Sequential(*layers).eval()((features - mean) / std)
        except RuntimeError:  # the encoder takes more than the features (a mixture model's cluster)
            got = None
    if got is None or got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-9, atol=1e-9):
        raise ValueError(
            f"the CV of {type(model).__name__} is not encoder(normalization(x)) (e.g. a mixture model's "
            f"weighted means): it has no form outside torch; bias it through route='python' (which evaluates it in "
            f"torch)"
        )
    return featurizer, mean.numpy(), std.numpy(), layers


class NumpyCV:
    """Value and Jacobian of a CollectiveVariable at one frame, in NumPy (float64).

    Parameters
    ----------
    cv : mdcvkit.analysis.CollectiveVariable
        Featurizer with a NumPy form (:meth:`~mdcvkit.features.Featurizer.to_numpy`) ->
        normalisation -> encoder of ``nn.Linear`` layers and the activations of
        :data:`NUMPY_ACTIVATIONS`. The module is read once: later changes to it are not seen.

    Raises
    ------
    ValueError
        If the CV is not of that form (see :func:`network_layers`), the featurizer has no NumPy
        form, or a layer is not among those; such CVs are evaluated through torch.

    Examples
    --------
    >>> numpy_cv = NumpyCV(cv)  # doctest: +SKIP
    >>> values, jacobian = numpy_cv(positions)  # one frame (n_atoms, 3) in Å  # doctest: +SKIP
    """

    def __init__(self, cv):
        featurizer, self.mean, self.std, layers = network_layers(cv)
        self.features = featurizer.to_numpy()
        self.n_atoms = featurizer.n_atoms
        self._identity = np.eye(int(cv.n_cv))
        self.layers = []
        for layer in layers:
            if isinstance(layer, nn.Linear):
                bias = np.zeros(layer.out_features) if layer.bias is None else layer.bias.detach().numpy().copy()
                self.layers.append(("linear", layer.weight.detach().numpy().copy(), bias))
            elif type(layer) in NUMPY_ACTIVATIONS and _standard(layer):
                self.layers.append(("activation", *NUMPY_ACTIVATIONS[type(layer)]))
            else:
                raise ValueError(
                    f"layer {layer!r} has no NumPy form (Linear and {[t.__name__ for t in NUMPY_ACTIVATIONS]} with "
                    f"default settings have one); it is evaluated through torch"
                )

    def __call__(self, positions):
        """CV values and their Jacobian at one frame.

        Parameters
        ----------
        positions : numpy.ndarray, shape (n_atoms, 3)
            Positions of the CV's atoms in Å (float64).

        Returns
        -------
        values : numpy.ndarray, shape (n_cv,)
        jacobian : numpy.ndarray, shape (n_cv, n_atoms, 3)
            ``dξ_k/dx`` in CV units per Å.
        """
        features, pullback = self.features(positions)
        h = (features - self.mean) / self.std
        tape = []
        for kind, a, b in self.layers:
            if kind == "linear":
                tape.append((a, None))
                h = a @ h + b
            else:
                x, h = h, a(h)
                if b is not None:
                    tape.append((None, b(x, h)))
        grad = self._identity
        for weight, slope in reversed(tape):
            grad = grad @ weight if weight is not None else grad * slope
        return h, pullback(grad / self.std)


def _standard(layer):
    """Whether an activation has the settings :data:`NUMPY_ACTIVATIONS` assumes (ELU α = 1, Softplus β = 1)."""
    if isinstance(layer, nn.ELU):
        return layer.alpha == 1.0
    if isinstance(layer, nn.Softplus):
        return layer.beta == 1 and layer.threshold >= 20
    return True
