"""deeptime steps of :mod:`mdcvkit.msm`: k-means, effective counts, seeded Bayesian MSMs, intervals.

Private helpers shared by :mod:`~mdcvkit.msm.timescales`, :mod:`~mdcvkit.msm.ck` and
:mod:`~mdcvkit.msm.validation`; nothing here is public API.
"""

import warnings

import numpy as np
from deeptime.clustering import KMeans
from deeptime.markov import TransitionCountEstimator
from deeptime.markov.msm import BayesianMSM, MarkovStateModel
from deeptime.markov.tools.estimation.dense.tmat_sampling.tmatrix_sampler import TransitionMatrixSampler
from deeptime.util.stats import confidence_interval

__all__ = [
    "_SeededBayesianMSM", "_discretize", "_count_model", "_warn_dropped", "_bayesian", "_sub_seeds",
    "_interval", "_time_coord",
]


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
