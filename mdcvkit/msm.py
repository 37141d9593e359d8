"""Markov-state-model validation of collective variables, through deeptime.

A CV is useful for kinetics when a Markov state model (MSM) built on a fine
discretisation of it reproduces the slow dynamics: its implied timescales do
not depend on the lag time beyond a modest lag, and it passes the
Chapman–Kolmogorov (CK) test. This module runs both checks on any CV time
series — ``AutoencoderCV.results.cv``, a numpy array, or a list of them — with
deeptime doing the work (k-means clustering, effective transition counts,
maximum-likelihood and Bayesian reversible MSMs, PCCA+), and returns xarray
Datasets in physical time (ps).

What this module adds around deeptime is what a CV user needs: several
trajectories kept apart (the ``trajectory`` coordinate of ``results.cv``), the
frame time step read from the ``time`` coordinate, seeded Bayesian sampling,
the largest connected set with a warning that says what was dropped, the
intervals of the Bayesian posterior, and a verdict of the CK test per entry.

References
----------
.. [1] Prinz, J.-H. et al. "Markov models of molecular kinetics: Generation
   and validation." J. Chem. Phys. 134, 174105 (2011).
.. [2] Trendelkamp-Schroer, B., Wu, H., Paul, F. & Noé, F. "Estimation and
   uncertainty of reversible Markov models." J. Chem. Phys. 143, 174101 (2015).
.. [3] Röblitz, S. & Weber, M. "Fuzzy spectral clustering by PCCA+."
   Adv. Data Anal. Classif. 7, 147–179 (2013).
.. [4] Hoffmann, M. et al. "Deeptime: a Python library for machine learning
   dynamical models from time series data." Mach. Learn.: Sci. Technol. 3,
   015009 (2022).
"""

import logging
import numbers
import warnings

import numpy as np
import xarray as xr
from deeptime.clustering import KMeans
from deeptime.markov import TransitionCountEstimator
from deeptime.markov._observables import MembershipsObservable
from deeptime.markov.msm import BayesianMSM, MarkovStateModel
from deeptime.markov.tools.estimation.dense.tmat_sampling.tmatrix_sampler import TransitionMatrixSampler
from deeptime.util.stats import confidence_interval
from deeptime.util.validation import ck_test as _deeptime_ck_test
from deeptime.util.validation import implied_timescales as _deeptime_implied_timescales

__all__ = ["implied_timescales", "ck_test", "MSMValidation"]

logger = logging.getLogger(__name__)

_MAX_SEED = 2**32 - 1


# ---------------------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------------------
def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive_int(value, name, minimum=1, fix=""):
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}{'; ' + fix if fix else ''}")
    return int(value)


def _check_seed(seed):
    if not _is_int(seed) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed={seed!r} must be an integer between 0 and 2**32 - 1; pass e.g. seed=0")
    return int(seed)


def _check_dt(dt):
    if dt is None:
        return None
    if not isinstance(dt, numbers.Real) or isinstance(dt, bool) or not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt={dt!r} must be a positive number of ps per frame, or None to read it from the "
                         "'time' coordinate of a DataArray")
    return float(dt)


def _check_conf(conf):
    if not isinstance(conf, numbers.Real) or not 0 < conf < 1:
        raise ValueError(f"conf={conf!r} must be a probability between 0 and 1 (exclusive); "
                         "pass e.g. conf=0.95")
    return float(conf)


def _check_lags(lags, n_shortest, which_shortest, name="lags"):
    """Return ``lags`` as a sorted array of unique positive integers below the shortest trajectory."""
    values = np.atleast_1d(np.asarray(lags))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name}={lags!r} must be a positive integer or a non-empty 1-D sequence of them")
    if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name}={lags!r} must be positive integers (numbers of frames), not {values.dtype} "
                         "values; to give lag times t in ps pass np.round(t / dt).astype(int)")
    if np.any(values <= 0):
        raise ValueError(f"{name}={lags!r} must be positive integers (numbers of frames); "
                         f"got {values[values <= 0].tolist()}")
    longest = int(values.max())
    if longest >= n_shortest:
        raise ValueError(f"{name}={lags!r}: lag {longest} is not smaller than the shortest trajectory "
                         f"(trajectory {which_shortest}, {n_shortest} frames); pass lags below {n_shortest} "
                         "or leave out the short trajectory")
    return np.unique(values).astype(int)


# ---------------------------------------------------------------------------------------------------------
# CV time series -> list of (n_frames, n_cv) float arrays, one per trajectory
# ---------------------------------------------------------------------------------------------------------
def _as_frames_by_cv(values, label):
    values = np.asarray(values)
    if values.dtype == object or not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise TypeError(f"{label} has dtype {values.dtype}; pass numbers (a CV time series)")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"{label} has shape {values.shape}; a CV time series must be (n_frames,) or "
                         "(n_frames, n_cv); pass several trajectories as a list")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{label} has shape {values.shape} and holds no data")
    values = np.array(values, dtype=np.float64, order="C")  # a copy: the caller's data are never changed
    bad = ~np.isfinite(values)
    if bad.any():
        frame = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"{label} holds {int(bad.sum())} NaN or infinite values (first at frame {frame}); "
                         "remove those frames, or split the trajectory at them and pass a list")
    return values


def _split_dataarray(data, label):
    """Split a DataArray by its ``trajectory`` coordinate; return arrays, their labels and the inferred dt."""
    frame_dim = "frame" if "frame" in data.dims else data.dims[0]
    if data.ndim == 2:
        data = data.transpose(frame_dim, ...)
    elif data.ndim != 1:
        raise ValueError(f"{label} has dims {data.dims}; pass a DataArray with dims ('frame', 'cv') "
                         "or ('frame',)")
    if "trajectory" in data.coords:
        traj = np.asarray(data.coords["trajectory"].values)
        if traj.shape != (data.sizes[frame_dim],):
            raise ValueError(f"the 'trajectory' coordinate of {label} has shape {traj.shape}; it must run "
                             f"along {frame_dim!r} and give one label per frame")
        _, first = np.unique(traj, return_index=True)
        keys = traj[np.sort(first)].tolist()  # in order of first appearance, as Python scalars
        groups = [(np.flatnonzero(traj == key), f"{label} (trajectory={key!r})") for key in keys]
    else:
        groups = [(np.arange(data.sizes[frame_dim]), label)]
    time = np.asarray(data.coords["time"].values, dtype=float) if "time" in data.coords else None
    arrays, labels, steps = [], [], []
    for index, group_label in groups:
        arrays.append(_as_frames_by_cv(data.values[index], group_label))
        labels.append(group_label)
        if time is not None and len(index) > 1:
            step = np.diff(time[index])
            if np.any(step <= 0):
                before, frame = index[np.argmax(step <= 0)], index[np.argmax(step <= 0) + 1]
                raise ValueError(f"the 'time' coordinate of {group_label} does not increase at frame "
                                 f"{frame} (time {time[before]:g} -> {time[frame]:g} ps): it seems to join "
                                 "several trajectories; give it a 'trajectory' coordinate or pass a list "
                                 "with one array per trajectory")
            steps.append(step)
    dt = None
    if steps:
        step = np.concatenate(steps)
        dt = float(np.median(step))
        if not np.allclose(step, dt, rtol=1e-3, atol=0):
            dt = np.nan  # uneven spacing: the caller must pass dt
    return arrays, labels, dt


def _trajectories(trajs, dt):
    """Return (list of float64 arrays (n_frames_i, n_cv), their labels, dt in ps per frame or None)."""
    if isinstance(trajs, (list, tuple)):
        if len(trajs) == 0:
            raise ValueError("trajs=[] holds no trajectory; pass a CV time series or a list of them")
        if all(isinstance(item, numbers.Number) for item in trajs):
            items = [np.asarray(trajs)]  # a bare list of numbers is one 1-D trajectory
        else:
            items = list(trajs)
    else:
        items = [trajs]
    arrays, labels, inferred = [], [], []
    for i, item in enumerate(items):
        label = "trajs" if len(items) == 1 else f"trajs[{i}]"
        if isinstance(item, xr.DataArray):
            item_arrays, item_labels, item_dt = _split_dataarray(item, label)
            arrays += item_arrays
            labels += item_labels
            if item_dt is not None:
                inferred.append(item_dt)
        elif isinstance(item, (np.ndarray, list, tuple)) or hasattr(item, "__array__"):
            arrays.append(_as_frames_by_cv(item, label))
            labels.append(label)
        else:
            raise TypeError(f"{label} is a {type(item).__name__}; pass an xarray.DataArray (results.cv), "
                            "a numpy array (n_frames,) or (n_frames, n_cv), or a list of those")
    n_cv = {a.shape[1] for a in arrays}
    if len(n_cv) > 1:
        raise ValueError(f"the trajectories have different numbers of CVs {sorted(n_cv)}; pass trajectories "
                         "of the same CV")
    dt = _check_dt(dt)
    if dt is None and inferred:
        if any(np.isnan(v) for v in inferred) or not np.allclose(inferred, inferred[0], rtol=1e-3, atol=0):
            raise ValueError("dt=None but the 'time' coordinates are not evenly spaced (or differ between "
                             "trajectories); pass dt, the time between consecutive frames in ps")
        dt = float(inferred[0])
    return arrays, labels, dt


# ---------------------------------------------------------------------------------------------------------
# deeptime steps
# ---------------------------------------------------------------------------------------------------------
class _SeededBayesianMSM(BayesianMSM):
    """deeptime's reversible ``BayesianMSM`` whose transition-matrix sampler takes a seed.

    ``BayesianMSM.sample`` builds its sampler without a seed (deeptime 0.4.5), so two
    runs give different posterior samples; this subclass passes ``seed`` on and changes
    nothing else.
    """

    def __init__(self, n_samples, seed):
        super().__init__(n_samples=n_samples, reversible=True)
        self.seed = seed

    def sample(self, prior, n_samples, n_steps=None, callback=None):
        if n_steps is None:
            n_steps = int(np.sqrt(prior.count_model.n_states_full))  # deeptime's heuristic
        sampler = TransitionMatrixSampler(np.asarray(prior.count_model.count_matrix, dtype=float),
                                          reversible=True, P0=prior.transition_matrix, n_steps=n_steps,
                                          seed=self.seed)
        matrices, stationary = sampler.sample(nsamples=n_samples, return_statdist=True, callback=callback)
        if n_samples == 1:
            matrices, stationary = matrices[None], stationary[None]
        return [MarkovStateModel(P, stationary_distribution=pi, reversible=True,
                                 count_model=prior.count_model,
                                 transition_matrix_tolerance=prior.transition_matrix_tolerance)
                for P, pi in zip(matrices, stationary, strict=True)]


def _discretize(arrays, n_clusters, seed):
    """k-means (deeptime, k-means++ seeded, one thread so that it is reproducible) on all frames together."""
    n_frames = sum(len(a) for a in arrays)
    if n_clusters > n_frames:
        raise ValueError(f"n_clusters={n_clusters} is larger than the number of frames ({n_frames}); pass "
                         f"n_clusters <= {n_frames} (in practice a few hundred frames per cluster)")
    model = KMeans(n_clusters, fixed_seed=seed, n_jobs=1).fit_fetch(np.concatenate(arrays))
    dtrajs = [model.transform(a).astype(np.int32) for a in arrays]
    return model.cluster_centers, dtrajs


def _count_model(dtrajs, lag, n_clusters, restrict_to=None):
    """Effective transition counts at ``lag``, restricted to their largest connected set.

    Returns the count model and the number of clusters it leaves out.
    """
    estimator = TransitionCountEstimator(lagtime=int(lag), count_mode="effective", n_states=n_clusters)
    counts = estimator.fit_fetch(dtrajs)
    if restrict_to is not None:
        counts = counts.submodel(np.asarray(restrict_to))
    largest = counts.submodel_largest()
    if largest.n_states < 2:
        raise ValueError(f"at lag={lag} no two clusters are connected by transitions in both directions "
                         "(the largest connected set has 1 state): the trajectories do not come back to the "
                         "clusters they leave; pass fewer clusters (n_clusters), a shorter lag, or longer "
                         "trajectories")
    return largest, n_clusters - largest.n_states


def _warn_dropped(dropped, n_clusters, dtrajs, stacklevel):
    """One warning for all lags at which clusters fell outside the largest connected set."""
    dropped = {lag: (n, kept) for lag, (n, kept) in dropped.items() if n > 0}
    if not dropped:
        return
    histogram = np.bincount(np.concatenate(dtrajs), minlength=n_clusters)
    parts = []
    for lag, (n, kept) in dropped.items():
        frames = 1 - histogram[kept].sum() / histogram.sum()
        parts.append(f"lag={lag}: {n} of {n_clusters} states dropped ({frames:.1%} of frames)")
    warnings.warn("the transition count matrix is not connected; the MSM uses its largest connected set "
                  f"({'; '.join(parts)}). More data, fewer clusters or a shorter lag connect it",
                  UserWarning, stacklevel=stacklevel)


def _bayesian(count_model, n_samples, seed):
    return _SeededBayesianMSM(n_samples, seed).fit(count_model).fetch_model()


def _sub_seeds(seed, n):
    """``n`` seeds for the transition-matrix samplers, drawn from ``seed``."""
    return np.random.default_rng(seed).integers(0, 2**31 - 1, size=n).tolist()


def _interval(samples, conf):
    """Element-wise interval (deeptime's ``confidence_interval``) of samples (n_samples, ...), NaN ignored."""
    flat = samples.reshape(len(samples), -1)
    lower, upper = confidence_interval(flat, conf=conf, remove_nans=True)
    return np.reshape(lower, samples.shape[1:]), np.reshape(upper, samples.shape[1:])


def _time_coord(steps, dt):
    units = "ps" if dt is not None else "frames"
    values = np.asarray(steps, dtype=float) * (dt if dt is not None else 1.0)
    return values, units


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
            "conf": conf,
            "seed": seed,
            "count_mode": "effective",
            "estimator": "deeptime BayesianMSM (reversible); timescales from its maximum-likelihood prior",
        },
    )


def implied_timescales(trajs, lags, n_clusters=100, n_timescales=5, dt=None, n_samples=100, seed=0, *,
                       conf=0.95):
    r"""Implied timescales of Bayesian MSMs on a k-means discretisation of a CV, over a range of lags.

    The CV space is clustered once (k-means++, seeded); at each lag τ deeptime counts
    transitions (effective counting, which keeps the Bayesian intervals honest), keeps the
    largest connected set, and samples reversible transition matrices from their
    posterior [2]_. The implied timescale of process *i* is :math:`t_i(τ) = -τ / \ln|λ_i(τ)|`;
    for a good CV and discretisation they become independent of τ beyond a modest lag [1]_.

    Parameters
    ----------
    trajs : xarray.DataArray, numpy.ndarray or list of them
        CV time series: a DataArray such as ``AutoencoderCV.results.cv`` (dims ``("frame", "cv")``
        or ``("frame",)``; a ``trajectory`` coordinate splits it into separate trajectories and a
        ``time`` coordinate in ps gives ``dt``), an array of shape (n_frames,) or
        (n_frames, n_cv), or a list of those for several trajectories. Frames of different
        trajectories are never joined by a transition. The input is not modified.
    lags : int or sequence of int
        Lag times in frames, each ≥ 1 and smaller than the shortest trajectory. They are sorted
        and duplicates removed.
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
    conf : float, default 0.95
        Probability mass of the intervals ``lower``–``upper`` (deeptime's ``confidence_interval``).

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
    n_clusters = _check_positive_int(n_clusters, "n_clusters", minimum=2)
    n_timescales = _check_positive_int(n_timescales, "n_timescales")
    if n_timescales >= n_clusters:
        raise ValueError(f"n_timescales={n_timescales} must be smaller than n_clusters={n_clusters} "
                         f"(an MSM of n states has n - 1 timescales); pass n_timescales <= {n_clusters - 1}")
    n_samples = _check_positive_int(n_samples, "n_samples", minimum=2)
    seed = _check_seed(seed)
    conf = _check_conf(conf)
    centers, dtrajs = _discretize(arrays, n_clusters, seed)
    return _its_dataset(dtrajs, centers, lags, n_timescales, n_samples, dt, seed, conf, stacklevel=3)


# ---------------------------------------------------------------------------------------------------------
# Chapman-Kolmogorov test
# ---------------------------------------------------------------------------------------------------------
def _memberships(prior, n_sets, n_clusters, lag):
    """Memberships (n_active, n_sets) and crisp set of each cluster (-1 outside the active set)."""
    n_active = prior.n_states
    symbols = prior.count_model.state_symbols
    assignment = np.full(n_clusters, -1)
    if _is_int(n_sets):
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
            "conf": conf,
            "seed": seed,
            "count_mode": "effective",
        },
    )


def ck_test(trajs, lag, n_sets, mlags=10, n_clusters=100, n_samples=100, seed=0, *, dt=None, conf=0.95):
    r"""Chapman–Kolmogorov test of a Bayesian MSM on a k-means discretisation of a CV.

    The MSM estimated at ``lag`` predicts the probability to be in metastable set *j* at
    time kτ after starting in set *i* (from the stationary distribution within *i*),
    :math:`p_{ij}(kτ) = [P(τ)^k]_{ij}`; the MSMs estimated directly at lag kτ give the
    estimate. A Markovian CV and discretisation give predictions that match the
    estimates [1]_. Sets come from PCCA+ [3]_ on the MSM at ``lag``, or are given.

    Parameters
    ----------
    trajs : xarray.DataArray, numpy.ndarray or list of them
        CV time series, as in :func:`implied_timescales` (several trajectories stay separate).
    lag : int
        Lag time of the tested MSM in frames; ``mlags * lag`` must be smaller than the
        shortest trajectory.
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
    conf : float, default 0.95
        Probability mass of the intervals.

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
        - ``overlap`` (bool): whether the predicted and estimated intervals overlap, a
          looser verdict that also allows for the uncertainty of the estimate (which
          grows with ``mlag``, while the predicted interval of a long trajectory is narrow);
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
    """
    arrays, _, dt = _trajectories(trajs, dt)
    lengths = [len(a) for a in arrays]
    lag = _check_positive_int(lag, "lag", fix="pass the lag in frames")
    mlags = _check_positive_int(mlags, "mlags")
    _check_lags(lag * mlags, min(lengths), int(np.argmin(lengths)), name="lag * mlags")
    n_clusters = _check_positive_int(n_clusters, "n_clusters", minimum=2)
    n_samples = _check_positive_int(n_samples, "n_samples", minimum=2)
    seed = _check_seed(seed)
    conf = _check_conf(conf)
    if not _is_int(n_sets) and np.ndim(n_sets) == 0:
        raise ValueError(f"n_sets={n_sets!r} must be an integer number of sets or an array of cluster->set "
                         "assignments")
    centers, dtrajs = _discretize(arrays, n_clusters, seed)
    return _ck_dataset(dtrajs, centers, lag, n_sets, mlags, n_samples, dt, seed, conf, stacklevel=3)


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
    mlags, n_clusters, n_timescales, n_samples, seed, conf
        As in :func:`implied_timescales` and :func:`ck_test`.

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
                 n_clusters=100, n_timescales=5, n_samples=100, seed=0, conf=0.95):
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
        self.conf = conf
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
        n_clusters = _check_positive_int(self.n_clusters, "n_clusters", minimum=2)
        n_timescales = _check_positive_int(self.n_timescales, "n_timescales")
        if n_timescales >= n_clusters:
            raise ValueError(f"n_timescales={n_timescales} must be smaller than n_clusters={n_clusters}")
        n_samples = _check_positive_int(self.n_samples, "n_samples", minimum=2)
        mlags = _check_positive_int(self.mlags, "mlags")
        seed = _check_seed(self.seed)
        conf = _check_conf(self.conf)

        if verbose:
            logger.info("clustering %d frames into %d clusters", sum(lengths), n_clusters)
        centers, dtrajs = _discretize(arrays, n_clusters, seed)
        if verbose:
            logger.info("implied timescales at lags %s", lags.tolist())
        its = _its_dataset(dtrajs, centers, lags, n_timescales, n_samples, dt, seed, conf, stacklevel=3)
        lag = _flat_lag(its) if self.lag is None else _check_positive_int(self.lag, "lag")
        _check_lags(lag * mlags, shortest, int(np.argmin(lengths)), name="lag * mlags")
        if verbose:
            logger.info("Chapman-Kolmogorov test at lag %d, %d multiples", lag, mlags)
        ck = _ck_dataset(dtrajs, centers, lag, self.n_sets, mlags, n_samples, dt, seed, conf, stacklevel=3)

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
