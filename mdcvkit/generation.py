"""Decode latent points into structures: generation of new frames from a fitted autoencoder CV.

:func:`decode` maps latent points through the decoder of a fitted model;
:func:`generate` samples the model's prior first (the standard normal of
``"vae"`` and ``"wae"``, the Gaussian mixture of ``"gmvae"``, optionally one
of its components). When the features are atomic positions (``"aligned"`` or
``"positions"``) the result is an in-memory MDAnalysis Universe with the
training atoms' topology and one frame per latent point, which any
MDAnalysis writer can write; otherwise it is a DataArray of decoded features.
:class:`mdcvkit.AutoencoderCV` offers both as methods.
"""

import MDAnalysis as mda
import numpy as np
import torch
import xarray as xr
from MDAnalysis.coordinates.memory import MemoryReader
from MDAnalysis.guesser.default_guesser import DefaultGuesser

from .features import AlignedPositions, Positions
from .models import apply_in_chunks

__all__ = ["latent_points", "decode", "generate", "topology_universe", "MAX_SAMPLES"]

#: Most samples :func:`generate` draws in one call (memory guard).
MAX_SAMPLES = 10_000_000


def latent_points(z, n_cv):
    """Check latent points and return them as a float32 tensor of shape (n, n_cv).

    Parameters
    ----------
    z : array_like or xarray.DataArray, shape (n, n_cv) or (n_cv,)
        Latent points (CV values), e.g. ``results.cv`` or a path through CV space.
    n_cv : int
        Latent dimension of the model.
    """
    try:
        values = np.asarray(z.values if isinstance(z, xr.DataArray) else z, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"z must be latent points, numbers of shape (n, {n_cv}), not {type(z).__name__} "
                         f"({err})") from err
    if values.ndim == 1 and values.shape[0] == n_cv:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] != n_cv or values.shape[0] < 1:
        raise ValueError(f"z has shape {values.shape}; pass latent points of shape (n, {n_cv}) (n_cv={n_cv})")
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"z holds {int(bad.sum())} NaN or infinite values (rows {rows[:5].tolist()}...); "
            "pass finite latent points"
        )
    return torch.as_tensor(values, dtype=torch.float32)


def topology_universe(atoms):
    """An empty in-memory Universe with the topology of ``atoms`` (an ``_atom_table`` dict).

    Parameters
    ----------
    atoms : dict
        ``names`` (one per atom; with ``has_names`` False they are indices and
        the atoms are named "X") and optionally ``resnames`` (default "UNK"),
        ``resids`` (default one residue, 1), ``masses`` (u; guessed from the
        names when absent, 1 without names), ``segids`` (one per atom;
        consecutive runs become segments, default "SYSTEM") and ``bonds``
        (pairs of positions within the atoms). Topologies without residues or
        names (Universes built from arrays, XYZ files) therefore work.

    Returns
    -------
    MDAnalysis.Universe
        No coordinates yet; load them with ``load_new``. It has the masses,
        segments and bonds that repair (:class:`mdcvkit.BondGeometryRepair`)
        and comparison (:func:`mdcvkit.metrics.compare_ensembles`) need.
    """
    n_atoms = len(atoms["names"])
    has_names = atoms.get("has_names", True)
    names = list(atoms["names"]) if has_names else ["X"] * n_atoms
    resids = np.asarray(atoms.get("resids") or [1] * n_atoms)
    resnames = atoms.get("resnames") or ["UNK"] * n_atoms
    segids = np.asarray(atoms.get("segids") or ["SYSTEM"] * n_atoms)
    starts = np.r_[True, (resids[1:] != resids[:-1]) | (segids[1:] != segids[:-1])]
    resindex = np.cumsum(starts) - 1
    segment_starts = np.r_[True, segids[starts][1:] != segids[starts][:-1]]
    universe = mda.Universe.empty(n_atoms, n_residues=int(resindex[-1]) + 1, atom_resindex=resindex,
                                  n_segments=int(segment_starts.sum()),
                                  residue_segindex=np.cumsum(segment_starts) - 1, trajectory=False)
    universe.add_TopologyAttr("names", names)
    universe.add_TopologyAttr("types", [n[0] for n in names])
    universe.add_TopologyAttr("resnames", [resnames[i] for i in np.flatnonzero(starts)])
    universe.add_TopologyAttr("resids", resids[starts])
    universe.add_TopologyAttr("segids", segids[starts][segment_starts])
    masses = atoms.get("masses")
    if masses is None:
        masses = DefaultGuesser(universe).guess_masses(universe.atoms.types) if has_names else np.ones(n_atoms)
    universe.add_TopologyAttr("masses", np.asarray(masses, dtype=np.float64))
    if atoms.get("bonds"):
        universe.add_TopologyAttr("bonds", [tuple(int(i) for i in bond) for bond in atoms["bonds"]])
    return universe


def _subset_table(atoms, keep):
    """The ``_atom_table`` dict of the atoms at positions ``keep`` (in that order) of ``atoms``."""
    keep = [int(k) for k in keep]
    if keep == list(range(len(atoms["names"]))):
        return atoms
    n_atoms = len(atoms["names"])
    table = {key: [values[k] for k in keep] if isinstance(values, list) and len(values) == n_atoms else values
             for key, values in atoms.items() if key != "bonds"}
    where = {k: n for n, k in enumerate(keep)}
    table["bonds"] = [[where[i], where[j]] for i, j in atoms.get("bonds") or () if i in where and j in where]
    return table


def decode(cv_module, z, atoms, latent=None):
    """Decode latent points into structures (position features) or features (any other features).

    Parameters
    ----------
    cv_module : mdcvkit.analysis.CollectiveVariable
        Fitted CV (featurizer and model).
    z : array_like or xarray.DataArray, shape (n, n_cv)
        Latent points, in CV units.
    atoms : dict
        Topology of the training atoms (``AutoencoderCV._atoms``).
    latent : torch.Tensor, optional
        Already checked latent points (internal use by :func:`generate`).

    Notes
    -----
    For the probabilistic models the decoded structure is the mean of
    p(x|z); the learned decoder noise is not added.

    Returns
    -------
    MDAnalysis.Universe or xarray.DataArray
        For ``"aligned"`` or ``"positions"`` features: a Universe (in memory)
        with one frame per latent point, positions in Å (in the frame of the
        alignment reference for ``"aligned"``), of the featurized atoms
        (``AlignedPositions.atoms``, all by default). Otherwise a DataArray of
        decoded features, dims ("sample", "feature"), coords ``label``.
    """
    model, featurizer = cv_module.model, cv_module.featurizer
    z = latent_points(z, model.n_cv) if latent is None else latent
    features = apply_in_chunks(model.decode, z)
    if isinstance(featurizer, (AlignedPositions, Positions)):
        decoded = getattr(featurizer, "atoms", range(featurizer.n_atoms))  # AlignedPositions(atoms=...) decodes those
        universe = topology_universe(_subset_table(atoms, decoded))
        positions = features.reshape(len(features), len(decoded), 3).astype(np.float32)
        universe.load_new(positions, format=MemoryReader, order="fac")
        return universe
    return xr.DataArray(
        features, dims=("sample", "feature"),
        coords={"sample": np.arange(len(features)), "label": ("feature", list(featurizer.labels))},
        attrs={"long_name": "decoded features"},
    )


def generate(cv_module, n, atoms, seed=0, cluster=None):
    """Sample ``n`` latent points from the model's prior and decode them (see :func:`decode`).

    Parameters
    ----------
    cv_module : mdcvkit.analysis.CollectiveVariable
    n : int
        Number of samples (frames).
    atoms : dict
        Topology of the training atoms.
    seed : int, default 0
        Seed of the prior samples.
    cluster : int, optional
        For ``"gmvae"``: sample only mixture component ``cluster``.

    Returns
    -------
    MDAnalysis.Universe or xarray.DataArray
    """
    model = cv_module.model
    if not hasattr(model, "sample_prior"):
        raise ValueError(
            f"{type(model).__name__} has no prior to sample from (only 'vae', 'gmvae' and 'wae' have one); "
            "decode chosen latent points with decode(z) instead, e.g. decode(cv.results.cv[::100])"
        )
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"n={n!r} must be a positive integer (at most {MAX_SAMPLES}), e.g. 100")
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        z = model.sample_prior(int(n), generator=generator, cluster=cluster).float().cpu()
    return decode(cv_module, None, atoms, latent=z)
