"""Scores of CVs and ensembles: FEBILAE's regscore and its bootstrap threshold."""

import numpy as np

__all__ = ["regscore", "regscore_threshold", "knn_score", "compare_ensembles"]


def _as_2d(values, name):
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(f"{name} must have shape (n_frames,) or (n_frames, n_cv) with n_frames >= 2; "
                         f"got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def regscore(a, b, weights=None):
    """R² of the best affine map from CV ``a`` to CV ``b`` (FEBILAE's convergence score).

    Fits ``b ≈ a W + c`` by (weighted) least squares and returns the
    coefficient of determination averaged uniformly over the components of
    ``b``, as scikit-learn's ``LinearRegression().score(a, b)``. It is 1 when
    ``b`` is an affine function of ``a`` and is not symmetric in general.

    Parameters
    ----------
    a, b : array_like, shape (n_frames,) or (n_frames, n_cv)
        Two CVs evaluated on the same frames (xarray DataArrays work).
    weights : array_like, shape (n_frames,), optional
        Frame weights; uniform when None.

    Returns
    -------
    float
        Score in (-inf, 1]; a constant component of ``b`` scores 1 if
        predicted exactly, else 0.

    References
    ----------
    Z. Belkacemi, P. Gkeka, T. Lelièvre, G. Stoltz, J. Chem. Theory Comput. 18, 59 (2022).
    """
    x, y = _as_2d(a, "a"), _as_2d(b, "b")
    if len(x) != len(y):
        raise ValueError(f"a has {len(x)} frames but b has {len(y)}; evaluate both CVs on the same frames")
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != len(x) or np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ValueError(f"weights must be {len(x)} finite non-negative values, not all zero")
    w = w / w.sum()
    design = np.hstack([x, np.ones((len(x), 1))])
    sw = np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(design * sw, y * sw, rcond=None)
    residual = (w[:, None] * (y - design @ coef) ** 2).sum(0)
    total = (w[:, None] * (y - (w[:, None] * y).sum(0)) ** 2).sum(0)
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), (residual <= 1e-12).astype(float))
    return float(scores.mean())


def regscore_threshold(fit_cv, n_frames, n_bootstrap=10, fraction=0.1, percentile=5.0, seed=0):
    """Bootstrap threshold for regscore between CVs that differ only by sampling noise (FEBILAE).

    A CV is trained on each of ``n_bootstrap`` random sub-samples holding
    ``fraction`` of the frames; the regscores between the CV trained on all
    frames and each sub-sample CV (both evaluated on all frames) measure how
    much regscore a CV loses from finite data alone. Their ``percentile``-th
    percentile is the threshold above which two successive CVs are taken as
    the same.

    Parameters
    ----------
    fit_cv : callable
        ``fit_cv(indices) -> array (n_frames, n_cv)``: trains a CV on the
        frames ``indices`` (None: all frames) and returns it on all frames.
    n_frames : int
        Number of frames.
    n_bootstrap : int, default 10
    fraction : float, default 0.1
        Fraction of frames per sub-sample, in (0, 1].
    percentile : float, default 5.0
    seed : int, default 0

    Returns
    -------
    threshold : float
    scores : numpy.ndarray, shape (n_bootstrap,)
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must be in (0, 1], e.g. 0.1")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap={n_bootstrap} must be at least 1")
    rng = np.random.default_rng(seed)
    size = max(2, int(round(fraction * n_frames)))
    full = fit_cv(None)
    scores = np.array([regscore(full, fit_cv(np.sort(rng.choice(n_frames, size, replace=False))))
                       for _ in range(n_bootstrap)])
    return float(np.percentile(scores, percentile)), scores


def knn_score(cv, targets, lengths=None, n_neighbors=10, test_fraction=0.3, seed=0):
    """How well a CV determines other quantities: held-out R² of k-nearest-neighbour regression.

    A k-nearest-neighbour regressor from ``cv`` to ``targets`` is trained on
    part of the frames and scored on contiguous held-out blocks (chosen as in
    :func:`mdcvkit.training.validation_mask`, never crossing trajectories), so
    that time-correlated neighbours of a test frame are not in the training
    set.

    Parameters
    ----------
    cv : array_like, shape (n_frames, n_cv)
        CV time series (e.g. ``results.cv``).
    targets : array_like, shape (n_frames, n_targets)
        Quantities to predict, e.g. (sin φ, cos φ, sin ψ, cos ψ).
    lengths : sequence of int, optional
        Frames per trajectory; when None, taken from the ``trajectory``
        coordinate of ``cv`` (as on ``results.cv``), else one trajectory.
    n_neighbors : int, default 10
    test_fraction : float, default 0.3
    seed : int, default 0

    Returns
    -------
    xarray.DataArray (scalar)
        R² averaged uniformly over targets; attrs ``per_target`` (R² of each
        target) and ``n_neighbors``.
    """
    import xarray as xr
    from sklearn.metrics import r2_score
    from sklearn.neighbors import KNeighborsRegressor

    from .training import validation_mask

    x, y = _as_2d(cv, "cv"), _as_2d(targets, "targets")
    if len(x) != len(y):
        raise ValueError(f"cv has {len(x)} frames but targets has {len(y)}; pass values of the same frames")
    if lengths is None and "trajectory" in getattr(cv, "coords", {}):
        trajectory = np.asarray(cv["trajectory"])
        lengths = np.diff(np.r_[0, np.flatnonzero(np.diff(trajectory)) + 1, len(trajectory)]).tolist()
    test = validation_mask([len(x)] if lengths is None else lengths, test_fraction, seed=seed)
    model = KNeighborsRegressor(n_neighbors=n_neighbors).fit(x[~test], y[~test])
    predicted = model.predict(x[test])
    per_target = r2_score(y[test], predicted, multioutput="raw_values")
    return xr.DataArray(float(per_target.mean()), attrs={
        "long_name": "held-out R² of kNN regression", "units": "", "per_target": per_target.tolist(),
        "n_neighbors": n_neighbors})


# --- ensemble comparison (issue 7, part 2) -------------------------------------------------------


def _ensemble_positions(ensemble, select, name):
    """Selected atoms of ``ensemble`` and a copy of their positions over all frames (Å)."""
    if not hasattr(ensemble, "select_atoms") or not hasattr(ensemble, "universe"):
        raise TypeError(f"{name} must be an MDAnalysis Universe or AtomGroup, not {type(ensemble).__name__}; "
                        f"load it with MDAnalysis.Universe(topology, trajectory)")
    atoms = ensemble.select_atoms(select)
    if len(atoms) == 0:
        raise ValueError(f"select={select!r} matches no atoms in {name}; pass a selection present in both "
                         f"ensembles, e.g. select='name CA' or select='backbone'")
    trajectory = atoms.universe.trajectory
    if trajectory.n_frames < 2:
        raise ValueError(f"{name} has n_frames={trajectory.n_frames}; an ensemble needs at least 2 frames, "
                         f"pass a Universe with a multi-frame trajectory")
    current = trajectory.ts.frame
    try:
        positions = np.array([atoms.positions for _ in trajectory], dtype=np.float64)
    finally:
        trajectory[current]  # leave the caller's trajectory on the frame it was on
    if not np.all(np.isfinite(positions)):
        raise ValueError(f"{name} holds NaN or infinite positions; remove or repair those frames first")
    return atoms, positions


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


def _in_memory(atoms, positions):
    """A new Universe holding ``atoms``' topology and the frames ``positions``."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    universe = mda.Merge(atoms)
    universe.load_new(positions.astype(np.float32), format=MemoryReader)
    return universe


def _histogram_jsd(samples_a, samples_b, bins, ranges):
    """Jensen–Shannon distance (base 2, in [0, 1]) between histograms of two samples on shared bins."""
    from scipy.spatial.distance import jensenshannon

    p = np.histogramdd(samples_a, bins=bins, range=ranges)[0].ravel()
    q = np.histogramdd(samples_b, bins=bins, range=ranges)[0].ravel()
    return float(jensenshannon(p, q, base=2))


def _shared_range(a, b):
    low, high = min(a.min(), b.min()), max(a.max(), b.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    return (float(low), float(high))


def _backbone_dihedrals(ensemble, atoms, name):
    """φ/ψ (degrees, shape (n_frames, n_residues, 2)) and resids from MDAnalysis's Ramachandran."""
    import warnings

    from MDAnalysis.analysis.dihedrals import Ramachandran

    trajectory = atoms.universe.trajectory
    current = trajectory.ts.frame
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot determine phi and psi angles")
            analysis = Ramachandran(atoms.residues.atoms).run()
    except ValueError as err:
        raise ValueError(f"backbone dihedrals of {name} cannot be computed ({err}); pass dihedrals=False "
                         f"for ensembles without full protein backbones") from err
    finally:
        trajectory[current]
    return np.asarray(analysis.results.angles, dtype=np.float64), analysis.ag3.residues.resids


def _dihedral_jsd(ref_angles, gen_angles, n_bins):
    """Jensen–Shannon distance (base 2) per residue and angle between circular histograms (degrees)."""
    from scipy.spatial.distance import jensenshannon

    edges = np.linspace(-180.0, 180.0, n_bins + 1)
    jsd = np.empty(ref_angles.shape[1:])
    for residue in range(jsd.shape[0]):
        for angle in range(jsd.shape[1]):
            p = np.histogram(ref_angles[:, residue, angle], bins=edges)[0]
            q = np.histogram(gen_angles[:, residue, angle], bins=edges)[0]
            jsd[residue, angle] = jensenshannon(p, q, base=2)
    return jsd


def _pair_wasserstein(ref_distances, gen_distances, n_atoms):
    """Symmetric (n_atoms, n_atoms) matrix of Wasserstein-1 distances between pair-distance samples."""
    from scipy.stats import wasserstein_distance

    first, second = np.triu_indices(n_atoms, k=1)
    matrix = np.zeros((n_atoms, n_atoms))
    matrix[first, second] = [wasserstein_distance(ref_distances[:, k], gen_distances[:, k])
                             for k in range(len(first))]
    return matrix + matrix.T


def compare_ensembles(reference, generated, select="name CA", *, reference_frame=0, bins=50, pca_bins=30,
                      dihedral_bins=36, dihedrals=True, distances=True, baseline=True):
    """Compare a generated ensemble with a reference (MD) ensemble, as in Ojeda-May (2025).

    Both ensembles are restricted to the atoms ``select`` and every frame is
    superposed (translation and rotation, unweighted) on frame
    ``reference_frame`` of ``reference``; all metrics below are computed on
    these aligned copies. The inputs are never modified (their trajectories are
    left on the frame they were on).

    Parameters
    ----------
    reference : MDAnalysis.Universe or MDAnalysis.AtomGroup
        The reference ensemble, e.g. the MD training data; at least 2 frames.
    generated : MDAnalysis.Universe or MDAnalysis.AtomGroup
        The ensemble to assess, e.g. ``cv.generate(...)``; at least 2 frames.
        ``select`` must pick the same atoms (same count, names and residue
        names, in the same order) as in ``reference``.
    select : str, default "name CA"
        MDAnalysis selection of the atoms compared.
    reference_frame : int, default 0
        Frame of ``reference`` used as the reference structure for alignment
        and RMSD.
    bins : int, default 50
        Number of equal-width bins, over the range shared by both ensembles,
        of the RMSD histograms behind ``rmsd_jsd``.
    pca_bins : int, default 30
        Bins per axis of the 2-D PC1–PC2 histograms behind ``pca_jsd``
        (range shared by both ensembles).
    dihedral_bins : int, default 36
        Bins over [-180°, 180°) of the circular φ and ψ histograms behind
        ``dihedral_jsd`` (10° each by default).
    dihedrals : bool, default True
        Compare backbone φ/ψ distributions (needs N, CA and C atoms of the
        residues of ``select``, read from the full inputs).
    distances : bool, default True
        Compare the distributions of all pairwise distances between the
        selected atoms (n_atoms (n_atoms - 1) / 2 Wasserstein distances).
    baseline : bool, default True
        Also compute each distribution distance between the first and the
        second half (in frame order) of ``reference``: the MD-vs-MD value that
        sampling alone gives, to read the generated-vs-reference value against.
        Needs at least 4 reference frames.

    Returns
    -------
    xarray.Dataset
        Dimensions ``reference_frame``, ``generated_frame`` (frames of each
        ensemble), ``atom`` (selected atoms, with coordinates ``resid``,
        ``resname``, ``name``), ``pc`` (PC1, PC2) and, with ``dihedrals``,
        ``residue`` and ``angle`` (phi, psi). Variables, each with attrs
        ``long_name`` and ``units``:

        - ``reference_rmsd``, ``generated_rmsd`` (Å), per frame: RMSD to the
          reference structure after superposition (Ojeda-May Fig. 2);
        - ``rmsd_jsd``: Jensen–Shannon distance (base 2, in [0, 1]) between
          the RMSD histograms; ``rmsd_wasserstein`` (Å): Wasserstein-1 distance
          between the RMSD samples;
        - ``reference_rmsf``, ``generated_rmsf`` (Å), per atom: RMSF about
          each ensemble's mean aligned structure (MDAnalysis ``rms.RMSF``);
          ``rmsf_pearson``: their Pearson correlation; ``rmsf_ratio``,
          per atom, generated over reference, and ``rmsf_ratio_mean`` (the
          "temperature" of the generated ensemble, Ojeda-May Fig. 3);
        - ``reference_pca``, ``generated_pca`` (Å), per frame and ``pc``:
          projections on PC1–PC2 of a PCA fitted on the aligned reference
          (axes from an SVD of the centred frames: those of MDAnalysis
          ``pca.PCA`` up to sign, without its eigendecomposition of a
          (3 n_atoms)² matrix); ``pca_jsd``: Jensen–Shannon distance between
          their 2-D histograms; ``pca_variance_reference`` and
          ``pca_variance_generated``: fraction of each ensemble's total
          variance captured by PC1–PC2 of the reference; ``pca_rmsip``:
          root mean square inner product (MDAnalysis ``pca.rmsip``) of the
          first ``n`` = min(10, n_frames - 1, 3 n_atoms) principal components
          of the two ensembles (Ojeda-May Fig. 4);
        - with ``dihedrals``: ``reference_dihedrals``, ``generated_dihedrals``
          (degrees), the Ramachandran data, per frame, residue and angle;
          ``dihedral_jsd``, per residue and angle, Jensen–Shannon distance of
          circular histograms, and ``dihedral_jsd_residue``, its maximum over
          φ and ψ (PENSA's per-residue summary);
        - with ``distances``: ``distance_wasserstein`` (Å), per pair of atoms
          (dims ``atom``, ``atom_j``; zero on the diagonal): Wasserstein-1
          distance between the distributions of their distance, and
          ``distance_wasserstein_residue`` (Å), its mean over partners of each
          atom;
        - with ``baseline``: ``baseline_rmsd_jsd``, ``baseline_rmsd_wasserstein``,
          ``baseline_pca_jsd`` and, as enabled, ``baseline_dihedral_jsd``,
          ``baseline_dihedral_jsd_residue``, ``baseline_distance_wasserstein``,
          ``baseline_distance_wasserstein_residue``: the same distances between
          the two halves of ``reference`` (same binning rules, same
          alignment and reference PCs);
        - when both ensembles have the same number of frames, taken as paired
          (frame i of ``generated`` reconstructs frame i of ``reference``):
          ``paired_mse`` (Å²), mean squared difference of aligned coordinates,
          ``paired_mse_frame`` (Å²) per frame, and ``paired_spearman``, the
          Spearman correlation of the aligned coordinates (Ojeda-May Table 1).

        Attrs record ``select``, ``reference_frame`` and the binning.

    Raises
    ------
    ValueError
        When ``select`` is empty in either ensemble, picks different atoms in
        the two, an ensemble has fewer than 2 frames or NaN positions, or
        ``reference_frame`` is out of range, or ``baseline`` is set with fewer
        than 4 reference frames.

    References
    ----------
    P. Ojeda-May, "Exploring the conformational space of proteins with
    Wasserstein autoencoders" (2025): RMSD, RMSF and PCA comparisons (Figs. 2–4)
    and the Spearman/MSE reconstruction scores (Table 1).
    M. Vögele et al., "Systematic analysis of biomolecular conformational
    ensembles with PENSA", https://github.com/drorlab/pensa: per-feature
    Jensen–Shannon distances summarised per residue.
    A. Amadei, M. A. Ceruso, A. Di Nola, Proteins 36, 419 (1999): RMSIP.
    """
    import xarray as xr
    from MDAnalysis.analysis import pca, rms
    from scipy.stats import pearsonr, spearmanr, wasserstein_distance

    ref_atoms, ref_positions = _ensemble_positions(reference, select, "reference")
    gen_atoms, gen_positions = _ensemble_positions(generated, select, "generated")
    if (len(ref_atoms) != len(gen_atoms) or np.any(ref_atoms.names != gen_atoms.names)
            or np.any(ref_atoms.resnames != gen_atoms.resnames)):
        raise ValueError(f"select={select!r} picks {len(ref_atoms)} atoms in reference but {len(gen_atoms)} in "
                         f"generated, or atoms with different names or residue names; both ensembles must have "
                         f"the same atoms in the same order: pass the same topology or a narrower selection")
    n_ref = len(ref_positions)
    if not -n_ref <= reference_frame < n_ref:
        raise ValueError(f"reference_frame={reference_frame} is out of range for reference with n_frames={n_ref}; "
                         f"pass an index in [0, {n_ref})")
    if baseline and n_ref < 4:
        raise ValueError(f"baseline=True splits reference into halves but reference has n_frames={n_ref}; "
                         f"pass at least 4 reference frames or baseline=False")
    n_atoms = len(ref_atoms)
    half = n_ref // 2
    target = ref_positions[reference_frame]
    ref_aligned, ref_rmsd = _superpose(ref_positions, target)
    gen_aligned, gen_rmsd = _superpose(gen_positions, target)

    def var(dims, values, long_name, units=""):
        return xr.Variable(dims, values, attrs={"long_name": long_name, "units": units})

    data = {
        "reference_rmsd": var("reference_frame", ref_rmsd, "RMSD to the reference structure (reference)", "Å"),
        "generated_rmsd": var("generated_frame", gen_rmsd, "RMSD to the reference structure (generated)", "Å"),
        "rmsd_jsd": var((), _histogram_jsd(ref_rmsd[:, None], gen_rmsd[:, None], bins,
                                           [_shared_range(ref_rmsd, gen_rmsd)]),
                        "Jensen–Shannon distance between RMSD histograms"),
        "rmsd_wasserstein": var((), wasserstein_distance(ref_rmsd, gen_rmsd),
                                "Wasserstein-1 distance between RMSD distributions", "Å"),
    }

    # RMSF with MDAnalysis on in-memory copies of the aligned frames
    ref_universe, gen_universe = _in_memory(ref_atoms, ref_aligned), _in_memory(gen_atoms, gen_aligned)
    ref_rmsf = np.asarray(rms.RMSF(ref_universe.atoms).run().results.rmsf, dtype=np.float64)
    gen_rmsf = np.asarray(rms.RMSF(gen_universe.atoms).run().results.rmsf, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = gen_rmsf / ref_rmsf
    pearson = float(pearsonr(ref_rmsf, gen_rmsf)[0]) if n_atoms > 2 else np.nan
    data.update({
        "reference_rmsf": var("atom", ref_rmsf, "RMSF (reference)", "Å"),
        "generated_rmsf": var("atom", gen_rmsf, "RMSF (generated)", "Å"),
        "rmsf_pearson": var((), pearson, "Pearson correlation of per-atom RMSF"),
        "rmsf_ratio": var("atom", ratio, "RMSF ratio, generated over reference"),
        "rmsf_ratio_mean": var((), float(gen_rmsf.mean() / ref_rmsf.mean()),
                               "mean RMSF ratio, generated over reference"),
    })

    # PCA fitted on the reference, both projected on PC1-PC2. The principal axes come from an SVD of
    # the centred frames, equal to MDAnalysis.analysis.pca.PCA's eigenvectors of the covariance but
    # without its general eigendecomposition of a (3 n_atoms)^2 matrix (seconds for 200 atoms).
    ref_flat = ref_aligned.reshape(n_ref, -1)
    gen_flat = gen_aligned.reshape(len(gen_aligned), -1)
    ref_mean = ref_flat.mean(axis=0)
    ref_axes = np.linalg.svd(ref_flat - ref_mean, full_matrices=False)[2]
    gen_axes = np.linalg.svd(gen_flat - gen_flat.mean(axis=0), full_matrices=False)[2]
    ref_projection = (ref_flat - ref_mean) @ ref_axes[:2].T
    gen_projection = (gen_flat - ref_mean) @ ref_axes[:2].T
    ref_total = ref_flat.var(axis=0).sum()
    gen_total = gen_flat.var(axis=0).sum()
    n_rmsip = min(10, n_ref - 1, len(gen_flat) - 1, 3 * n_atoms)
    ranges = [_shared_range(ref_projection[:, k], gen_projection[:, k]) for k in range(2)]
    data.update({
        "reference_pca": var(("reference_frame", "pc"), ref_projection, "projection on reference PCs", "Å"),
        "generated_pca": var(("generated_frame", "pc"), gen_projection, "projection on reference PCs", "Å"),
        "pca_jsd": var((), _histogram_jsd(ref_projection, gen_projection, pca_bins, ranges),
                       "Jensen–Shannon distance between PC1–PC2 histograms"),
        "pca_variance_reference": var((), float(ref_projection.var(axis=0).sum() / ref_total)
                                      if ref_total > 0 else np.nan,
                                      "fraction of reference variance on reference PC1–PC2"),
        "pca_variance_generated": var((), float(gen_projection.var(axis=0).sum() / gen_total)
                                      if gen_total > 0 else np.nan,
                                      "fraction of generated variance on reference PC1–PC2"),
        "pca_rmsip": var((), float(pca.rmsip(ref_axes, gen_axes, n_components=n_rmsip)),
                         f"RMSIP of the first {n_rmsip} principal components"),
    })
    coords = {"atom": np.arange(n_atoms), "resid": ("atom", ref_atoms.resids),
              "resname": ("atom", ref_atoms.resnames.astype(str)), "name": ("atom", ref_atoms.names.astype(str)),
              "pc": ["PC1", "PC2"]}

    if baseline:
        ref_a, ref_b = ref_rmsd[:half], ref_rmsd[half:]
        ranges_ab = [_shared_range(ref_projection[:half, k], ref_projection[half:, k]) for k in range(2)]
        data.update({
            "baseline_rmsd_jsd": var((), _histogram_jsd(ref_a[:, None], ref_b[:, None], bins,
                                                        [_shared_range(ref_a, ref_b)]),
                                     "Jensen–Shannon distance between RMSD histograms of reference halves"),
            "baseline_rmsd_wasserstein": var((), wasserstein_distance(ref_a, ref_b),
                                             "Wasserstein-1 distance between RMSD of reference halves", "Å"),
            "baseline_pca_jsd": var((), _histogram_jsd(ref_projection[:half], ref_projection[half:], pca_bins,
                                                       ranges_ab),
                                    "Jensen–Shannon distance between PC1–PC2 histograms of reference halves"),
        })

    if dihedrals:
        ref_angles, resids = _backbone_dihedrals(reference, ref_atoms, "reference")
        gen_angles, _ = _backbone_dihedrals(generated, gen_atoms, "generated")
        if ref_angles.shape[1] == 0 or ref_angles.shape[1] != gen_angles.shape[1]:
            raise ValueError(f"reference has φ/ψ for {ref_angles.shape[1]} residues but generated for "
                             f"{gen_angles.shape[1]} (φ/ψ need N, CA and C of consecutive residues); give both "
                             f"ensembles the same protein backbone atoms or pass dihedrals=False")
        jsd = _dihedral_jsd(ref_angles, gen_angles, dihedral_bins)
        coords.update({"residue": np.asarray(resids), "angle": ["phi", "psi"]})
        data.update({
            "reference_dihedrals": var(("reference_frame", "residue", "angle"), ref_angles,
                                       "backbone dihedral (reference)", "degree"),
            "generated_dihedrals": var(("generated_frame", "residue", "angle"), gen_angles,
                                       "backbone dihedral (generated)", "degree"),
            "dihedral_jsd": var(("residue", "angle"), jsd, "Jensen–Shannon distance of dihedral histograms"),
            "dihedral_jsd_residue": var("residue", jsd.max(axis=1),
                                        "largest φ/ψ Jensen–Shannon distance per residue"),
        })
        if baseline:
            jsd_ab = _dihedral_jsd(ref_angles[:half], ref_angles[half:], dihedral_bins)
            data.update({
                "baseline_dihedral_jsd": var(("residue", "angle"), jsd_ab,
                                             "Jensen–Shannon distance of dihedral histograms of reference halves"),
                "baseline_dihedral_jsd_residue": var("residue", jsd_ab.max(axis=1),
                                                     "largest φ/ψ Jensen–Shannon distance per residue, "
                                                     "reference halves"),
            })

    if distances:
        first, second = np.triu_indices(n_atoms, k=1)
        ref_d = np.linalg.norm(ref_aligned[:, first] - ref_aligned[:, second], axis=-1)
        gen_d = np.linalg.norm(gen_aligned[:, first] - gen_aligned[:, second], axis=-1)
        matrix = _pair_wasserstein(ref_d, gen_d, n_atoms)
        if baseline:
            matrix_ab = _pair_wasserstein(ref_d[:half], ref_d[half:], n_atoms)
            data.update({
                "baseline_distance_wasserstein": var(("atom", "atom_j"), matrix_ab, "Wasserstein-1 distance "
                                                     "between pair-distance distributions of reference halves", "Å"),
                "baseline_distance_wasserstein_residue": var("atom", matrix_ab.sum(axis=1) / max(n_atoms - 1, 1),
                                                             "mean pair-distance Wasserstein-1 distance per atom, "
                                                             "reference halves", "Å"),
            })
        data.update({
            "distance_wasserstein": var(("atom", "atom_j"), matrix,
                                        "Wasserstein-1 distance between pair-distance distributions", "Å"),
            "distance_wasserstein_residue": var("atom", matrix.sum(axis=1) / max(n_atoms - 1, 1),
                                                "mean pair-distance Wasserstein-1 distance per atom", "Å"),
        })

    if len(gen_aligned) == n_ref:
        difference = (gen_aligned - ref_aligned) ** 2
        data.update({
            "paired_mse": var((), float(difference.mean()), "mean squared error of paired frames", "Å²"),
            "paired_mse_frame": var("reference_frame", difference.mean(axis=(1, 2)),
                                    "mean squared error per paired frame", "Å²"),
            "paired_spearman": var((), float(spearmanr(ref_aligned.ravel(), gen_aligned.ravel())[0]),
                                   "Spearman correlation of paired coordinates"),
        })

    return xr.Dataset(data, coords=coords, attrs={
        "select": select, "reference_frame": reference_frame, "rmsd_bins": bins, "pca_bins": pca_bins,
        "dihedral_bins": dihedral_bins, "baseline": "first vs second half of reference" if baseline else "none",
        "binning": "equal-width bins over the range shared by both ensembles; "
        "dihedrals over [-180, 180) degrees", "jsd_base": 2})
