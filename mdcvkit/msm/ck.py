"""Chapman–Kolmogorov test of a Bayesian MSM on a k-means discretisation of a CV (see :mod:`mdcvkit.msm`)."""

import numpy as np
import xarray as xr
from deeptime.markov._observables import MembershipsObservable
from deeptime.util.validation import ck_test as _deeptime_ck_test

from .._checks import check_int, check_seed, is_int
from ._estimation import _bayesian, _count_model, _discretize, _interval, _sub_seeds, _time_coord, _warn_dropped
from ._inputs import _check_conf, _check_lags, _trajectories

__all__ = ["ck_test"]


# ---------------------------------------------------------------------------------------------------------
# Chapman-Kolmogorov test
# ---------------------------------------------------------------------------------------------------------
def _memberships(prior, n_sets, n_clusters, lag):
    """Memberships (n_active, n_sets) and crisp set of each cluster (-1 outside the active set)."""
    n_active = prior.n_states
    symbols = prior.count_model.state_symbols
    assignment = np.full(n_clusters, -1)
    if is_int(n_sets):
        if not 2 <= n_sets <= n_active:
            raise ValueError(f"n_sets={n_sets} must be between 2 and the number of connected clusters at "
                             f"lag={lag} ({n_active}); pass fewer sets, or more clusters or data")
        pcca = prior.pcca(int(n_sets))
        assignment[symbols] = pcca.assignments
        return pcca.memberships, assignment
    sets = np.asarray(n_sets)
    if sets.shape != (n_clusters,) or not np.issubdtype(sets.dtype, np.integer):
        raise ValueError(f"n_sets must be an int (number of PCCA+ sets) or integer cluster->set "
                         f"assignments of shape ({n_clusters},); got {n_sets!r}")
    active = sets[symbols]
    if active.min() < 0:
        raise ValueError(f"n_sets assigns a negative set to connected clusters "
                         f"{symbols[active < 0].tolist()}; give every connected cluster a set 0, 1, ...")
    k = int(active.max()) + 1
    empty = sorted(set(range(k)) - set(active.tolist()))
    if k < 2 or empty:
        raise ValueError(f"n_sets assigns the connected clusters to sets {sorted(set(active.tolist()))}; "
                         f"the sets must be 0, 1, ..., k-1 with k >= 2 and none empty (empty: {empty})")
    assignment[symbols] = active
    return np.eye(k)[active], assignment


def _ck_dataset(dtrajs, centers, lag, n_sets, mlags, n_samples, dt, seed, conf, stacklevel):
    n_clusters = len(centers)
    seeds = _sub_seeds(seed, mlags)
    reference_counts, n_dropped = _count_model(dtrajs, lag, n_clusters)
    dropped = {int(lag): (n_dropped, reference_counts.state_symbols)}
    reference = _bayesian(reference_counts, n_samples, seeds[0])
    memberships, assignment = _memberships(reference.prior, n_sets, n_clusters, lag)
    observable = MembershipsObservable(reference, memberships,
                                       initial_distribution=reference.prior.stationary_distribution,
                                       ignore_imaginary_parts=True)
    models = [reference]
    for k in range(2, mlags + 1):
        # models at k * lag live on the reference's connected set, so that predictions and estimates
        # are probabilities of the same sets
        counts, _ = _count_model(dtrajs, k * lag, n_clusters, restrict_to=reference_counts.state_symbols)
        dropped[int(k * lag)] = (n_clusters - counts.n_states, counts.state_symbols)
        models.append(_bayesian(counts, n_samples, seeds[k - 1]))
    _warn_dropped(dropped, n_clusters, dtrajs, stacklevel + 1)

    test = _deeptime_ck_test(models, observable, test_model=reference, include_lag0=True, err_est=False)
    predicted = np.real(test.predictions)
    estimated = np.real(test.estimates)
    predicted_samples = np.real(np.asarray(test.predictions_samples))  # (mlag, sample, set, set)
    # Intervals of the estimates from each model's own posterior samples (deeptime's err_est=True
    # adds an extra identity matrix to every model's sample list in deeptime 0.4.5).
    estimated_samples = np.stack([np.repeat(np.eye(len(predicted[0]))[None], n_samples, axis=0)]
                                 + [np.real([observable(s, mlag=1) for s in m.samples]) for m in models])
    pl, pu = _interval(predicted_samples.transpose(1, 0, 2, 3), conf)
    el, eu = _interval(estimated_samples.transpose(1, 0, 2, 3), conf)
    tol = 1e-10  # round-off at mlag 0, where every interval is [0, 0] or [1, 1]
    passed = (estimated >= pl - tol) & (estimated <= pu + tol)
    overlap = (el <= pu + tol) & (eu >= pl - tol)

    mlag = np.arange(mlags + 1)
    lag_time, units = _time_coord(mlag * lag, dt)
    dims = ("mlag", "from_set", "to_set")
    percent = f"{100 * conf:g} %"

    def variable(values, long_name):
        return (dims, values, {"long_name": long_name, "units": ""})

    set_index = np.arange(len(predicted[0]))
    return xr.Dataset(
        data_vars={
            "predicted": variable(predicted, f"probability predicted by the MSM at lag {lag}"),
            "predicted_lower": variable(pl, f"predicted probability, lower bound of the {percent} interval"),
            "predicted_upper": variable(pu, f"predicted probability, upper bound of the {percent} interval"),
            "estimated": variable(estimated, "probability estimated at mlag * lag"),
            "estimated_lower": variable(el, f"estimated probability, lower bound of the {percent} interval"),
            "estimated_upper": variable(eu, f"estimated probability, upper bound of the {percent} interval"),
            "passed": (dims, passed, {"long_name": "estimate inside the predicted interval", "units": ""}),
            "overlap": (dims, overlap, {"long_name": "predicted and estimated intervals overlap",
                                        "units": ""}),
            "set_assignment": ("cluster", assignment, {"long_name": "metastable set of each cluster "
                                                       "(-1: not connected)", "units": ""}),
            "centers": (("cluster", "cv"), centers, {"long_name": "k-means cluster centres", "units": ""}),
        },
        coords={
            "mlag": ("mlag", mlag, {"long_name": "multiple of the lag", "units": ""}),
            "lag_time": ("mlag", lag_time, {"long_name": "lag time", "units": units}),
            "from_set": ("from_set", set_index, {"long_name": "start set", "units": ""}),
            "to_set": ("to_set", set_index, {"long_name": "end set", "units": ""}),
        },
        attrs={
            "long_name": "Chapman-Kolmogorov test",
            "units": "",
            "time_units": units,
            "lag": int(lag),
            "lag_time": float(lag_time[1]),
            "dt": dt if dt is not None else np.nan,
            "n_clusters": n_clusters,
            "n_states": reference.prior.n_states,
            "n_samples": n_samples,
            "confidence": conf,
            "seed": seed,
            "count_mode": "effective",
        },
    )


def ck_test(trajs, lag, n_sets, mlags=10, n_clusters=100, n_samples=100, seed=0, *, dt=None, confidence=0.95,
            conf=None):
    r"""Chapman–Kolmogorov test of a Bayesian MSM on a k-means discretisation of a CV.

    The MSM estimated at ``lag`` predicts the probability to be in metastable set *j* at
    time kτ after starting in set *i* (from the stationary distribution within *i*),
    :math:`p_{ij}(kτ) = [P(τ)^k]_{ij}`; the MSMs estimated directly at lag kτ give the
    estimate. A Markovian CV and discretisation give predictions that match the
    estimates [1]_. Sets come from PCCA+ [2]_ on the MSM at ``lag``, or are given.

    Parameters
    ----------
    trajs : xarray.DataArray, numpy.ndarray or list of them
        CV time series, as in :func:`implied_timescales` (several trajectories stay separate).
    lag : int
        Lag time of the tested MSM in frames; ``mlags * lag`` must be below the shortest trajectory.
    n_sets : int or array_like of int, shape (n_clusters,)
        Number of metastable sets found by PCCA+ (2 ≤ n_sets ≤ connected clusters), or the set
        (0, 1, ...) of each k-means cluster, e.g. ``set_assignment`` of an earlier result with
        the same ``n_clusters`` and ``seed``.
    mlags : int, default 10
        Largest multiple of the lag tested: multiples 0, 1, ..., ``mlags``.
    n_clusters : int, default 100
        Number of k-means clusters.
    n_samples : int, default 100
        Posterior samples per MSM (≥ 2), for the intervals.
    seed : int, default 0
        Seeds k-means++ and the transition-matrix samplers.
    dt : float, optional
        Time between frames in ps; by default read from the DataArray's ``time`` coordinate.
    confidence : float, default 0.95
        Probability mass of the intervals.
    conf : float, optional
        Deprecated name of ``confidence`` (the name of :func:`mdcvkit.metrics.compare_ensembles`).

    Returns
    -------
    xarray.Dataset
        Dims ``mlag`` (mlags + 1), ``from_set`` and ``to_set`` (n_sets); coordinate
        ``lag_time`` (ps, or frames) along ``mlag``. Variables (probabilities, dimensionless):

        - ``predicted``, ``predicted_lower``, ``predicted_upper``: the MSM at ``lag``
          propagated ``mlag`` times (maximum likelihood and posterior interval);
        - ``estimated``, ``estimated_lower``, ``estimated_upper``: MSMs estimated at
          ``mlag * lag``;
        - ``passed`` (bool): whether ``estimated`` lies inside the predicted interval;
          ``ds.passed.all()`` is the overall verdict;
        - ``overlap`` (bool): whether the predicted and estimated intervals overlap, a looser
          verdict that allows for the estimate's uncertainty (which grows with ``mlag``);
        - ``set_assignment`` (cluster): set of each cluster, -1 outside the connected set;
        - ``centers`` (cluster, cv): cluster centres.

    Raises
    ------
    ValueError
        For a bad ``lag``/``mlags``, ``n_sets`` larger than the number of connected clusters,
        fewer frames than clusters, NaN in the CV, and similar; the message names a fix.

    Warns
    -----
    UserWarning
        When a count matrix is not connected (the largest connected set is used).

    See Also
    --------
    implied_timescales, MSMValidation, mdcvkit.plot.ck_test

    References
    ----------
    .. [1] Prinz, J.-H. et al. "Markov models of molecular kinetics: Generation
       and validation." J. Chem. Phys. 134, 174105 (2011).
    .. [2] Röblitz, S. & Weber, M. "Fuzzy spectral clustering by PCCA+."
       Adv. Data Anal. Classif. 7, 147–179 (2013).

    Examples
    --------
    >>> import numpy as np, mdcvkit as mk
    >>> x = np.cumsum(np.random.default_rng(0).normal(size=2000)) % 3.0   # a toy CV
    >>> ck = mk.msm.ck_test(x, lag=2, n_sets=2, mlags=3, n_clusters=10, n_samples=10, dt=1.0)
    >>> ck.predicted.dims
    ('mlag', 'from_set', 'to_set')
    """
    arrays, _, dt = _trajectories(trajs, dt)
    lengths = [len(a) for a in arrays]
    lag = check_int(lag, "lag", fix="pass the lag in frames")
    mlags = check_int(mlags, "mlags")
    _check_lags(lag * mlags, min(lengths), int(np.argmin(lengths)), name="lag * mlags")
    n_clusters = check_int(n_clusters, "n_clusters", minimum=2)
    n_samples = check_int(n_samples, "n_samples", minimum=2)
    seed = check_seed(seed)
    conf = _check_conf(confidence, conf)
    if not is_int(n_sets) and np.ndim(n_sets) == 0:
        raise ValueError(f"n_sets={n_sets!r} must be an integer number of sets or an array of cluster->set "
                         "assignments")
    centers, dtrajs = _discretize(arrays, n_clusters, seed)
    return _ck_dataset(dtrajs, centers, lag, n_sets, mlags, n_samples, dt, seed, conf, stacklevel=3)
