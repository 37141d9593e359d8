"""Which input features a CV depends on: gradient sensitivities mapped back to atoms and residues."""

import numpy as np
import torch
import xarray as xr

from .features import Dihedrals, PairwiseDistances
from .training import weighted_mean

__all__ = ["feature_importance", "top_k_featurizer", "LEVELS"]

#: Levels at which :func:`feature_importance` reports.
LEVELS = ("feature", "atom", "residue")


def feature_importance(cv_module, features, atoms, weights=None, per="feature", normalized=True, chunk=4096):
    """Mean absolute gradient of each CV with respect to each input feature.

    S_kf = Σᵢ wᵢ |∂ξ_k/∂x_f (xᵢ)| / Σᵢ wᵢ over the frames i, with the weights of
    the training. With ``normalized=True`` the gradient is taken with respect
    to the normalised feature x_f / s_f (s_f the normalisation scale), so
    that features in different units (Å, sin/cos) compare: the sensitivity
    is the change of the CV per scale unit of the feature. ``per="atom"``
    splits each feature's sensitivity equally among the atoms it depends on
    (one for a coordinate, two for a distance, four for a dihedral) and sums
    per atom; ``per="residue"`` sums the atom values per residue.

    Parameters
    ----------
    cv_module : mdcvkit.analysis.CollectiveVariable
        Fitted CV.
    features : array_like, shape (n_frames, n_features)
        Raw features of the frames to average over (the training features).
    atoms : dict
        ``names``, ``resnames``, ``resids``, ``indices`` of the training atoms.
    weights : array_like, shape (n_frames,), optional
        Frame weights; uniform when None.
    per : {"feature", "atom", "residue"}, default "feature"
    normalized : bool, default True
        Gradient with respect to normalised (True) or raw (False) features.
    chunk : int, default 4096
        Frames per gradient evaluation.

    Returns
    -------
    xarray.DataArray, dims ("cv", per)
        Coordinates: for features ``label``, ``atoms`` (names of the atoms a
        feature depends on) and ``resids``; for atoms ``name``, ``index``
        (atom index in the Universe), ``resid``, ``resname``; for residues
        ``resid`` and ``resname``. Units: CV per feature scale (normalized)
        or CV per feature unit.

    References
    ----------
    K. Simonyan, A. Vedaldi, A. Zisserman, "Deep inside convolutional networks: visualising image
    classification models and saliency maps", arXiv:1312.6034 (2013) (gradient saliency).
    """
    if per not in LEVELS:
        raise ValueError(f"per={per!r} is not known; use one of {list(LEVELS)}")
    model, featurizer = cv_module.model, cv_module.featurizer
    n_frames = len(features)
    w = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float64)
    total = torch.zeros(model.n_cv, model.n_features, dtype=torch.float64)
    weight_sum = 0.0
    for start in range(0, n_frames, chunk):
        x = torch.as_tensor(np.asarray(features[start:start + chunk]), dtype=torch.float32)
        x.requires_grad_(True)
        xi = model.encode(x)
        grads = torch.stack([torch.autograd.grad(xi[:, k].sum(), x, retain_graph=k < model.n_cv - 1)[0]
                             for k in range(model.n_cv)], dim=1)  # (n, n_cv, n_features)
        if normalized:
            grads = grads * model.normalization.scale
        wk = None if w is None else w[start:start + chunk]
        block_weight = len(x) if wk is None else float(wk.sum())
        if block_weight > 0:
            total += weighted_mean(grads.abs().double(), wk) * block_weight
            weight_sum += block_weight
    values = (total / weight_sum).numpy()
    units = "CV per feature scale" if normalized else "CV per feature unit"
    attrs = {"long_name": "feature importance (mean |∂CV/∂feature|)", "units": units}
    names = atoms["names"]  # topologies without residues count as one residue (resid 1, no resname)
    resids, resnames = np.asarray(atoms.get("resids") or [1] * len(names)), atoms.get("resnames") or [""] * len(names)
    if per == "feature":
        return xr.DataArray(values, dims=("cv", "feature"), attrs=attrs, coords={
            "cv": np.arange(model.n_cv), "label": ("feature", list(featurizer.labels)),
            "atoms": ("feature", [",".join(names[i] for i in a) for a in featurizer.feature_atoms]),
            "resids": ("feature", [",".join(str(resids[i]) for i in a) for a in featurizer.feature_atoms])})
    per_atom = np.zeros((model.n_cv, len(names)))
    for f, involved in enumerate(featurizer.feature_atoms):
        for i in involved:
            per_atom[:, i] += values[:, f] / len(involved)
    if per == "atom":
        return xr.DataArray(per_atom, dims=("cv", "atom"), attrs=attrs, coords={
            "cv": np.arange(model.n_cv), "name": ("atom", list(names)),
            "index": ("atom", np.asarray(atoms["indices"])), "resid": ("atom", resids),
            "resname": ("atom", list(resnames))})
    unique, first = np.unique(resids, return_index=True)
    per_residue = np.stack([per_atom[:, resids == r].sum(axis=1) for r in unique], axis=1)
    return xr.DataArray(per_residue, dims=("cv", "residue"), attrs=attrs, coords={
        "cv": np.arange(model.n_cv), "resid": ("residue", unique),
        "resname": ("residue", [resnames[i] for i in first])})


def top_k_featurizer(featurizer, scores, k):
    """A featurizer that computes only the ``k`` most important features of ``featurizer``.

    Parameters
    ----------
    featurizer : PairwiseDistances or Dihedrals
        For distances the ``k`` pairs with the largest scores are kept; for
        dihedrals the ``k`` dihedrals whose (sin, cos) pair has the largest
        summed score (so ``2 k`` features).
    scores : array_like, shape (n_features,)
        Importance of each feature, e.g. :func:`feature_importance` summed over CVs.
    k : int
        Number of pairs or dihedrals to keep (1 <= k <= their number).

    Returns
    -------
    PairwiseDistances or Dihedrals
        Built for the same atoms, features in their original order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if isinstance(featurizer, PairwiseDistances):
        units, config = scores, featurizer.get_config()
    elif isinstance(featurizer, Dihedrals):
        units, config = scores.reshape(-1, 2).sum(axis=1), featurizer.get_config()
    else:
        raise ValueError(
            f"top-k features need 'distances' or 'dihedrals' features, not {type(featurizer).__name__}; "
            "for positions keep the most important atoms (AutoencoderCV.top_k does)"
        )
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= len(units):
        raise ValueError(f"k={k!r} must be an integer in [1, {len(units)}] for these features")
    keep = np.sort(np.argsort(-units, kind="stable")[:k])
    if isinstance(featurizer, PairwiseDistances):
        config["pairs"] = [config["pairs"][i] for i in keep]
        return PairwiseDistances(**config)
    config["quadruplets"] = [config["quadruplets"][i] for i in keep]
    config["dihedral_names"] = [config["dihedral_names"][i] for i in keep]
    return Dihedrals(**config)
