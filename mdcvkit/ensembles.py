"""Compare a generated ensemble with a reference (MD) ensemble: the implementation of
:func:`mdcvkit.metrics.compare_ensembles`, its one public home.

Distribution distances (RMSD, RMSF, PCA, backbone dihedrals, pairwise distances, free-energy surfaces
on the reference's TICA), each with an MD-vs-MD baseline and bootstrap intervals, covalent geometry
(:func:`mdcvkit.repair.structure_quality`) and paired reconstruction scores.
"""

import warnings

import numpy as np

from ._checks import check_int, select_atoms
from .frames import in_memory, read_frames, same_frame

__all__ = ["TICA_FEATURES"]  # compare_ensembles is public as mdcvkit.metrics.compare_ensembles

# Every distribution distance is written once, as a function of two frame weight vectors over the
# pooled frames (reference frames first, then generated ones). The comparison, the baseline (first
# against second half of the reference) and each bootstrap replicate (frames resampled with
# replacement) are the same function called with different weights, so that they share one binning,
# one alignment and one set of reference PCs and TICs.

#: Features on which the TICA behind the free-energy surfaces is fitted, by name.
TICA_FEATURES = {
    "positions": "Cartesian coordinates of the selected atoms after superposition (3 n_atoms features)",
    "distances": "all pairwise distances between the selected atoms (n_atoms (n_atoms - 1) / 2 features)",
}


def _labels(atoms, attribute="names"):
    """Atom names, residue names (str) or residue ids of ``atoms``; for topologies without them, the atom
    indices as names, "" as residue names and 1 as residue ids."""
    try:
        values = np.asarray(getattr(atoms, attribute))
    except AttributeError:  # MDAnalysis' NoDataError: a Universe built from arrays, XYZ, …
        defaults = {"names": atoms.indices.astype(str), "resids": np.ones(len(atoms), dtype=int)}
        return defaults.get(attribute, np.full(len(atoms), ""))
    return values if attribute == "resids" else values.astype(str)


def _ensemble_positions(ensemble, select, name):
    """Selected atoms of ``ensemble`` and a copy of their positions over all frames (Å)."""
    if not hasattr(ensemble, "select_atoms") or not hasattr(ensemble, "universe"):
        raise TypeError(f"{name} must be an MDAnalysis Universe or AtomGroup, not {type(ensemble).__name__}; "
                        f"load it with MDAnalysis.Universe(topology, trajectory)")
    atoms = select_atoms(ensemble, select)
    if len(atoms) == 0:
        raise ValueError(f"select={select!r} matches no atoms in {name}; pass a selection present in both "
                         f"ensembles, e.g. select='name CA' or select='backbone'")
    trajectory = atoms.universe.trajectory
    if trajectory.n_frames < 2:
        raise ValueError(f"{name} has n_frames={trajectory.n_frames}; an ensemble needs at least 2 frames, "
                         f"pass a Universe with a multi-frame trajectory")
    return atoms, read_frames(atoms, name)[0]


def _superpose(positions, target):
    """Copies of ``positions`` (n_frames, n_atoms, 3) optimally superposed on ``target`` and their RMSD (Å)."""
    from MDAnalysis.analysis import align

    target = target - target.mean(axis=0)
    aligned = np.empty_like(positions)
    rmsd = np.empty(len(positions))
    for i, frame in enumerate(positions):
        centred = frame - frame.mean(axis=0)
        rotation, rmsd[i] = align.rotation_matrix(centred, target)
        aligned[i] = centred @ rotation.T
    return aligned, rmsd


def _backbone_dihedrals(atoms, name):
    """φ/ψ (degrees, shape (n_frames, n_residues, 2)) and resids from MDAnalysis's Ramachandran."""
    from MDAnalysis.analysis.dihedrals import Ramachandran

    try:
        with same_frame(atoms.universe.trajectory), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot determine phi and psi angles")
            analysis = Ramachandran(atoms.residues.atoms).run()
    except (ValueError, AttributeError) as err:  # AttributeError: a topology without names or residues
        raise ValueError(f"backbone dihedrals of {name} cannot be computed ({err}); pass dihedrals=False "
                         f"for ensembles without full protein backbones") from err
    return np.asarray(analysis.results.angles, dtype=np.float64), analysis.ag3.residues.resids


def _grid(values, bins):
    """Flat bin index of each row of ``values`` (n, d) on ``bins`` equal-width bins per column spanning all rows.

    Returns the index, shape (n, 1), and the list of the d edge arrays.
    """
    edges, index = [], []
    for column in values.T:
        low, high = float(column.min()), float(column.max())
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        edges.append(np.linspace(low, high, bins + 1))
        index.append(np.clip(np.searchsorted(edges[-1], column, side="right") - 1, 0, bins - 1))
    return np.ravel_multi_index(index, (bins,) * len(edges))[:, None], edges


def _histograms(index, weights, n_bins):
    """Weighted histograms, shape (n_features, n_bins), of the bin indices ``index`` (n_frames, n_features)."""
    used = weights > 0
    n_features = index.shape[1]
    flat = (index[used] + n_bins * np.arange(n_features)).ravel()
    counts = np.bincount(flat, weights=np.repeat(weights[used], n_features), minlength=n_features * n_bins)
    return counts.reshape(n_features, n_bins)


def _jsd(p, q):
    """Jensen–Shannon distance (base 2, in [0, 1]) between histograms along the last axis."""
    from scipy.special import rel_entr

    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    m = (p + q) / 2
    divergence = (rel_entr(p, m).sum(axis=-1) + rel_entr(q, m).sum(axis=-1)) / 2
    return np.sqrt(np.maximum(divergence, 0.0) / np.log(2))


def _sorted_pool(values):
    """Sorting order of each feature of ``values`` (n_frames, n_features) over frames, and the sorted gaps.

    Both are laid out (n_features, n_frames) so that the cumulative sums of
    :func:`_wasserstein` run along contiguous memory.
    """
    order = np.ascontiguousarray(np.argsort(values, axis=0, kind="stable").T)
    return order, np.diff(np.take_along_axis(values.T, order, axis=1), axis=1)


def _wasserstein(order, gaps, first, second):
    """Wasserstein-1 distances per feature between the weighted samples ``first`` and ``second`` of the pool.

    W₁ = ∫ |F₁(x) - F₂(x)| dx, with the empirical distribution functions
    accumulated along the presorted pooled values (scipy's
    ``wasserstein_distance`` per feature, without sorting again).
    """
    signed = first / first.sum() - second / second.sum()
    return (np.abs(np.cumsum(signed[order], axis=1)[:, :-1]) * gaps).sum(axis=1)


def _rmsf(flat, squares, weights):
    """RMSF per atom (Å) about the weighted mean of aligned frames ``flat`` (n_frames, 3 n_atoms)."""
    total = weights.sum()
    mean = (weights @ flat / total).reshape(-1, 3)
    return np.sqrt(np.maximum(weights @ squares / total - (mean**2).sum(axis=1), 0.0))


def _pearson(a, b):
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])


def _fes_rms_difference(p, q):
    """Probability-weighted RMS of F_q - F_p (kT) over bins populated in both, constant offset removed.

    Returns the RMS and the offset-free difference on the grid (NaN where a
    histogram is empty).
    """
    p, q = p / p.sum(), q / q.sum()
    both = (p > 0) & (q > 0)
    difference = np.full(p.shape, np.nan)
    if not both.any():
        return np.nan, difference
    weight = (p[both] + q[both]) / 2
    difference[both] = np.log(p[both]) - np.log(q[both])
    difference[both] -= np.average(difference[both], weights=weight)
    return float(np.sqrt(np.average(difference[both] ** 2, weights=weight))), difference


def _free_energy(counts):
    """F = -ln p (kT) of a histogram, zero at its minimum, NaN where empty."""
    with np.errstate(divide="ignore"):
        energy = -np.log(counts / counts.sum())
    energy[~np.isfinite(energy)] = np.nan
    return energy - np.nanmin(energy)


def _distances(pool, first, second):
    """Every bootstrapped quantity between the weighted frames ``first`` and ``second`` of the pool."""
    out = {}
    rmsd = [_histograms(pool["rmsd_bin"], w, pool["bins"]) for w in (first, second)]
    out["rmsd_jsd"] = _jsd(*rmsd)[0]
    out["rmsd_wasserstein"] = _wasserstein(*pool["rmsd_sorted"], first, second)[0]
    rmsf_first, rmsf_second = (_rmsf(pool["flat"], pool["squares"], w) for w in (first, second))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rmsf_ratio"] = rmsf_second / rmsf_first
    out["rmsf_ratio_mean"] = rmsf_second.mean() / rmsf_first.mean()
    out["rmsf_pearson"] = _pearson(rmsf_first, rmsf_second)
    pca = [_histograms(pool["pca_bin"], w, pool["pca_bins"] ** 2) for w in (first, second)]
    out["pca_jsd"] = _jsd(*pca)[0]
    if "dihedral_bin" in pool:
        dihedral = [_histograms(pool["dihedral_bin"], w, pool["dihedral_bins"]) for w in (first, second)]
        out["dihedral_jsd"] = _jsd(*dihedral).reshape(-1, 2)
        out["dihedral_jsd_residue"] = out["dihedral_jsd"].max(axis=1)
    if "distance_sorted" in pool:
        n_atoms = len(out["rmsf_ratio"])
        per_pair = _wasserstein(*pool["distance_sorted"], first, second)
        matrix = np.zeros((n_atoms, n_atoms))
        matrix[np.triu_indices(n_atoms, k=1)] = per_pair
        out["distance_wasserstein"] = matrix + matrix.T
        out["distance_wasserstein_residue"] = out["distance_wasserstein"].sum(axis=1) / max(n_atoms - 1, 1)
        out["distance_wasserstein_mean"] = per_pair.mean() if len(per_pair) else 0.0
    if "tica_bin" in pool:
        fes = [_histograms(pool["tica_bin"], w, pool["fes_bins"] ** 2)[0] for w in (first, second)]
        out["fes_jsd"] = _jsd(*fes)
        out["fes_rms_difference"] = _fes_rms_difference(*fes)[0]
    return out


#: dims (besides none for scalars), long name and units of each quantity returned by ``_distances``.
_QUANTITIES = {
    "rmsd_jsd": ((), "Jensen–Shannon distance between RMSD histograms", ""),
    "rmsd_wasserstein": ((), "Wasserstein-1 distance between RMSD distributions", "Å"),
    "rmsf_ratio": (("atom",), "RMSF ratio, generated over reference", ""),
    "rmsf_ratio_mean": ((), "mean RMSF ratio, generated over reference", ""),
    "rmsf_pearson": ((), "Pearson correlation of per-atom RMSF", ""),
    "pca_jsd": ((), "Jensen–Shannon distance between PC1–PC2 histograms", ""),
    "dihedral_jsd": (("residue", "angle"), "Jensen–Shannon distance of dihedral histograms", ""),
    "dihedral_jsd_residue": (("residue",), "largest φ/ψ Jensen–Shannon distance per residue", ""),
    "distance_wasserstein": (("atom", "atom_j"), "Wasserstein-1 distance between pair-distance distributions",
                             "Å"),
    "distance_wasserstein_residue": (("atom",), "mean pair-distance Wasserstein-1 distance per atom", "Å"),
    "distance_wasserstein_mean": ((), "mean pair-distance Wasserstein-1 distance", "Å"),
    "fes_jsd": ((), "Jensen–Shannon distance between TIC1–TIC2 histograms", ""),
    "fes_rms_difference": ((), "RMS free-energy difference on TIC1–TIC2 over bins populated in both", "kT"),
}


def _resample(rng, frames, n_pool, block_length=1):
    """Frame weights over the pool: multiplicities of ``frames`` after a moving-block bootstrap.

    Blocks of ``block_length`` consecutive entries of ``frames``, starting at
    uniformly drawn positions, are concatenated up to ``len(frames)`` entries
    (``block_length=1``: the ordinary bootstrap of independent frames).
    """
    n = len(frames)
    starts = rng.integers(0, n - block_length + 1, -(-n // block_length))
    picked = (starts[:, None] + np.arange(block_length)).ravel()[:n]
    weights = np.zeros(n_pool)
    weights[frames] = np.bincount(picked, minlength=n)
    return weights


def _bootstrap(pool, first_frames, second_frames, n_pool, n_bootstrap, rng, block_lengths):
    """Bootstrap replicates of ``_distances``: name -> array (n_bootstrap, ...)."""
    first_block, second_block = block_lengths
    replicates = [_distances(pool, _resample(rng, first_frames, n_pool, first_block),
                             _resample(rng, second_frames, n_pool, second_block)) for _ in range(n_bootstrap)]
    return {name: np.array([r[name] for r in replicates]) for name in replicates[0]}


def _pca(ref_flat, gen_flat, ref_mean):
    """Principal axes (rows) of each ensemble from an SVD of its centred frames, and the variances along them."""
    _, ref_s, ref_axes = np.linalg.svd(ref_flat - ref_mean, full_matrices=False)
    _, gen_s, gen_axes = np.linalg.svd(gen_flat - gen_flat.mean(axis=0), full_matrices=False)
    return ref_axes, gen_axes, ref_s**2 / len(ref_flat), gen_s**2 / len(gen_flat)


def compare_ensembles(reference, generated, select="name CA", *, reference_frame=0, bins=50, pca_bins=30,
                      dihedral_bins=36, fes_bins=20, dihedrals=True, distances=True, tica_lag=1,
                      tica_features="positions", baseline=True, paired=False, geometry=False, hes=False,
                      n_bootstrap=100, block_length=1, confidence=0.95, seed=0):
    """Compare a generated ensemble with a reference (MD) ensemble, as in Ojeda-May (2025) and PENSA.

    Both ensembles are restricted to the atoms ``select``, and every frame is superposed (unweighted)
    on frame ``reference_frame`` of ``reference``; the inputs are not modified. Each distance comes with
    an MD-vs-MD baseline (``baseline_*``: the same distance between the first and second half of
    ``reference``, what finite sampling alone gives) and bootstrap intervals (``*_interval``). A
    generated ensemble is distinguishable from the reference where its interval lies above the
    baseline's. Binned distances share one equal-width grid over both ensembles (attr ``binning``).
    The user guide page :doc:`/guide/ensemble_comparison` lists every variable and explains the
    baseline and the bootstrap.

    Parameters
    ----------
    reference : MDAnalysis.Universe or MDAnalysis.AtomGroup
        The reference ensemble, e.g. the MD training data, in time order when TICA is used; at least
        2 frames (4 with ``baseline``).
    generated : MDAnalysis.Universe or MDAnalysis.AtomGroup
        The ensemble to assess, e.g. ``cv.generate(...)``, in any order; ``select`` must pick the same
        atoms (count, names, residue names, order) as in ``reference``.
    select : str, default "name CA"
        MDAnalysis selection of the atoms compared.
    reference_frame : int, default 0
        Frame of ``reference`` that is the structure for alignment and RMSD.
    bins, pca_bins, dihedral_bins, fes_bins : int, default 50, 30, 36, 20
        Bins of the RMSD histograms, per axis of the PC1–PC2 histograms, over [-180°, 180°) of the
        φ/ψ histograms, and per axis of the TIC1–TIC2 free-energy grid.
    dihedrals : bool, default True
        Compare backbone φ/ψ per residue (needs N, CA and C of the residues of ``select``).
    distances : bool, default True
        Compare the distributions of all pairwise distances of the selected atoms (Wasserstein-1).
    tica_lag : int or None, default 1
        Lag, in frames of ``reference``, of a TICA fitted on ``reference`` alone; free-energy
        surfaces are compared on its first two components. None skips it.
    tica_features : {"positions", "distances"}, default "positions"
        Features of the TICA, see :data:`TICA_FEATURES`.
    baseline : bool, default True
        Compute the halves baseline.
    paired : bool, default False
        Frame i of ``generated`` reconstructs frame i of ``reference`` (same number of frames):
        adds ``paired_mse`` (Å²) and ``paired_spearman``.
    geometry : bool, default False
        Judge bond lengths, angles, clashes and chirality of every frame of both ensembles, all
        atoms, against the reference's (:func:`mdcvkit.repair.structure_quality`).
    hes : bool, default False
        Also mdaencore's harmonic ensemble similarity (``pip install mdaencore``).
    n_bootstrap : int, default 100
        Bootstrap replicates; 0 skips the intervals.
    block_length : int, default 1
        Frames per block of the moving-block bootstrap of ``reference``; set it to about the
        correlation time of the MD (1 treats frames as independent: too narrow for MD).
    confidence : float, default 0.95
        Coverage of the percentile intervals, in (0, 1).
    seed : int, default 0
        Seed of the bootstrap resampling.

    Returns
    -------
    xarray.Dataset
        Per-frame, per-atom and scalar variables, each with attrs ``long_name`` and ``units``, e.g.
        ``rmsd_wasserstein`` (Å), ``rmsf_ratio_mean``, ``pca_rmsip``, ``dihedral_jsd_residue``,
        ``distance_wasserstein_mean`` (Å), ``fes_rms_difference`` (kT), their ``baseline_*`` and
        ``*_interval`` (dim ``bound``); the settings in ``attrs``.

    Raises
    ------
    ValueError
        For an empty or mismatched selection, fewer than 2 frames (4 with ``baseline``), NaN
        positions, ``reference_frame``, ``tica_lag`` or ``block_length`` out of range, bad bin
        counts, ``n_bootstrap`` or ``confidence``, or ``paired`` with different frame counts.
    TypeError
        When an ensemble is not an MDAnalysis Universe or AtomGroup.

    Examples
    --------
    >>> md = mk.datasets.alanine_dipeptide().select_atoms("not name H*")           # doctest: +SKIP
    >>> ds = mk.metrics.compare_ensembles(md, cv.generate(1000), select="all")     # doctest: +SKIP
    >>> ds["rmsd_wasserstein"].values, ds["baseline_rmsd_wasserstein"].values      # doctest: +SKIP
    """
    import xarray as xr
    from MDAnalysis.analysis import pca
    from scipy.stats import spearmanr

    for name, value, example in [("bins", bins, 50), ("pca_bins", pca_bins, 30),
                                 ("dihedral_bins", dihedral_bins, 36), ("fes_bins", fes_bins, 20)]:
        check_int(value, name, 2, f"pass e.g. {name}={example}")
    check_int(n_bootstrap, "n_bootstrap", 0, "pass e.g. n_bootstrap=100")
    check_int(block_length, "block_length")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1); pass e.g. confidence=0.95")
    if tica_features not in TICA_FEATURES:
        raise ValueError(f"tica_features={tica_features!r} is not known; use one of {sorted(TICA_FEATURES)}")
    ref_atoms, ref_positions = _ensemble_positions(reference, select, "reference")
    gen_atoms, gen_positions = _ensemble_positions(generated, select, "generated")
    if (len(ref_atoms) != len(gen_atoms) or np.any(_labels(ref_atoms) != _labels(gen_atoms))
            or np.any(_labels(ref_atoms, "resnames") != _labels(gen_atoms, "resnames"))):
        raise ValueError(f"select={select!r} picks {len(ref_atoms)} atoms in reference but {len(gen_atoms)} in "
                         f"generated, or atoms with different names or residue names; both ensembles must have "
                         f"the same atoms in the same order: pass the same topology or a narrower selection")
    n_ref, n_gen, n_atoms = len(ref_positions), len(gen_positions), len(ref_atoms)
    if not -n_ref <= reference_frame < n_ref:
        raise ValueError(f"reference_frame={reference_frame} is out of range for reference with n_frames={n_ref}; "
                         f"pass an index in [0, {n_ref})")
    if baseline and n_ref < 4:
        raise ValueError(f"baseline=True splits reference into halves but reference has n_frames={n_ref}; "
                         f"pass at least 4 reference frames or baseline=False")
    if block_length > max(n_ref // 2 if baseline else n_ref, 1):
        raise ValueError(f"block_length={block_length} is longer than the {'halves' if baseline else 'frames'} of "
                         f"reference (n_frames={n_ref}); pass a block_length of at most "
                         f"{n_ref // 2 if baseline else n_ref}")
    if tica_lag is not None:
        check_int(tica_lag, "tica_lag")
        if tica_lag > n_ref - 2:
            raise ValueError(f"tica_lag={tica_lag} must be smaller than n_frames - 1 = {n_ref - 1} of reference; "
                             f"pass a smaller lag, more reference frames or tica_lag=None")
    if paired and n_gen != n_ref:
        raise ValueError(f"paired=True needs the same number of frames, but reference has {n_ref} and generated "
                         f"{n_gen}; pass the reconstructions of exactly the reference frames or paired=False")
    if geometry and (reference.atoms.n_atoms != generated.atoms.n_atoms
                     or np.any(_labels(reference.atoms) != _labels(generated.atoms))):
        raise ValueError(f"geometry=True judges all atoms, but reference has {reference.atoms.n_atoms} and "
                         f"generated {generated.atoms.n_atoms}, or their names differ; pass ensembles of the "
                         f"same atoms or geometry=False")
    if hes:
        try:
            import mdaencore
        except ImportError as err:
            raise ImportError("hes=True needs the mdaencore MDAKit: pip install mdaencore (or mdcvkit[encore]), "
                              "or pass hes=False") from err

    ref_aligned, ref_rmsd = _superpose(ref_positions, ref_positions[reference_frame])
    gen_aligned, gen_rmsd = _superpose(gen_positions, ref_positions[reference_frame])
    aligned = np.concatenate([ref_aligned, gen_aligned])
    n_pool = n_ref + n_gen
    ref_frames, gen_frames = np.arange(n_ref), np.arange(n_ref, n_pool)
    ref_weights = (np.arange(n_pool) < n_ref).astype(float)
    gen_weights = 1.0 - ref_weights
    half = n_ref // 2

    def var(dims, values, long_name, units="", **attrs):
        return xr.Variable(dims, values, attrs={"long_name": long_name, "units": units, **attrs})

    flat = aligned.reshape(n_pool, -1)
    rmsd = np.concatenate([ref_rmsd, gen_rmsd])[:, None]
    rmsd_bin, (rmsd_edges,) = _grid(rmsd, bins)
    pool = {"bins": bins, "rmsd_bin": rmsd_bin, "rmsd_sorted": _sorted_pool(rmsd), "flat": flat,
            "squares": (aligned**2).sum(axis=2), "pca_bins": pca_bins}
    binning = {"rmsd_jsd": f"{bins} equal-width bins over [{rmsd_edges[0]:.4g}, {rmsd_edges[-1]:.4g}] Å"}

    # PCA fitted on the reference (SVD of the centred frames), both projected on PC1-PC2
    ref_mean = flat[:n_ref].mean(axis=0)
    ref_axes, gen_axes, ref_variance, gen_variance = _pca(flat[:n_ref], flat[n_ref:], ref_mean)
    projection = (flat - ref_mean) @ ref_axes[:2].T
    pool["pca_bin"], pca_edges = _grid(projection, pca_bins)
    binning["pca_jsd"] = (f"{pca_bins} × {pca_bins} equal-width bins over PC1 [{pca_edges[0][0]:.4g}, "
                          f"{pca_edges[0][-1]:.4g}] Å, PC2 [{pca_edges[1][0]:.4g}, {pca_edges[1][-1]:.4g}] Å")
    n_components = min(10, n_ref - 1, n_gen - 1, 3 * n_atoms)
    totals = [flat[frames].var(axis=0).sum() for frames in (ref_frames, gen_frames)]
    data = {
        "reference_rmsd": var("reference_frame", ref_rmsd, "RMSD to the reference structure (reference)", "Å"),
        "generated_rmsd": var("generated_frame", gen_rmsd, "RMSD to the reference structure (generated)", "Å"),
        "reference_rmsf": var("atom", _rmsf(flat, pool["squares"], ref_weights), "RMSF (reference)", "Å"),
        "generated_rmsf": var("atom", _rmsf(flat, pool["squares"], gen_weights), "RMSF (generated)", "Å"),
        "reference_pca": var(("reference_frame", "pc"), projection[:n_ref], "projection on reference PCs", "Å"),
        "generated_pca": var(("generated_frame", "pc"), projection[n_ref:], "projection on reference PCs", "Å"),
        "pca_variance_reference": var((), float(projection[:n_ref].var(axis=0).sum() / totals[0])
                                      if totals[0] > 0 else np.nan,
                                      "fraction of reference variance on reference PC1–PC2"),
        "pca_variance_generated": var((), float(projection[n_ref:].var(axis=0).sum() / totals[1])
                                      if totals[1] > 0 else np.nan,
                                      "fraction of generated variance on reference PC1–PC2"),
        "reference_pca_variance_ratio": var("component", ref_variance[:n_components] / max(totals[0], 1e-300),
                                            "fraction of reference variance along its own PCs"),
        "generated_pca_variance_ratio": var("component", gen_variance[:n_components] / max(totals[1], 1e-300),
                                            "fraction of generated variance along its own PCs"),
        "pca_rmsip": var((), float(pca.rmsip(ref_axes, gen_axes, n_components=n_components)),
                         f"RMSIP of the first {n_components} principal components"),
        "pca_cumulative_overlap": var("component", [pca.cumulative_overlap(ref_axes, gen_axes, i, n_components)
                                                    for i in range(n_components)],
                                      f"cumulative overlap of each reference PC with the first {n_components} "
                                      f"generated PCs"),
    }
    coords = {"atom": np.arange(n_atoms), "resid": ("atom", _labels(ref_atoms, "resids")),
              "resname": ("atom", _labels(ref_atoms, "resnames")), "name": ("atom", _labels(ref_atoms)),
              "atom_j": np.arange(n_atoms), "pc": ["PC1", "PC2"], "component": np.arange(1, n_components + 1),
              "bound": ["lower", "upper"]}

    if dihedrals:
        ref_angles, resids = _backbone_dihedrals(ref_atoms, "reference")
        gen_angles, _ = _backbone_dihedrals(gen_atoms, "generated")
        if ref_angles.shape[1] == 0 or ref_angles.shape[1] != gen_angles.shape[1]:
            raise ValueError(f"reference has φ/ψ for {ref_angles.shape[1]} residues but generated for "
                             f"{gen_angles.shape[1]} (φ/ψ need N, CA and C of consecutive residues); give both "
                             f"ensembles the same protein backbone atoms or pass dihedrals=False")
        angles = np.concatenate([ref_angles, gen_angles]).reshape(n_pool, -1)
        width = 360.0 / dihedral_bins
        pool["dihedral_bin"] = np.clip(((angles + 180.0) // width).astype(np.int64), 0, dihedral_bins - 1)
        pool["dihedral_bins"] = dihedral_bins
        binning["dihedral_jsd"] = binning["dihedral_jsd_residue"] = \
            f"{dihedral_bins} bins of {width:g}° over [-180°, 180°)"
        coords.update({"residue": np.asarray(resids), "angle": ["phi", "psi"]})
        data["reference_dihedrals"] = var(("reference_frame", "residue", "angle"), ref_angles,
                                          "backbone dihedral (reference)", "degree")
        data["generated_dihedrals"] = var(("generated_frame", "residue", "angle"), gen_angles,
                                          "backbone dihedral (generated)", "degree")

    if distances or (tica_lag is not None and tica_features == "distances"):
        first, second = np.triu_indices(n_atoms, k=1)
        pair_distances = np.linalg.norm(aligned[:, first] - aligned[:, second], axis=-1)
    if distances:
        pool["distance_sorted"] = _sorted_pool(pair_distances)

    if tica_lag is not None:
        from deeptime.decomposition import TICA

        features = flat if tica_features == "positions" else pair_distances
        try:
            tics = TICA(lagtime=tica_lag, dim=2).fit(features[:n_ref]).fetch_model().transform(features)
        except np.linalg.LinAlgError as err:  # deeptime's ZeroRankError: features constant over reference
            raise ValueError(f"the TICA of reference on tica_features={tica_features!r} failed ({err}); select "
                             f"atoms that move relative to each other or pass tica_lag=None") from err
        pool["tica_bin"], tic_edges = _grid(tics, fes_bins)
        pool["fes_bins"] = fes_bins
        binning["fes_jsd"] = binning["fes_rms_difference"] = (
            f"{fes_bins} × {fes_bins} equal-width bins over TIC1 [{tic_edges[0][0]:.4g}, {tic_edges[0][-1]:.4g}], "
            f"TIC2 [{tic_edges[1][0]:.4g}, {tic_edges[1][-1]:.4g}]")
        histograms = [_histograms(pool["tica_bin"], weights, fes_bins**2)[0].reshape(fes_bins, fes_bins)
                      for weights in (ref_weights, gen_weights)]
        centres = [(edges[1:] + edges[:-1]) / 2 for edges in tic_edges]
        coords.update({"tic": ["TIC1", "TIC2"], "tic1_bin": centres[0], "tic2_bin": centres[1]})
        grid = ("tic1_bin", "tic2_bin")
        data.update({
            "reference_tica": var(("reference_frame", "tic"), tics[:n_ref], "TICA coordinate of the reference"),
            "generated_tica": var(("generated_frame", "tic"), tics[n_ref:], "TICA coordinate of the reference"),
            "reference_fes": var(grid, _free_energy(histograms[0]), "free energy on reference TICs (reference)",
                                 "kT"),
            "generated_fes": var(grid, _free_energy(histograms[1]), "free energy on reference TICs (generated)",
                                 "kT"),
            "fes_difference": var(grid, _fes_rms_difference(*histograms)[1],
                                  "free-energy difference, generated minus reference", "kT"),
        })

    rng = np.random.default_rng(seed)
    tail = 50 * (1 - confidence)
    samples = {"": (ref_frames, gen_frames)}
    if baseline:
        samples["baseline_"] = (ref_frames[:half], ref_frames[half:])
    for prefix, (first_frames, second_frames) in samples.items():
        weights = [np.isin(np.arange(n_pool), frames).astype(float) for frames in (first_frames, second_frames)]
        values = _distances(pool, *weights)
        blocks = (block_length, block_length if prefix else 1)  # generated frames have no time order
        intervals = (_bootstrap(pool, first_frames, second_frames, n_pool, n_bootstrap, rng, blocks)
                     if n_bootstrap else {})
        what = " (reference halves)" if prefix else ""
        for name, value in values.items():
            dims, long_name, units = _QUANTITIES[name]
            extra = {"binning": binning[name]} if name in binning else {}
            data[prefix + name] = var(dims, value, long_name + what, units, **extra)
            if name in intervals:
                with np.errstate(invalid="ignore"):  # NaN replicates (e.g. RMSF ratios of rigid atoms) stay NaN
                    bounds = np.moveaxis(np.percentile(intervals[name], [tail, 100 - tail], axis=0), 0, -1)
                data[prefix + name + "_interval"] = var((*dims, "bound"), bounds, f"{100 * confidence:g} % "
                                                        f"bootstrap interval of {long_name}{what}", units, **extra)
    if baseline:
        first_half, second_half = _pca(flat[:half], flat[half:n_ref], flat[:half].mean(axis=0))[:2]
        n_half = min(n_components, half - 1, n_ref - half - 1)
        data["baseline_pca_rmsip"] = var((), float(pca.rmsip(first_half, second_half, n_components=n_half)),
                                         f"RMSIP of the first {n_half} principal components of reference halves")

    if paired:
        squared = ((gen_aligned - ref_aligned) ** 2).mean(axis=(1, 2))
        data.update({
            "paired_mse": var((), float(squared.mean()), "mean squared error of paired frames", "Å²"),
            "paired_mse_frame": var("reference_frame", squared, "mean squared error per paired frame", "Å²"),
            "paired_spearman": var((), float(spearmanr(ref_aligned.ravel(), gen_aligned.ravel())[0]),
                                   "Spearman correlation of paired coordinates"),
        })
        if n_bootstrap:
            replicates = [_resample(rng, ref_frames, n_ref, block_length) @ squared / n_ref
                          for _ in range(n_bootstrap)]
            data["paired_mse_interval"] = var("bound", np.percentile(replicates, [tail, 100 - tail]),
                                              f"{100 * confidence:g} % bootstrap interval of the paired MSE", "Å²")

    if hes:
        pairs = {"hes": (ref_aligned, gen_aligned)}
        if baseline:
            pairs["baseline_hes"] = (ref_aligned[:half], ref_aligned[half:])
        for name, (first, second) in pairs.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # mdaencore warns about its own defaults (weights, no box)
                matrix, _ = mdaencore.hes([in_memory(ref_atoms, first), in_memory(ref_atoms, second)], select="all",
                                          weights=None)
            what = " (reference halves)" if name.startswith("baseline") else ""
            data[name] = var((), float(matrix[0, 1]), f"harmonic ensemble similarity (mdaencore){what}")

    if geometry:  # all atoms, against the reference's mean geometry (the measures of mdcvkit.repair)
        from .repair.geometry import _Measures

        ref_full = read_frames(reference.atoms, "reference")[0]
        measures = _Measures(reference.atoms, ref_full, np.asarray(reference.atoms.masses, dtype=float))
        for name, positions, dim in (("reference", ref_full, "reference_frame"),
                                     ("generated", read_frames(generated.atoms, "generated")[0], "generated_frame")):
            for measure, (values, long_name, units) in measures(positions, "").items():
                data[f"{name}_{measure}"] = var(dim, values, f"{long_name} ({name})", units)

    return xr.Dataset(data, coords=coords, attrs={
        "select": select, "reference_frame": reference_frame, "rmsd_bins": bins, "pca_bins": pca_bins,
        "dihedral_bins": dihedral_bins, "fes_bins": fes_bins,
        "baseline": "first vs second half of reference" if baseline else "none",
        "binning": "equal-width bins over the range of both ensembles together, shared by comparison, baseline "
        "and bootstrap; dihedrals over [-180, 180) degrees", "jsd_base": 2,
        "tica": f"deeptime TICA at lag {tica_lag} frames of reference on {tica_features}" if tica_lag else "none",
        "n_bootstrap": n_bootstrap, "confidence": confidence, "seed": seed,
        "block_length": block_length,
        "bootstrap": "frames of each ensemble (of each half, for the baseline) resampled independently with "
        "replacement, the reference's in moving blocks of block_length frames; percentile intervals"})
