"""Affine maps of a model's CV and averages of autoencoders, computed exactly by one feed-forward encoder.

Autoencoders trained on the same frames from different initial weights find CVs that differ by more than
an affine map, and their differences are random; the average of several, each first mapped onto the
first one's CV, removes most of them (measured in ``docs/findings/febilae.md``). Both functions here
return a new model whose ``encode`` computes the mapped (or averaged) CV exactly, with no wrapper module:
the affine maps are folded into the last ``nn.Linear`` of the encoder, so every exporter sees an ordinary
feed-forward encoder.
"""

import copy
import warnings

import numpy as np
import torch
from torch import nn

from ..metrics import _affine_map, regscore
from .mlp import ACTIVATIONS, FeedForward

__all__ = ["MIN_AGREEMENT", "affine_cv", "average_autoencoders"]

#: R² of a member's CV mapped onto the first member's below which :func:`average_autoencoders` warns
MIN_AGREEMENT = 0.8


def _linear_layers(model, argument, from_features=True):
    """The ``nn.Linear`` layers of ``model.encoder`` (a feed-forward network), or a ValueError naming ``argument``."""
    encoder = getattr(model, "encoder", None)
    layers = [m for m in encoder if isinstance(m, nn.Linear)] if isinstance(encoder, nn.Sequential) else []
    if not layers or not isinstance(encoder[-1], nn.Linear) or layers[-1].out_features < model.n_cv \
            or (from_features and layers[0].in_features != model.n_features):
        raise ValueError(f"{argument} is a {type(model).__name__} whose encoder is not a feed-forward network "
                         f"from the features to a Linear layer with the CV among its outputs; pass models built on "
                         f"FeedForward encoders (ae, tae, vae, wae, dae); gmvae models are not averaged "
                         f"(n_models=1)")  # fmt: skip
    return layers


def _check_exact(model, reference, features, argument):
    """Raise unless ``model.encode(features)`` equals ``reference`` (the map is exact for this kind of model)."""
    with torch.no_grad():
        values = model.encode(features).double()
    tolerance = 1e-4 * (1.0 + reference.abs().max())
    if not torch.allclose(values, reference, rtol=1e-4, atol=float(tolerance)):
        raise ValueError(f"{argument}: the CV of a {type(model).__name__} is not the first outputs of its encoder's "
                         f"last Linear layer, so it cannot be mapped or averaged there; use model='ae', 'tae', 'vae', "
                         f"'wae' or 'dae', or n_models=1")  # fmt: skip


def _on_normalization(member, normalization):
    """A copy of ``member`` reading features normalised by ``normalization``, its first layer adjusted to match.

    Each member of an average was normalised on its own training split; with ``u = (x - m₀) / s₀`` the first
    layer ``W (x - m) / s + b`` is ``W diag(s₀ / s) u + b + W (m₀ - m) / s`` exactly.
    """
    copied = copy.deepcopy(member)
    first = _linear_layers(copied, "members")[0]
    mean, scale = member.normalization.mean.double(), member.normalization.scale.double()
    with torch.no_grad():
        weight = first.weight.double()
        first.bias += (weight @ ((normalization.mean.double() - mean) / scale)).to(first.bias.dtype)
        first.weight.copy_((weight * (normalization.scale.double() / scale)).to(first.weight.dtype))
    copied.normalization = copy.deepcopy(normalization)
    return copied


def affine_cv(model, matrix, offset):
    """A copy of ``model`` whose CV is ``model.encode(x) @ matrix + offset``, folded into its encoder.

    The map is folded into the rows of the encoder's last ``nn.Linear`` that give the CV (the first
    ``n_cv``: the mean of a variational encoder), so the result is the same kind of model with an
    ordinary feed-forward encoder. When ``matrix`` is invertible the decoder's first layer takes the
    inverse map, so ``decode(encode(x))`` is unchanged; for a diagonal ``matrix`` the log-variance rows of
    a variational encoder are shifted to match. Priors of generative models are not mapped.

    Parameters
    ----------
    model : BaseAutoencoder
        A model whose CV is the first ``n_cv`` outputs of its encoder (or their mixture, GMVAE).
    matrix : array_like, shape (n_cv, n_cv)
        Linear part, applied on the right (CV units of ``model`` -> new CV units).
    offset : array_like, shape (n_cv,)
        Added after ``matrix``, in the new CV units.

    Returns
    -------
    BaseAutoencoder
        A new model in evaluation mode; ``model`` is not modified.

    Raises
    ------
    ValueError
        When ``matrix`` or ``offset`` has the wrong shape or non-finite entries, or the model's CV is not
        the first outputs of its encoder's last Linear layer.

    Examples
    --------
    Standardise a CV over some features (zero mean, unit variance):

    >>> z = model.encode(features).detach().numpy()                   # doctest: +SKIP
    >>> scaled = affine_cv(model, np.diag(1 / z.std(0)), -z.mean(0) / z.std(0))  # doctest: +SKIP
    """
    n_cv = model.n_cv
    a = np.asarray(matrix, dtype=np.float64)
    c = np.asarray(offset, dtype=np.float64)
    if a.shape != (n_cv, n_cv) or c.shape != (n_cv,) or not (np.all(np.isfinite(a)) and np.all(np.isfinite(c))):
        raise ValueError(f"matrix of shape {a.shape} and offset of shape {c.shape} must be finite, of shapes "
                         f"({n_cv}, {n_cv}) and ({n_cv},) for a model with n_cv={n_cv}")  # fmt: skip
    last = _linear_layers(model, "model", from_features=False)[-1]
    mapped = copy.deepcopy(model).eval()
    new_last = _linear_layers(mapped, "model", from_features=False)[-1]
    at, ct = torch.as_tensor(a.T, dtype=torch.float64), torch.as_tensor(c, dtype=torch.float64)
    with torch.no_grad():
        new_last.weight[:n_cv] = (at @ last.weight[:n_cv].double()).to(last.weight.dtype)
        new_last.bias[:n_cv] = (at @ last.bias[:n_cv].double() + ct).to(last.bias.dtype)
        diagonal = np.count_nonzero(a - np.diag(np.diagonal(a))) == 0 and np.all(np.diagonal(a) != 0)
        if diagonal and last.out_features >= 2 * n_cv:  # log-variances of a Gaussian encoder: var * a²
            new_last.bias[n_cv : 2 * n_cv] += torch.as_tensor(2 * np.log(np.abs(np.diagonal(a))), dtype=last.bias.dtype)
        first = next((m for m in getattr(mapped, "decoder", []) if isinstance(m, nn.Linear)), None)
        if first is not None and first.in_features == n_cv and abs(np.linalg.det(a)) > 1e-12:
            inverse = torch.as_tensor(np.linalg.inv(a).T, dtype=torch.float64)  # z_old = inverse @ (z_new - c)
            weight = first.weight.double() @ inverse
            first.bias -= (weight @ ct).to(first.bias.dtype)
            first.weight.copy_(weight.to(first.weight.dtype))
    probe = torch.randn(64, model.n_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _check_exact(mapped, model.encode(probe).double() @ torch.as_tensor(a) + torch.as_tensor(c), probe, "model")
    return mapped


def average_autoencoders(members, features, log_weights=None):
    """One autoencoder whose CV is the mean of the members' CVs, each first mapped onto the first member's.

    Each member's CV is mapped onto the first member's by the affine least-squares fit weighted as in
    training (``log_weights``, uniform when None), and the mapped CVs are averaged. A warning says when a
    member maps onto the first with R² below :data:`MIN_AGREEMENT`, as members that found different CVs
    (e.g. folded differently) average into neither. The average is computed exactly by one wider
    feed-forward encoder: the members' hidden layers side by side (block-diagonal weights), the last layer
    holding the affine maps. The decoder (and, for a variational encoder, the log-variance) is the first
    member's, whose CV the average is mapped onto.

    Parameters
    ----------
    members : sequence of BaseAutoencoder
        At least one, trained on ``features`` with the same hidden sizes and activation, of a kind whose CV
        is the first ``n_cv`` outputs of a feed-forward encoder (ae, tae, vae, wae, dae). Their input
        normalisations may differ (each fitted on its own training split): the average reads the first
        member's, each member's first layer adjusted to match exactly.
    features : array_like or torch.Tensor, shape (n_frames, n_features)
        Raw (unnormalised) features of the frames the maps are fitted on, in feature units.
    log_weights : array_like, shape (n_frames,), optional
        Log-weights of those frames; ``-inf`` leaves a frame out of the fit.

    Returns
    -------
    BaseAutoencoder
        A new model in evaluation mode, of the first member's kind; the members are not modified.

    Raises
    ------
    ValueError
        When ``members`` is empty, the members differ in layout, or their kind's CV is not the first
        outputs of its encoder's last Linear layer (e.g. ``gmvae``).

    Warns
    -----
    UserWarning
        When a member maps onto the first with R² below :data:`MIN_AGREEMENT`.
    """
    members = list(members)
    if not members:
        raise ValueError("members is empty; pass at least one trained autoencoder")
    first = members[0]
    layers = [_linear_layers(m, f"members[{k}]") for k, m in enumerate(members)]
    shapes = [[tuple(layer.weight.shape) for layer in member] for member in layers]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"members have encoders of different layouts ({shapes[0]} and another); train every "
                         f"member with the same hidden sizes on the same features")  # fmt: skip
    features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    with torch.no_grad():
        values = [m.encode(features).double().numpy() for m in members]
    w = np.ones(len(features)) if log_weights is None else np.exp(np.asarray(log_weights, float) - np.max(log_weights))
    maps = [_affine_map(v, values[0], w / w.sum()) for v in values]
    if len(members) == 1:
        return copy.deepcopy(first).eval()
    agreement = [regscore(v, values[0], weights=w) for v in values[1:]]
    if min(agreement) < MIN_AGREEMENT:
        warnings.warn(
            f"the {len(members)} autoencoders trained on the same frames found different CVs: the worst maps onto "
            f"the first with R² {min(agreement):.2f} < {MIN_AGREEMENT}, and their average mixes them; train longer "
            f"(more epochs) or average fewer models",
            stacklevel=2,
        )
    layers = [_linear_layers(_on_normalization(m, first.normalization), "members") for m in members]
    by_depth = list(zip(*layers, strict=True))  # by_depth[d][k]: member k's Linear layer d
    n_cv, n_out = first.n_cv, by_depth[-1][0].out_features
    sizes = [first.n_features, *[len(members) * group[0].out_features for group in by_depth[:-1]], n_out]
    averaged = copy.deepcopy(first)
    activation = next((type(m) for m in first.encoder if not isinstance(m, nn.Linear)), None)
    names = {cls: name for name, cls in ACTIVATIONS.items() if cls is not None}
    averaged.encoder = FeedForward(sizes, names.get(activation))
    merged = [m for m in averaged.encoder if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for depth, (layer, group) in enumerate(zip(merged[:-1], by_depth[:-1], strict=True)):
            weights = [m.weight for m in group]  # side by side: the first layer reads the same features
            layer.weight.copy_(torch.cat(weights) if depth == 0 else torch.block_diag(*weights))
            layer.bias.copy_(torch.cat([m.bias for m in group]))
        # the mean over members k of (W_k h_k + b_k) A_k + c_k, with h_k member k's last hidden layer
        affine = [(torch.as_tensor(a.T, dtype=torch.float32), torch.as_tensor(c, dtype=torch.float32)) for a, c in maps]
        parts = [a @ m.weight[:n_cv] for (a, _), m in zip(affine, by_depth[-1], strict=True)]
        hidden = len(merged) > 1  # side by side after hidden layers; summed when the encoder is linear
        weight = torch.zeros_like(merged[-1].weight)
        weight[:n_cv] = (torch.cat(parts, dim=1) if hidden else sum(parts)) / len(members)
        rest = by_depth[-1][0].weight[n_cv:]  # further outputs (log-variances): the first member's
        weight[n_cv:, : rest.shape[1]] = rest
        merged[-1].weight.copy_(weight)
        merged[-1].bias[:n_cv] = sum(a @ m.bias[:n_cv] + c for (a, c), m in zip(affine, by_depth[-1], strict=True))
        merged[-1].bias[:n_cv] /= len(members)
        merged[-1].bias[n_cv:] = by_depth[-1][0].bias[n_cv:]
    expected = np.mean([v @ a + c for v, (a, c) in zip(values, maps, strict=True)], axis=0)
    _check_exact(averaged.eval(), torch.as_tensor(expected), features, "members")
    return averaged

