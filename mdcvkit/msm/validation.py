"""Implied timescales and Chapman–Kolmogorov test of a fitted CV in one call (see :mod:`mdcvkit.msm`)."""

import logging
import warnings

import numpy as np
import xarray as xr

from .._checks import check_int, check_seed
from ._estimation import _discretize
from ._inputs import _check_conf, _check_lags, _trajectories
from .ck import _ck_dataset
from .timescales import _its_dataset

__all__ = ["MSMValidation"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# one call for a fitted CV
# ---------------------------------------------------------------------------------------------------------
def _flat_lag(its, rtol=0.2):
    """Smallest lag from which the slowest ML timescale stays within ``rtol`` of its value there."""
    slowest = its.timescales.isel(process=0).values
    lags = its.lag.values
    for i, value in enumerate(slowest):
        later = slowest[i:]
        if np.isfinite(value) and np.all(np.abs(later - value) <= rtol * value):
            return int(lags[i])
    return int(lags[-1])


class MSMValidation:
    r"""Implied timescales and Chapman–Kolmogorov test of a fitted CV on a trajectory, in one call.

    The CV is evaluated on ``atomgroup`` (``cv.transform``), clustered once, and the same
    discretisation serves both :func:`implied_timescales` and :func:`ck_test`.

    Parameters
    ----------
    cv : AutoencoderCV
        A fitted CV: any object with ``transform(atomgroup, start=, stop=, step=)`` returning a
        DataArray like ``results.cv`` (dims ``("frame", "cv")``, coordinates ``time`` in ps and
        ``trajectory``).
    atomgroup : MDAnalysis.core.groups.AtomGroup
        The atoms the CV was trained on, in the Universe whose trajectory is analysed.
    lags : sequence of int, default (1, 2, 5, 10, 20, 50, 100)
        Lags in frames for the implied timescales; those not smaller than the shortest
        trajectory are left out.
    lag : int, optional
        Lag in frames of the CK test. By default the smallest lag in ``lags`` from which the
        slowest maximum-likelihood timescale stays within 20 % of its value there (a heuristic:
        look at the implied-timescale plot and pass ``lag``).
    n_sets : int or array_like of int, default 2
        Metastable sets for the CK test (see :func:`ck_test`).
    mlags, n_clusters, n_timescales, n_samples, seed, confidence
        As in :func:`implied_timescales` and :func:`ck_test`.
    conf : float, optional
        Deprecated name of ``confidence`` (DeprecationWarning).

    Attributes
    ----------
    results.cv : xarray.DataArray
        The CV time series analysed, (n_frames, n_cv).
    results.implied_timescales : xarray.Dataset
        See :func:`implied_timescales`.
    results.ck_test : xarray.Dataset
        See :func:`ck_test`.
    results.discretization : xarray.Dataset
        ``centers`` (cluster, cv) and ``assignments`` (frame) — the cluster of each frame, with
        the frame coordinates of ``results.cv``.
    results.lag : int
        The lag of the CK test, in frames.

    Examples
    --------
    >>> u = mk.datasets.alanine_dipeptide()                            # doctest: +SKIP
    >>> heavy = u.select_atoms("not name H*")                          # doctest: +SKIP
    >>> cv = mk.AutoencoderCV(heavy, n_cv=2, seed=0).run()             # doctest: +SKIP
    >>> val = mk.msm.MSMValidation(cv, heavy, n_sets=3).run()          # doctest: +SKIP
    >>> mk.plot.implied_timescales(val.results.implied_timescales)     # doctest: +SKIP
    """

    def __init__(self, cv, atomgroup, *, lags=(1, 2, 5, 10, 20, 50, 100), lag=None, n_sets=2, mlags=10,
                 n_clusters=100, n_timescales=5, n_samples=100, seed=0, confidence=0.95, conf=None):
        if not callable(getattr(cv, "transform", None)):
            raise TypeError(f"cv is a {type(cv).__name__} without a transform() method; pass a fitted "
                            "mdcvkit.AutoencoderCV (call run() first)")
        self.cv = cv
        self.atomgroup = atomgroup
        self.lags = lags
        self.lag = lag
        self.n_sets = n_sets
        self.mlags = mlags
        self.n_clusters = n_clusters
        self.n_timescales = n_timescales
        self.n_samples = n_samples
        self.seed = seed
        self.confidence = _check_conf(confidence, conf)
        self.results = None

    def run(self, start=None, stop=None, step=None, verbose=False):
        """Evaluate the CV on the trajectory and run both validations.

        Parameters
        ----------
        start, stop, step : int, optional
            Frames of the trajectory to use, as in MDAnalysis ``run``; ``step`` multiplies the
            time between frames (lags stay in frames of the strided series).
        verbose : bool, default False
            Log progress at INFO level.

        Returns
        -------
        self : MSMValidation
        """
        from MDAnalysis.analysis.base import Results

        data = self.cv.transform(self.atomgroup, start=start, stop=stop, step=step)
        arrays, _, dt = _trajectories(data, None)
        lengths = [len(a) for a in arrays]
        shortest = min(lengths)
        lags = np.atleast_1d(np.asarray(self.lags))
        if lags.dtype != bool and np.issubdtype(lags.dtype, np.integer):
            lags = lags[lags < shortest]
            if lags.size == 0:
                raise ValueError(f"lags={self.lags!r}: no lag is smaller than the shortest trajectory "
                                 f"({shortest} frames); pass smaller lags or more frames")
        lags = _check_lags(lags, shortest, int(np.argmin(lengths)))
        n_clusters = check_int(self.n_clusters, "n_clusters", minimum=2)
        n_timescales = check_int(self.n_timescales, "n_timescales")
        if n_timescales >= n_clusters:
            raise ValueError(f"n_timescales={n_timescales} must be smaller than n_clusters={n_clusters}")
        n_samples = check_int(self.n_samples, "n_samples", minimum=2)
        mlags = check_int(self.mlags, "mlags")
        seed = check_seed(self.seed)
        conf = _check_conf(self.confidence)

        if verbose:
            logger.info("clustering %d frames into %d clusters", sum(lengths), n_clusters)
        centers, dtrajs = _discretize(arrays, n_clusters, seed)
        if verbose:
            logger.info("implied timescales at lags %s", lags.tolist())
        its = _its_dataset(dtrajs, centers, lags, n_timescales, n_samples, dt, seed, conf, stacklevel=3)
        lag = _flat_lag(its) if self.lag is None else check_int(self.lag, "lag")
        if self.lag is None and len(lags) > 1 and lag == int(its.lag.values[-1]):
            warnings.warn(
                f"the slowest implied timescale has not levelled off within 20 % over lags {lags.tolist()}: the "
                f"chosen lag={lag} (the longest) is not validated by the timescales; add longer lags, or look at "
                "the implied-timescale plot and pass lag=", UserWarning, stacklevel=2)
        _check_lags(lag * mlags, shortest, int(np.argmin(lengths)), name="lag * mlags")
        if verbose:
            logger.info("Chapman-Kolmogorov test at lag %d, %d multiples", lag, mlags)
        ck = _ck_dataset(dtrajs, centers, lag, self.n_sets, mlags, n_samples, dt, seed, conf, stacklevel=3)
        failed = int((~ck["passed"].values.astype(bool)).sum())
        if failed:
            warnings.warn(
                f"the Chapman-Kolmogorov test at lag={lag} fails for {failed} of {ck['passed'].size} set-to-set "
                f"probabilities (estimate outside the {100 * conf:g} % prediction interval): an MSM at this lag "
                "does not reproduce the CV's kinetics; try a longer lag, more clusters or another CV",
                UserWarning, stacklevel=2)

        frame_dim = "frame" if "frame" in data.dims else data.dims[0]
        assignments = xr.DataArray(
            _assignments_in_frame_order(data, frame_dim, dtrajs), dims=(frame_dim,),
            coords={name: coord for name, coord in data.coords.items() if coord.dims == (frame_dim,)},
            attrs={"long_name": "k-means cluster", "units": ""})
        results = Results()
        results.cv = data
        results.implied_timescales = its
        results.ck_test = ck
        results.discretization = xr.Dataset(
            {"centers": (("cluster", "cv"), centers, {"long_name": "k-means cluster centres", "units": ""}),
             "assignments": assignments},
            attrs={"long_name": "k-means discretisation of the CV", "n_clusters": n_clusters, "seed": seed})
        results.lag = int(lag)
        self.results = results
        return self


def _assignments_in_frame_order(data, frame_dim, dtrajs):
    """Put the per-trajectory cluster indices back in the frame order of ``data``."""
    out = np.empty(data.sizes[frame_dim], dtype=np.int32)
    if "trajectory" in data.coords:
        traj = np.asarray(data.coords["trajectory"].values)
        _, first = np.unique(traj, return_index=True)
        for key, dtraj in zip(traj[np.sort(first)], dtrajs, strict=True):
            out[traj == key] = dtraj
    else:
        out[:] = dtrajs[0]
    return out
