"""Reweighting of eABF and OPES samples to the unbiased (Boltzmann) density of the positions.

References
----------
Z. Belkacemi, P. Gkeka, T. Lelièvre, G. Stoltz, J. Chem. Theory Comput. 18, 59 (2022) (FEBILAE).
A. Lesage, T. Lelièvre, G. Stoltz, J. Hénin, J. Phys. Chem. B 121, 3676 (2017) (eABF, CZAR).
M. Invernizzi, M. Parrinello, J. Phys. Chem. Lett. 11, 2731 (2020) (OPES).
"""

import numpy as np
from scipy.special import logsumexp

__all__ = ["ESTIMATORS", "eabf_log_weights", "opes_log_weights", "effective_sample_size", "histogram_pmf"]

#: free-energy estimates that :func:`eabf_log_weights` can weight with
ESTIMATORS = ("abf", "czar")


def eabf_log_weights(eabf, estimator="czar"):
    """Log-weights of eABF samples for the unbiased (Boltzmann) density of the positions.

    The eABF bias acts on the positions q only through ξ(q) (the coupling ``κ/2 |ξ(q) - λ|²`` and
    the adaptive bias on λ), so at any stage of the run the density of q, marginal in λ, has the
    form ``π_b(q) ∝ exp(-β V(q)) g_t(ξ(q))``; a mixture over the run keeps that form with some
    ``ḡ``. Its marginal along ξ is ``h(ξ) ∝ exp(-β A(ξ)) ḡ(ξ)``, with ``A`` the free energy along ξ.
    The ratio of the target density ``π(q) ∝ exp(-β V(q))`` to the biased one is therefore

        w_j = π(q_j) / π_b(q_j) ∝ 1 / ḡ(ξ_j) ∝ exp(-β A(ξ_j)) / h(ξ_j),

    with ``h`` the histogram of the sampled ξ on the eABF grid (ξ outside it counts in the nearest
    edge bin) and ``A`` an estimate of the free energy on the same bins. With a converged bias
    ``h`` is nearly flat and ``w_j ∝ exp(-β A(ξ_j))``, FEBILAE's weights (Belkacemi et al. 2022).
    The weights are normalised in log space (``logsumexp``). The total weight of a region of ξ
    is ``Σ exp(-β A)`` over its bins, so it rests on ``A`` alone; the two estimators differ in
    what links regions that the run crossed only a few times:

    * ``"czar"``: the CZAR free energy of the run (``results.pmf``), from samples binned by ξ.
      Its gradient needs samples in a bin and in a neighbour along each axis, and it is
      integrated over the largest connected region of such bins. A basin reached through a thin
      or diagonal trail of bins, or through bins that a fast crossing skipped between two stored
      frames, falls outside that region, and its samples get zero weight (``-inf``).
    * ``"abf"``: the run's own ABF estimate ``Â`` (minus ``results.abf_bias``), the free energy of
      λ, from forces binned by λ. λ moves continuously, so the bins between regions it visited
      are sampled; bins never sampled count with zero gradient, and every sample keeps a weight.
      ``Â`` is ``A`` smoothed over the coupling width ``sqrt(kT/κ)``.

    Measured on vacuum alanine dipeptide from C7eq (``benchmarks/bench_eabf_weights.py``), the
    weight of C7ax (0° < φ < 120°) is 2.2-2.5 % by 1-D eABF along φ (7.5 ns, about 500
    crossings, both estimators). 2-D eABF along (φ, ψ) itself, on 15 × 15 bins:

    * 3 ns (seeds 0-7, 3-11 crossings): 0.6-5.1 % with ``"abf"``, 0.08-3.6 % with ``"czar"``;
      ``"abf"`` was the closer in 6 of the 8 runs;
    * 1 ns, the three runs that crossed once: 0.02-1.6 % with ``"abf"``, 0 % with ``"czar"``;
    * 15 ns (78 and 94 crossings): 0.4-1.2 % with both, too low; on 36 × 36 bins (218 and 235
      crossings) 2.3 % with ``"abf"`` and 1.8-2.1 % with ``"czar"``. A narrow basin needs bins
      finer than itself, and a fine 2-D grid needs long runs to fill: in 3 ns the 36 × 36 runs
      crossed twice and gave 0.05-4.1 % and 0-15 %.

    Parameters
    ----------
    eabf : ExtendedABF
        After :meth:`~mdcvkit.biasing.ExtendedABF.run`.
    estimator : {"czar", "abf"}, default "czar"
        Free-energy estimate ``A`` of the weights (see above).
        :class:`~mdcvkit.biasing.IterativeCVLearning` passes ``Sampling.weights``, default ``"abf"``.

    Returns
    -------
    numpy.ndarray, shape (n_samples,)
        ``log w_j`` (dimensionless) normalised so that ``Σ_j w_j = 1``; ``-inf`` for samples in bins
        where the estimate is undefined (``"czar"`` only: outside the largest connected region of
        sampled bins).

    Raises
    ------
    ValueError
        For an unknown ``estimator``, or when no sample lies in a bin with an estimate.

    References
    ----------
    Z. Belkacemi, P. Gkeka, T. Lelièvre, G. Stoltz, J. Chem. Theory Comput. 18, 59 (2022).
    A. Lesage, T. Lelièvre, G. Stoltz, J. Hénin, J. Phys. Chem. B 121, 3676 (2017).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} must be one of {list(ESTIMATORS)}: 'czar' (CZAR free energy "
                         f"of the run) or 'abf' (the run's own ABF estimate)")  # fmt: skip
    grid = eabf.grid
    xi = eabf.results.samples.xi.values
    eps = 1e-9 * grid.width
    clipped = np.where(grid.periodic, xi, np.clip(xi, grid.lower + eps, grid.upper - eps))
    index = grid.index(clipped)
    histogram = np.bincount(index, minlength=int(np.prod(grid.shape))).astype(float)
    estimate = eabf.results.pmf if estimator == "czar" else -eabf.results.abf_bias
    free = np.asarray(estimate.values, dtype=float).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        log_w = -free[index] / eabf.kT - np.log(histogram[index])
    log_w[~np.isfinite(log_w)] = -np.inf
    if np.all(log_w == -np.inf):
        raise ValueError("no eABF sample lies in a bin with a CZAR estimate; sample longer or pass estimator='abf'")
    return log_w - logsumexp(log_w)


def opes_log_weights(opes):
    """Log-weights of OPES samples for the unbiased (Boltzmann) density of the positions.

    OPES biases the positions q only through ξ(q), with a bias ``V_t`` that changes at each
    deposition; a sample taken at time t is weighted ``w_j ∝ exp(β V_t(ξ_j))``, the bias acting when
    it was taken (``results.samples.bias``), the usual reweighting of OPES (Invernizzi and Parrinello
    2020). OPES normalises its bias by the explored volume, so it is nearly static after a short
    transient, and the reweighting constant c(t) of a changing bias is left out; the weights are
    normalised in log space (``logsumexp``). How close this comes to exact free energies on the toys
    and on alanine dipeptide: findings page ``docs/findings/opes.md``.

    Parameters
    ----------
    opes : OPES
        After :meth:`~mdcvkit.biasing.OPES.run`.

    Returns
    -------
    numpy.ndarray, shape (n_samples,)
        ``log w_j`` (dimensionless) normalised so that ``Σ_j w_j = 1``.

    Raises
    ------
    ValueError
        When the run holds no sample yet.

    References
    ----------
    M. Invernizzi, M. Parrinello, J. Phys. Chem. Lett. 11, 2731 (2020).
    """
    samples = opes.results.get("samples")
    bias = np.zeros(0) if samples is None else np.asarray(samples.bias.values, dtype=float)
    if bias.size == 0:
        raise ValueError("the OPES run holds no sample; call run() with n_steps >= sample_frequency first")
    log_w = bias / opes.kT
    return log_w - logsumexp(log_w)


def histogram_pmf(values, log_w, grid, kT):
    """``-kT ln`` of the weighted histogram of CV ``values`` on ``grid`` (kJ/mol, 0 at its minimum, NaN if empty).

    Parameters
    ----------
    values : array_like, shape (n_samples, n_dim)
        CV values; those outside the grid are left out.
    log_w : array_like, shape (n_samples,) or None
        Log-weights (any normalisation, ``-inf`` for 0); None for uniform weights.
    grid : Grid
    kT : float
        kJ/mol.

    Returns
    -------
    numpy.ndarray, shape ``grid.shape``
    """
    index = grid.index(values)
    weights = np.exp(log_w - np.max(log_w)) if log_w is not None else np.ones(len(index))
    hist = np.bincount(index[index >= 0], weights=weights[index >= 0], minlength=int(np.prod(grid.shape)))
    with np.errstate(divide="ignore", invalid="ignore"):
        pmf = -kT * np.log(hist / hist.sum())
    pmf[~np.isfinite(pmf)] = np.nan
    return (pmf - np.nanmin(pmf)).reshape(grid.shape)


def effective_sample_size(log_weights):
    """Kish effective sample size ``(Σw)² / Σw²`` of log-weights.

    Parameters
    ----------
    log_weights : array_like, shape (n_samples,)
        Natural logarithms of the weights, any normalisation; ``-inf`` for weight zero.

    Returns
    -------
    float
        Between 1 and ``n_samples`` (frames): ``n_samples`` for uniform weights.

    Raises
    ------
    ValueError
        When ``log_weights`` is empty, holds NaN or ``+inf``, or all weights are zero.
    """
    log_w = np.asarray(log_weights, dtype=float).reshape(-1)
    if log_w.size == 0 or np.any(np.isnan(log_w)) or np.any(log_w == np.inf) or np.all(log_w == -np.inf):
        raise ValueError(f"log_weights (shape {log_w.shape}) must hold finite log-weights (-inf for weight 0), at "
                         f"least one finite; pass e.g. the output of eabf_log_weights")  # fmt: skip
    log_w = log_w - logsumexp(log_w)
    return float(np.exp(-logsumexp(2 * log_w)))
