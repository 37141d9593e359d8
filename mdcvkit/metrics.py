"""Scores of CVs and ensembles: FEBILAE's regscore and its bootstrap threshold, kNN scores, and (from
:mod:`mdcvkit.ensembles`) the comparison of a generated ensemble with a reference (MD) ensemble."""

import numpy as np

from ._checks import check_int, check_number, check_seed
from .ensembles import TICA_FEATURES, compare_ensembles

__all__ = ["regscore", "regscore_threshold", "unwrap_angles", "knn_score", "knn_regscore", "compare_ensembles",
           "TICA_FEATURES"]


def _as_2d(values, name):
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numbers of shape (n_frames,) or (n_frames, n_cv), not "
                         f"{type(values).__name__} ({err})") from err
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(
            f"{name} must have shape (n_frames,) or (n_frames, n_cv) with n_frames >= 2; got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(array)))} NaN or infinite values; drop those "
                         "frames first")
    return array


def _paired(a, b):
    """Two CVs on the same frames as 2-D float arrays."""
    x, y = _as_2d(a, "a"), _as_2d(b, "b")
    if len(x) != len(y):
        raise ValueError(f"a has {len(x)} frames but b has {len(y)}; evaluate both CVs on the same frames")
    return x, y


def _frame_weights(weights, n_frames):
    """Frame weights normalised to sum 1; uniform when None."""
    if weights is None:
        return np.full(n_frames, 1.0 / n_frames)
    from .training import normalize_weights

    return normalize_weights(n_frames, weights)


def _affine_map(x, y, w):
    """``W, c`` of the affine fit ``y ≈ x W + c`` by least squares weighted by ``w``."""
    design = np.hstack([x, np.ones((len(x), 1))])
    sw = np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(design * sw, y * sw, rcond=None)
    return coef[:-1], coef[-1]


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
    x, y = _paired(a, b)
    if len(x) <= x.shape[1] + 1:
        raise ValueError(f"regscore needs more frames than the {x.shape[1] + 1} parameters per component of the "
                         f"affine map from a ({x.shape[1]} components), got {len(x)} frames: any map fits them "
                         "exactly (the score would be 1 for any CVs); pass more frames")
    w = _frame_weights(weights, len(x))
    weight, shift = _affine_map(x, y, w)
    residual = (w[:, None] * (y - x @ weight - shift) ** 2).sum(0)
    total = (w[:, None] * (y - (w[:, None] * y).sum(0)) ** 2).sum(0)
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), (residual <= 1e-12).astype(float))
    return float(scores.mean())


def regscore_threshold(fit_cv, n_frames, n_bootstrap=10, fraction=0.1, percentile=5.0, seed=0, score=None):
    """Bootstrap threshold for regscore between CVs that differ only by sampling noise (FEBILAE).

    A CV is trained on each of ``n_bootstrap`` random sub-samples holding
    ``fraction`` of the frames; the regscores between the CV trained on all
    frames and each sub-sample CV (both evaluated on all frames) measure how
    much regscore a CV loses from finite data alone. Their ``percentile``-th
    percentile is the threshold above which two successive CVs are taken as
    the same. ``score`` replaces regscore by another comparison of two CVs,
    e.g. :func:`knn_regscore`.

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
    score : callable, optional
        ``score(full, sub) -> float`` for two CVs on all frames; default :func:`regscore`.

    Returns
    -------
    threshold : float
    scores : numpy.ndarray, shape (n_bootstrap,)
    """
    if not callable(fit_cv):
        raise TypeError(f"fit_cv must be a function fit_cv(indices) -> CV on all frames, not {type(fit_cv).__name__}")
    if isinstance(fraction, (bool, str)) or not 0 < check_number("fraction", fraction, example="0.1") <= 1:
        raise ValueError(f"fraction={fraction!r} must be in (0, 1], e.g. 0.1")
    check_int(n_bootstrap, "n_bootstrap", fix="pass the number of sub-samples, e.g. n_bootstrap=10")
    check_int(n_frames, "n_frames", 2, "pass the number of frames fit_cv trains on")
    if isinstance(percentile, (bool, str)) or not 0 <= check_number("percentile", percentile, example="5") <= 100:
        raise ValueError(f"percentile={percentile!r} must be in [0, 100], e.g. 5")
    check_seed(seed)
    score = regscore if score is None else score
    rng = np.random.default_rng(seed)
    size = max(2, int(round(fraction * n_frames)))
    full = fit_cv(None)
    scores = np.array(
        [score(full, fit_cv(np.sort(rng.choice(n_frames, size, replace=False)))) for _ in range(n_bootstrap)]
    )
    return float(np.percentile(scores, percentile)), scores


def unwrap_angles(angles, lower):
    """Angles in degrees shifted into ``[lower, lower + 360)``, per column: a linear reference for regscore.

    :func:`regscore` fits an affine map, so a torsion used as a reference CV must not jump by 360°
    inside the sampled region. Cut each angle where the system never goes: for alanine dipeptide
    at 300 K, φ at +120° and ψ at −120° (``lower=(-240, -120)``), so that C7eq, C5, αR and C7ax
    are each in one piece. Sines and cosines are no substitute: even (φ, ψ) itself scores only
    0.77 against (sin φ, cos φ, sin ψ, cos ψ) on the C7eq/C5 frames of the shipped vacuum run,
    because four trigonometric targets are not affine in two angles.

    Parameters
    ----------
    angles : array_like, shape (n_frames,) or (n_frames, n_angles)
        Angles in degrees.
    lower : float or sequence of float
        Lower end of the interval of each angle, in degrees.

    Returns
    -------
    numpy.ndarray
        Same shape as ``angles``, in degrees.
    """
    angles = np.asarray(angles, dtype=np.float64)
    lower = np.asarray(lower, dtype=np.float64)
    if angles.ndim not in (1, 2) or lower.ndim > 1 or (lower.ndim == 1 and lower.shape[0] != angles.shape[-1]):
        raise ValueError(f"angles of shape {angles.shape} need one lower bound per column, got lower={lower.tolist()}")
    return (angles - lower) % 360.0 + lower


def knn_score(cv, targets, lengths=None, n_neighbors=10, test_fraction=0.3, seed=0, weights=None):
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
    weights : array_like, shape (n_frames,), optional
        Frame weights (e.g. the Boltzmann weights of biased frames): each prediction is the
        weighted mean of the neighbours' targets (their plain mean where all have zero weight),
        and the held-out R² is weighted. Uniform when None.

    Returns
    -------
    xarray.DataArray (scalar)
        R² averaged uniformly over targets; attrs ``per_target`` (R² of each
        target) and ``n_neighbors``.
    """
    import xarray as xr
    from sklearn.metrics import r2_score
    from sklearn.neighbors import NearestNeighbors

    from .training import validation_mask

    x, y = _as_2d(cv, "cv"), _as_2d(targets, "targets")
    if len(x) != len(y):
        raise ValueError(f"cv has {len(x)} frames but targets has {len(y)}; pass values of the same frames")
    if lengths is None and "trajectory" in getattr(cv, "coords", {}):
        trajectory = np.asarray(cv["trajectory"])
        lengths = np.diff(np.r_[0, np.flatnonzero(np.diff(trajectory)) + 1, len(trajectory)]).tolist()
    if lengths is not None and sum(lengths) != len(x):
        raise ValueError(f"lengths={list(lengths)} add up to {sum(lengths)} frames but cv has {len(x)}; pass the "
                         "frames of each trajectory, in order")
    check_int(n_neighbors, "n_neighbors", fix="pass e.g. n_neighbors=10")
    w = _frame_weights(weights, len(x))
    test = validation_mask([len(x)] if lengths is None else lengths, test_fraction, seed=seed)
    if not w[test].sum() > 0:
        raise ValueError("weights are zero on every held-out frame; give weight to more frames or pass another seed")
    if n_neighbors > int((~test).sum()):
        raise ValueError(f"n_neighbors={n_neighbors} is more than the {int((~test).sum())} training frames of the kNN "
                         f"regression ({len(x)} frames, test_fraction={test_fraction}); pass a smaller n_neighbors "
                         "or more frames")
    # the weighted mean of each held-out frame's neighbours (the plain mean for uniform weights): an estimate
    # of the target's expectation given the CV under the weighted density
    neighbours = NearestNeighbors(n_neighbors=n_neighbors).fit(x[~test]).kneighbors(x[test], return_distance=False)
    w_near = w[~test][neighbours]
    total = w_near.sum(axis=1, keepdims=True)
    w_near = np.where(total > 0, w_near / np.where(total > 0, total, 1.0), 1.0 / n_neighbors)
    predicted = np.einsum("fk,fkt->ft", w_near, y[~test][neighbours])
    per_target = r2_score(y[test], predicted, sample_weight=w[test], multioutput="raw_values")
    return xr.DataArray(
        float(per_target.mean()),
        attrs={
            "long_name": "held-out R² of kNN regression",
            "units": "",
            "per_target": per_target.tolist(),
            "n_neighbors": n_neighbors,
        },
    )


def knn_regscore(a, b, lengths=None, n_neighbors=10, seed=0, weights=None):
    """Whether two CVs are the same up to a smooth invertible map: :func:`knn_score` both ways, the lower.

    :func:`regscore` asks for an affine map between two CVs. A nonlinear autoencoder fixes its latent
    space only up to a smooth reparametrisation, and eABF along ξ or along f(ξ), f invertible, pushes
    the system over the same regions. ``knn_regscore`` is 1 when each CV is a (locally
    Lipschitz) function of the other; it stays below 1 when one CV separates frames the other
    lumps together, as when a new CV has learned a basin that the previous one mapped onto known
    values. On vacuum alanine dipeptide (2-D CVs, 75,000 frames of one FEBILAE iteration) four
    autoencoders trained on the same frames from different seeds scored regscores of 0.83-0.996
    against each other and kNN R² of 0.988-0.999, while the CV of an unbiased C7eq run scored
    0.956 against the CV learned from the first C7ax visits.

    Parameters
    ----------
    a, b : array_like, shape (n_frames,) or (n_frames, n_cv)
        Two CVs on the same frames, on comparable scales (e.g. each standardised), since the
        neighbours are Euclidean.
    lengths : sequence of int, optional
        Frames per trajectory (see :func:`knn_score`); default one trajectory.
    n_neighbors : int, default 10
    seed : int, default 0
        Seed of the held-out blocks.
    weights : array_like, shape (n_frames,), optional
        Frame weights of the held-out R² (see :func:`knn_score`); uniform when None.

    Returns
    -------
    float
        ``min(knn_score(a, b), knn_score(b, a))``, held-out R² in (-inf, 1].
    """
    x, y = _paired(a, b)
    return min(
        float(knn_score(x, y, lengths=lengths, n_neighbors=n_neighbors, seed=seed, weights=weights)),
        float(knn_score(y, x, lengths=lengths, n_neighbors=n_neighbors, seed=seed, weights=weights)),
    )
