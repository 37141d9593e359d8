"""Implied timescales of Bayesian MSMs on a k-means discretisation of a CV (see :mod:`mdcvkit.msm`)."""

import warnings

import numpy as np
import xarray as xr
from deeptime.util.validation import implied_timescales as _deeptime_implied_timescales

from .._checks import check_int, check_seed
from ._estimation import _bayesian, _count_model, _discretize, _interval, _sub_seeds, _time_coord, _warn_dropped
from ._inputs import _check_conf, _check_lags, _trajectories

__all__ = ["implied_timescales"]


# ---------------------------------------------------------------------------------------------------------
# implied timescales
# ---------------------------------------------------------------------------------------------------------
def _its_dataset(dtrajs, centers, lags, n_timescales, n_samples, dt, seed, conf, stacklevel):
    n_clusters = len(centers)
    posteriors, dropped = [], {}
    for lag, sub_seed in zip(lags, _sub_seeds(seed, len(lags)), strict=True):
        counts, n_dropped = _count_model(dtrajs, lag, n_clusters)
        dropped[int(lag)] = (n_dropped, counts.state_symbols)
        posteriors.append(_bayesian(counts, n_samples, sub_seed))
    _warn_dropped(dropped, n_clusters, dtrajs, stacklevel + 1)

    its = _deeptime_implied_timescales(posteriors, n_its=n_timescales)
    ml = np.full((len(lags), n_timescales), np.nan)
    samples = np.full((len(lags), n_timescales, n_samples), np.nan)
    n = min(n_timescales, its.max_n_processes)
    for process in range(n):
        ml[:, process] = its.timescales_for_process(process)
        samples[:, process, :] = its.samples_for_process(process)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns where a lag has too few states
        mean = np.nanmean(samples, axis=-1)
    lower, upper = _interval(np.moveaxis(samples, -1, 0), conf)

    scale = dt if dt is not None else 1.0
    lag_time, units = _time_coord(lags, dt)

    def variable(values, long_name):
        return (("lag", "process"), values * scale, {"long_name": long_name, "units": units})

    percent = f"{100 * conf:g} %"
    return xr.Dataset(
        data_vars={
            "timescales": variable(ml, "implied timescale"),
            "mean": variable(mean, "implied timescale, posterior mean"),
            "lower": variable(lower, f"implied timescale, lower bound of the {percent} interval"),
            "upper": variable(upper, f"implied timescale, upper bound of the {percent} interval"),
            "n_states": ("lag", [n_clusters - dropped[int(lag)][0] for lag in lags],
                         {"long_name": "states in the largest connected set", "units": ""}),
            "centers": (("cluster", "cv"), centers, {"long_name": "k-means cluster centres", "units": ""}),
        },
        coords={
            "lag": ("lag", lags, {"long_name": "lag", "units": "frames"}),
            "lag_time": ("lag", lag_time, {"long_name": "lag time", "units": units}),
            "process": ("process", np.arange(1, n_timescales + 1), {"long_name": "process", "units": ""}),
        },
        attrs={
            "long_name": "implied timescales",
            "units": units,
            "time_units": units,
            "dt": dt if dt is not None else np.nan,
            "n_clusters": n_clusters,
            "n_samples": n_samples,
            "confidence": conf,
            "seed": seed,
            "count_mode": "effective",
            "estimator": "deeptime BayesianMSM (reversible); timescales from its maximum-likelihood prior",
        },
    )


def implied_timescales(trajs, lags, n_clusters=100, n_timescales=5, dt=None, n_samples=100, seed=0, *,
                       confidence=0.95, conf=None):
    r"""Implied timescales of Bayesian MSMs on a k-means discretisation of a CV, over a range of lags.

    The CV space is clustered once (k-means++, seeded); at each lag τ deeptime counts
    transitions (effective counting, which keeps the Bayesian intervals honest), keeps the
    largest connected set, and samples reversible transition matrices from their
    posterior [1]_. The implied timescale of process *i* is :math:`t_i(τ) = -τ / \ln|λ_i(τ)|`;
    for a good CV and discretisation they become independent of τ beyond a modest lag [2]_.

    Parameters
    ----------
    trajs : xarray.DataArray, numpy.ndarray or list of them
        CV time series: a DataArray such as ``AutoencoderCV.results.cv`` (dims ``("frame", "cv")``
        or ``("frame",)``; a ``trajectory`` coordinate splits it into separate trajectories and a
        ``time`` coordinate in ps gives ``dt``), an array of shape (n_frames,) or
        (n_frames, n_cv), or a list of those for several trajectories. Frames of different
        trajectories are never joined by a transition. The input is not modified.
    lags : int or sequence of int
        Lag times in frames, each ≥ 1 and below the shortest trajectory (sorted, made unique).
    n_clusters : int, default 100
        Number of k-means clusters (MSM states); at most the number of frames.
    n_timescales : int, default 5
        Number of slowest processes to report; smaller than ``n_clusters``. Processes beyond the
        number of connected states at a lag are NaN.
    dt : float, optional
        Time between consecutive frames in ps. By default read from the ``time`` coordinate of
        a DataArray; without either, times are in frames (``units`` "frames").
    n_samples : int, default 100
        Number of transition matrices sampled from the posterior at each lag (≥ 2).
    seed : int, default 0
        Seeds k-means++ and the transition-matrix samplers; the same seed gives the same result.
    confidence : float, default 0.95
        Probability mass of the intervals ``lower``–``upper`` (deeptime's ``confidence_interval``).
    conf : float, optional
        Deprecated name of ``confidence`` (the name of :func:`mdcvkit.metrics.compare_ensembles`).

    Returns
    -------
    xarray.Dataset
        Dims ``lag`` (n_lags) and ``process`` (n_timescales), coordinates ``lag`` (frames),
        ``lag_time`` (ps) and ``process`` (1 = slowest). Variables, in ps (or frames):

        - ``timescales`` (lag, process): maximum-likelihood timescales (the prior of deeptime's
          ``BayesianMSM``, i.e. the reversible MLE on the same counts);
        - ``mean``, ``lower``, ``upper`` (lag, process): posterior mean and interval (read the
          mean as ``ds["mean"]``; ``ds.mean`` is the Dataset method);
        - ``n_states`` (lag): states in the largest connected set;
        - ``centers`` (cluster, cv): the cluster centres used.

    Raises
    ------
    ValueError
        For lags that are not positive integers or not smaller than the shortest trajectory,
        fewer frames than clusters, NaN in the CV, or other bad settings; the message names the
        argument and a fix.

    Warns
    -----
    UserWarning
        When the count matrix at some lag is not connected: the MSM then uses the largest
        connected set, and the warning says how many states (and frames) were dropped.

    See Also
    --------
    ck_test, MSMValidation, mdcvkit.plot.implied_timescales

    References
    ----------
    .. [1] Trendelkamp-Schroer, B., Wu, H., Paul, F. & Noé, F. "Estimation and
       uncertainty of reversible Markov models." J. Chem. Phys. 143, 174101 (2015).
    .. [2] Prinz, J.-H. et al. "Markov models of molecular kinetics: Generation
       and validation." J. Chem. Phys. 134, 174105 (2011).

    Examples
    --------
    >>> import numpy as np, mdcvkit as mk
    >>> x = np.cumsum(np.random.default_rng(0).normal(size=2000)) % 3.0   # a toy CV
    >>> its = mk.msm.implied_timescales(x, lags=[1, 2, 5], n_clusters=10, n_samples=10, dt=1.0)
    >>> its.timescales.dims
    ('lag', 'process')
    """
    arrays, _, dt = _trajectories(trajs, dt)
    lengths = [len(a) for a in arrays]
    lags = _check_lags(lags, min(lengths), int(np.argmin(lengths)))
    n_clusters = check_int(n_clusters, "n_clusters", minimum=2)
    n_timescales = check_int(n_timescales, "n_timescales")
    if n_timescales >= n_clusters:
        raise ValueError(f"n_timescales={n_timescales} must be smaller than n_clusters={n_clusters} "
                         f"(an MSM of n states has n - 1 timescales); pass n_timescales <= {n_clusters - 1}")
    n_samples = check_int(n_samples, "n_samples", minimum=2)
    seed = check_seed(seed)
    conf = _check_conf(confidence, conf)
    centers, dtrajs = _discretize(arrays, n_clusters, seed)
    return _its_dataset(dtrajs, centers, lags, n_timescales, n_samples, dt, seed, conf, stacklevel=3)
