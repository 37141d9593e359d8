"""FEBILAE: learn a CV, bias along it with eABF, reweight, retrain, until the CV stops changing.

References
----------
Z. Belkacemi, P. Gkeka, T. Lelièvre, G. Stoltz, "Chasing collective variables using autoencoders and
biased trajectories", J. Chem. Theory Comput. 18, 59 (2022) (FEBILAE).
A. Lesage, T. Lelièvre, G. Stoltz, J. Hénin, J. Phys. Chem. B 121, 3676 (2017) (eABF, CZAR).
"""

import copy
import logging
import warnings

import numpy as np
import openmm
import torch
import xarray as xr
from MDAnalysis.analysis.base import Results
from scipy.special import logsumexp
from torch import nn

from .._checks import check_int, check_seed, openmm_seed
from .._io import as_path, atomic_path
from ..analysis import CollectiveVariable
from ..features import Featurizer, Positions
from ..metrics import _affine_map, knn_regscore, regscore, regscore_threshold
from ..models import AutoEncoder, FeedForward
from ..training import Trainer
from .boundary import NM_TO_ANGSTROM, _positions_nm
from .descriptors import DescriptorCV, Position, _descriptors_of
from .eabf import MOLAR_GAS_CONSTANT, ExtendedABF, _check_kappa, _temperature_kelvin
from .grid import Grid
from .routes import check_route

__all__ = ["IterativeCVLearning", "eabf_log_weights"]

logger = logging.getLogger(__name__)

#: version of the state-file layout
STATE_VERSION = 6

#: scores that can decide convergence: name -> score(previous CV, new CV) on the same frames
CRITERIA = {"regscore": regscore, "knn": knn_regscore}
#: how the frames of an iteration count in its scores: as in training, or each frame as sampled
SCORE_WEIGHTS = ("training", "uniform")
#: R² of a member's CV mapped onto the first member's below which the average of an ensemble is warned of
MIN_AGREEMENT = 0.8
#: where each criterion's score is kept in an iteration's record (and in ``results.iterations``)
RECORD_KEYS = {"regscore": "regscore", "knn": "knn_regscore"}


class _Coordinates(Featurizer):
    """Chosen Cartesian coordinates of one atom in Å (the toys' raw inputs x1, x2)."""

    def __init__(self, axes=(0, 1), atom=0):
        super().__init__()
        self.axes = [int(a) for a in axes]
        self.atom = int(atom)
        self.n_atoms = self.atom + 1
        self.labels = [f"{self.atom}:{'xyz'[a]}" for a in self.axes]
        self.feature_atoms = [(self.atom,) for _ in self.axes]

    def get_config(self):
        return {"axes": self.axes, "atom": self.atom}

    def forward(self, positions, box=None):
        self.check_positions(positions)
        return positions[:, self.atom, self.axes]


class _ScaledCV(CollectiveVariable):
    """A fitted CV shifted and scaled to zero mean and unit variance on its training frames."""

    def __init__(self, featurizer, model, offset, scale):
        super().__init__(featurizer, model)
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.eval()

    def forward(self, positions, box=None):
        return (super().forward(positions, box) - self.offset) / self.scale

    def descriptor_cv(self):
        """The same CV as a :class:`DescriptorCV` (compiled OpenMM expression), or None if not expressible.

        Expressible: the toys' coordinates, and rotation-invariant features (non-periodic
        :class:`~mdcvkit.features.PairwiseDistances`, :class:`~mdcvkit.features.Dihedrals`, or both
        concatenated); aligned positions are not.
        """
        if not isinstance(self.model.encoder, nn.Sequential):
            return None
        if isinstance(self.featurizer, _Coordinates):
            descriptors = [Position(self.featurizer.atom, a) for a in self.featurizer.axes]
        else:
            try:
                descriptors = _descriptors_of(self.featurizer)
            except ValueError:
                return None
        n_cv = self.model.n_cv
        head = nn.Linear(n_cv, n_cv).double()
        with torch.no_grad():
            head.weight.copy_(torch.diag(1.0 / self.scale.double()))
            head.bias.copy_(-self.offset.double() / self.scale.double())
        norm = self.model.normalization
        encoder = copy.deepcopy(self.model.encoder).double()
        return DescriptorCV(descriptors, nn.Sequential(encoder, head), mean=norm.mean.double().numpy(),
                            std=norm.scale.double().numpy())  # fmt: skip


def _cv_values(cv, positions):
    with torch.no_grad():
        return cv(torch.as_tensor(positions, dtype=torch.float32)).double().numpy()


#: free-energy estimates that eabf_log_weights can weight with
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
        After :meth:`~ExtendedABF.run`.
    estimator : {"czar", "abf"}, default "czar"
        Free-energy estimate ``A`` of the weights (see above). :class:`IterativeCVLearning` passes
        its ``weights``, default ``"abf"``.

    Returns
    -------
    numpy.ndarray, shape (n_samples,)
        ``log w_j`` normalised so that ``Σ_j w_j = 1``; ``-inf`` for samples in bins where the
        estimate is undefined (``"czar"`` only: outside the largest connected region of sampled
        bins).

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


def _averaged_autoencoder(members, features, activation, log_w=None):
    """One autoencoder whose CV is the mean of the members' CVs, each first mapped onto the first member's.

    Autoencoders trained on the same frames from different initial weights find CVs that differ by more than an
    affine map, and their differences are random. Each member's CV is mapped onto the first member's by the
    affine fit weighted as in training (``log_w``, uniform when None), and the mapped CVs are averaged; a
    warning says when a member maps onto the first with R² below ``MIN_AGREEMENT``, as members that found
    different CVs (e.g. folded differently) average into neither. The average is computed exactly by one wider
    feed-forward encoder: the members' hidden layers side by side (block-diagonal weights), the last layer
    holding the affine maps. The decoder is the first member's, whose CV the average is mapped onto.

    Parameters
    ----------
    members : list of AutoEncoder
        Trained on ``features`` with the same normalisation, hidden sizes and activation.
    features : torch.Tensor, shape (n_frames, n_features)
        Raw training features.
    activation : {"tanh", "relu", "elu", None}
        The members' activation.
    log_w : numpy.ndarray, shape (n_frames,), optional
        Log-weights of the training frames.

    Returns
    -------
    AutoEncoder
    """
    first = members[0]
    with torch.no_grad():
        values = [m.encode(features).double().numpy() for m in members]
    w = np.ones(len(features)) if log_w is None else np.exp(log_w - log_w.max())
    maps = [_affine_map(v, values[0], w / w.sum()) for v in values]
    agreement = [regscore(v, values[0], weights=w) for v in values[1:]]
    if min(agreement) < MIN_AGREEMENT:
        warnings.warn(
            f"the {len(members)} autoencoders trained on the same frames found different CVs: the worst maps onto "
            f"the first with R² {min(agreement):.2f} < {MIN_AGREEMENT}, and their average mixes them; train longer "
            f"(trainer=Trainer(max_epochs=...)) or pass n_models=1",
            stacklevel=4,
        )
    # the members' Linear layers, layer by layer: layers[depth][k] is member k's
    layers = list(zip(*[[m for m in member.encoder if isinstance(m, nn.Linear)] for member in members], strict=True))
    sizes = [first.n_features, *[len(members) * group[0].out_features for group in layers[:-1]], first.n_cv]
    averaged = copy.deepcopy(first)
    averaged.encoder = FeedForward(sizes, activation)
    merged = [m for m in averaged.encoder if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for depth, (layer, group) in enumerate(zip(merged[:-1], layers[:-1], strict=True)):
            weights = [m.weight for m in group]  # side by side: the first layer reads the same features
            layer.weight.copy_(torch.cat(weights) if depth == 0 else torch.block_diag(*weights))
            layer.bias.copy_(torch.cat([m.bias for m in group]))
        # the mean over members k of (W_k h_k + b_k) A_k + c_k, with h_k member k's last hidden layer
        affine = [(torch.as_tensor(a.T, dtype=torch.float32), torch.as_tensor(c, dtype=torch.float32)) for a, c in maps]
        parts = [a @ m.weight for (a, _), m in zip(affine, layers[-1], strict=True)]
        # side by side after hidden layers; summed when the encoder is linear and reads the features itself
        merged[-1].weight.copy_((torch.cat(parts, dim=1) if len(merged) > 1 else sum(parts)) / len(members))
        merged[-1].bias.copy_(sum(a @ m.bias + c for (a, c), m in zip(affine, layers[-1], strict=True)) / len(members))
    return averaged.eval()


def _iteration_seed(seed, i):
    """Seed of iteration ``i`` of the loop seeded ``seed``: independent streams for every (seed, i)."""
    return int(np.random.SeedSequence([seed, i]).generate_state(1)[0])


def _ess(log_w):
    """Kish effective sample size (Σw)² / Σw² of normalised log-weights."""
    return float(np.exp(-logsumexp(2 * log_w)))


class IterativeCVLearning:
    """FEBILAE: iterate eABF along a learned CV, reweighting and retraining, until the CV converges.

    1. Sample ``steps_per_iteration`` unbiased steps from the start positions; train an autoencoder
       with unit weights; ξ₀ is its encoder.
    2. Iteration i ≥ 1: eABF along ξ_{i-1} (:class:`ExtendedABF`, κ and grid below), from where the
       previous run ended (``start``); weights of the
       frames for the unbiased density, the ratio of target to biased density
       ``w_j ∝ exp(-β A_i(ξ_{i-1}(q_j))) / h_i(ξ_{i-1}(q_j))`` with ``A_i`` the run's free-energy
       estimate (``weights``) and ``h_i`` the histogram of the sampled ξ_{i-1}, normalised in log space
       (see :func:`eabf_log_weights` for the derivation); train a fresh autoencoder with those
       weights (multinomial minibatches, :class:`~mdcvkit.training.Trainer`); ξ_i is its encoder;
       ``regscore(ξ_{i-1}, ξ_i)`` and ``knn_regscore(ξ_{i-1}, ξ_i)`` on the frames of iteration i,
       under its training weights (``score_weights``).
    3. Stop when the score of ``criterion`` has reached ``min_score`` in ``patience`` successive
       iterations, or after ``max_iterations`` biased iterations; then, if ``production_steps``, a
       production eABF run along the last CV.

    Every CV is shifted and scaled to zero mean and unit variance over its training frames, so that
    grids and κ are in units of its spread. The grid of the eABF along ξ spans the values of ξ on
    the previous frames (and, for a toy, on the region of its potential below 15 kT), widened by
    ``grid_margin`` of that span on each side, with ``n_bins`` bins; κ defaults to ``kT / (2 Δ)²``
    for a bin width Δ.

    Parameters
    ----------
    system : mdcvkit.systems.ToySystem or openmm.System
        A toy (its Brownian integrator, start and temperature are used) or an OpenMM System, with
        ``positions`` and ``temperature``; never modified.
    featurizer : Featurizer or sequence of int, optional
        Positions ``(n_frames, n_atoms, 3)`` in Å -> features. A sequence of particle indices gives
        their raw :class:`~mdcvkit.features.Positions`. Default for a toy: its coordinates
        (x1, x2) in Å, FEBILAE's raw inputs; required for an OpenMM System. Which atoms enter matters
        more than how they are aligned. On vacuum alanine dipeptide (tutorial 05), four trainings on
        the same frames agreed to regscores of 0.9965-0.998 on the Kabsch-aligned 8 backbone atoms
        (FEBILAE's 24 inputs), but to 0.84-0.99 with Cβ among the inputs (all heavy atoms, backbone
        and Cβ, or body-frame coordinates). The backbone alone has no chirality, and eABF along a
        CV on it blew up at the singular set of the Kabsch fit (see
        :class:`~mdcvkit.features.AlignedPositions`). Fitting on backbone and Cβ with the backbone
        as the only inputs (``AlignedPositions(..., atoms=...)``) agreed to 0.987-0.998 and blew up
        less often, but not never (see :class:`~mdcvkit.features.AlignedPositions`).
    n_cv : int, default 1
        Dimension of the CV (1 or 2, what eABF supports). On vacuum alanine dipeptide from C7eq
        (backbone inputs fitted with Cβ, tutorial 05 settings, seed 0), a 1-D CV learned what the
        unbiased run explores, ψ (score 0.45-0.49 against (φ, ψ)), and five iterations and the
        production never left C7eq (largest φ −29°); 2-D CVs reach C7ax in iteration 1.
    hidden : sequence of int, default ()
        Hidden layers of the encoder (mirrored in the decoder). ``()`` with two inputs is
        FEBILAE's 2-1-2 autoencoder; :class:`~mdcvkit.models.FeedForward` applies ``activation``
        between hidden layers only, so it is then linear.
    activation : {"elu", "tanh", "relu", None}, default "elu"
        Activation between hidden layers. The bias pushes the atoms along the gradient of ξ, so an
        iteration reaches past the frames it learned from only where ξ keeps a gradient there. A
        tanh encoder saturates outside its training data: on vacuum alanine dipeptide from C7eq
        (tutorial 05 settings, 21-40-2-40-21, 3 ns per iteration) tanh loops sat below φ = 0° for
        their first 2 (seed 2, where the loop stopped), 3 (seed 0) and 4 (seed 1) iterations,
        and with a finer grid (30 × 30 bins, κ 100) seeds 0 and 1 never crossed in 5 iterations.
        ELU is linear on one side of each unit and keeps a gradient: seeds 0, 1 and 2 reached
        C7ax in iteration 1 (largest φ 86°, 87° and 77°), and seeds 0 and 1 did again with grid
        margin 0.2 and κ 100 (72° and 83°). FEBILAE used tanh.
    steps_per_iteration : int, default 1_000_000
        Integration steps of each sampling run (the unbiased one and each eABF run). On the
        entropic switch, with 200,000 steps no loop of seeds 0-2 converged in 5 iterations (R²
        against x1 wandering between 0.003 and 0.99); with 1M, 9 loops of seeds 0-9 converged to
        x1 at iteration 3-4 (see ``patience``). On vacuum alanine dipeptide (tutorial 05 settings,
        seed 0), 7.5 ns per iteration instead of 3 crossed C7eq ↔ C7ax 45 times in iteration 1 but
        only 2-3 times in each of the four after, and the regscore went 0.84, 0.994, 0.878, 0.910,
        0.715: once the CV is trained on reweighted frames, where C7ax carries a few percent of the
        weight, longer runs along it on that grid (15 × 15 bins, margin 0.5, κ 40) do not cross
        more often. 15 ns per iteration on a finer, narrower grid (30 × 30 bins,
        ``grid_margin=0.2``, κ 100, seeds 0 and 2) crossed 13-160 times per iteration; C7ax then
        held a steady 1.0-2.5 % of the weight, and the kNN regscore passed 0.99 at iterations 3-4
        (seed 0) and 2-4 (seed 2), while the affine one went 0.91, 0.75, 0.97, 0.68 and 0.35,
        0.77, 0.989, 0.994. The same settings on backbone inputs fitted with Cβ (seed 0, 87 min)
        crossed 6-103 times per iteration, with regscores 0.86, 0.97, 0.91, 0.90 (seed 3, κ 40:
        0.86-0.88): each biased CV of seed 0 held φ (affine R² 0.93 from the CV to φ on common
        frames) but ψ only through a curved map (affine 0.36-0.55, kNN 0.70-0.95), a different one
        in each iteration.
    sample_frequency : int, default 50
        Steps between stored frames.
    max_iterations : int, default 10
        Biased iterations at most (≥ 1).
    min_score : float, optional
        Score (of ``criterion``) between successive CVs at which the loop stops (``patience`` times
        in a row); default the bootstrap threshold of each iteration
        (:func:`mdcvkit.metrics.regscore_threshold`: ``n_bootstrap`` CVs trained on 10 % of the
        frames that carry weight, 5th percentile of their scores against the CV trained on all,
        scored as ``score_weights`` says).
        Successive CVs agree whenever their frames cover the same region, so a high regscore
        measures stability, not discovery: on vacuum alanine dipeptide from C7eq with 1 ns runs,
        both the bootstrap threshold (0.96-0.98) and 0.99 were passed after the first biased
        iteration, before the molecule had visited C7ax (hence ``patience``). Pass ``min_score=1.0``
        to run all ``max_iterations``. The reverse also happens with a 2-D CV, whose latent plane
        the data fix only up to a smooth bend: two fresh trainings on the same frames can score
        below 0.99 against each other, by how much depending on the inputs (see ``featurizer``;
        hence ``criterion="knn"``). The bootstrap CVs start from the same initial weights as the
        full one, so the default threshold measures data noise only; drawing new initial weights for
        them was tried and dropped, as it let the threshold fall to 0.01-0.71 on the 2-D toy and the
        loop stop before the CV had settled.
    reweight : bool, default True
        Train on the weights above; False trains on the biased frames as they are.
    reference : callable, optional
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames,)`` or ``(n_frames, k)``, e.g.
        ``toy.cv("x1")``; ``regscore(ξ_i, reference)`` on the frames of iteration i, weighted as
        ``score_weights`` says, is reported per iteration.
    positions : array_like or openmm.unit.Quantity, shape (n_particles, 3), optional
        Start positions (nm if bare numbers); default the toy's start.
    temperature : float, optional
        K; default the toy's temperature.
    particles : sequence of int, optional
        System index of each featurizer atom; required when the featurizer does not read every particle
        of the system (default ``range(featurizer.n_atoms)``).
    integrator : openmm.Integrator, optional
        Stochastic integrator at ``temperature``; default the toy's Brownian integrator, else
        LangevinMiddle (1/ps, 2 fs).
    route : {"auto", "expression", "python", "torch", "external"}, default "auto"
        How eABF puts each CV into OpenMM (:func:`mdcvkit.biasing.add_cv_bias`). "auto" compiles CVs
        on features with a closed form (distances, dihedrals, body-frame coordinates) or on the toys'
        coordinates into an OpenMM expression when it fits in one CustomCVForce (no Python per
        step), else takes the fastest Python-driven route; "expression" insists on compiling; the
        others force that route. Aligned coordinates take the Python force, where a NumPy twin of
        the CV (:mod:`mdcvkit.biasing.numpy_cv`) computes it: on vacuum alanine dipeptide 0.12 ms
        per step against 0.10 ms for compiled body-frame coordinates, which in turn cost ~30 s of
        compilation per eABF run (``benchmarks/bench_iterative.py``).
    n_bins : int, default 50
        Bins per CV component of the eABF grid.
    grid_margin : float, default 0.05
        Fraction of the span of the previous frames' CV values added to the eABF grid on each side.
        eABF flattens the free energy only inside its grid (harmonic walls hold λ there), so this
        margin is how far beyond the region already seen an iteration can push. The default leaves
        almost no room; tutorial 05 takes 0.5 on alanine dipeptide, where 1.0 with a stiff κ
        collapsed the weights (ESS 10 of 25,000 frames). The production's grid (margin 0.1, κ 100)
        for the iterations too (3 ns, seed 0) crossed 6, 9, 1, 1 and 11 times in iterations 1-5,
        with regscores 0.83, 0.85, 0.64, 0.50, 0.997.
    kappa : float, optional
        Coupling in kJ/mol per (CV spread)²; default ``kT / (2 Δ)²``.
    full_samples : int, default 100
        See :class:`ExtendedABF`.
    trainer : Trainer, optional
        Training settings; its seed is replaced by iteration i's seed (see ``seed``). Default
        ``Trainer(max_epochs=200)``.
    n_bootstrap : int, default 10
        Sub-sample CVs of the default ``min_score``.
    ess_threshold : float, default 0.05
        Warn when the effective sample size of the weights is below this fraction of the frames.
    production_steps : int, default 0
        Steps of a final eABF run along the last CV. Its frames, reweighted
        (``results.production_log_weights``), give free energies along any coordinate, but a
        difference between basins rests on how often the run crossed between them. On vacuum alanine
        dipeptide, seven 5 ns productions along learned 2-D CVs with ``production_grid_margin=0.1``
        and ``production_kappa`` 100-200 (tutorial 05 and trials) crossed C7eq ↔ C7ax 46-92 times
        and gave A(C7ax) - A(C7eq) = 5.3-9.8 kJ/mol, against 6.8-7.6 kJ/mol from 5 ns of eABF along
        φ (178-186 crossings); on the iterations' grid (margin 0.5, κ 40) four runs crossed 1-3
        times and gave 7.3-30.8 kJ/mol. Count the crossings before trusting such a number.
    production_grid_margin : float, optional
        ``grid_margin`` of the production run; default ``grid_margin``. The iterations need a wide
        margin to push beyond the frames seen so far; the production only has to sample the region
        the last iteration found, and a narrower grid has fewer bins for eABF to fill. On vacuum
        alanine dipeptide, 5 ns along a learned 2-D CV (15 × 15 bins, κ 40, ``full_samples=20``,
        from C7eq, seeds 7, 11, 12) crossed C7eq ↔ C7ax 6, 7 and 4 times with margin 0.5 and 16,
        8 and 16 times with margin 0.1.
    production_kappa : float or sequence of float, optional
        κ of the production run in kJ/mol per (CV spread)²; default ``kappa``. A narrower production
        grid has narrower bins, and λ's coupling width ``sqrt(kT / κ)`` should shrink with them: on
        the runs of ``production_grid_margin`` (margin 0.1, bins 0.33 spread wide), κ 40 (width
        0.25) crossed 16, 8 and 16 times (seeds 7, 11, 12), κ 100 (width 0.16) 60 and 63 times
        (seeds 7, 11) and κ 200 71 times (seed 7), with A(C7ax) - A(C7eq) of 5.3-9.8 kJ/mol
        over the stiff runs against 6.8-7.6 kJ/mol from eABF along φ.
    start : {"previous", "initial"}, default "previous"
        Where each eABF run (and the production) starts: from the last configuration of the
        previous run, so that the iterations form one trajectory whose bias is renewed, or from
        ``positions`` every time. The weights do not depend on it; what a run reaches does. On vacuum
        alanine dipeptide eABF needs nanoseconds to make its first C7eq -> C7ax crossing even along
        φ itself, so with "initial" a run that crossed leaves nothing to the next one.
    criterion : {"regscore", "knn"}, default "regscore"
        Which score between successive CVs decides convergence; both are reported. "regscore" is
        FEBILAE's: the new CV is an affine function of the previous one
        (:func:`mdcvkit.metrics.regscore`). "knn" asks only for a smooth invertible map either way
        (:func:`mdcvkit.metrics.knn_regscore`), which is what matters to eABF and what a 2-D
        autoencoder latent is defined up to. On vacuum alanine dipeptide (2-D CV on body-frame
        coordinates, 3 ns per iteration, seed 0, when iteration i drew seed + i) the kNN regscore
        was 0.956 after the first C7ax visits and 0.9996 at iteration 2 (bootstrap thresholds
        0.995, 0.989), where the loop stopped; the regscore was 0.616 and 0.990, and 0.949 at
        iteration 3 had the loop gone on. Like the regscore, it measures stability, not discovery:
        seeds 1 and 2 stopped at iteration 1 (kNN regscores 0.9993, 0.9986) before any frame had
        reached C7ax (see ``patience``).
    patience : int, default 2
        Successive biased iterations whose score must reach ``min_score`` before the loop stops.
        FEBILAE stops at the first (``patience=1``). A high score means that the new CV is the old
        one, which also happens when the run along the old CV found nothing new: then the loop has
        stalled, not converged, and one more run, with fresh noise, may still cross. On the
        entropic switch (1M steps per iteration, ``min_score=0.99``, seeds 0-9), ``patience=1``
        stopped 3 loops of 10 at iteration 1 on a CV along x2 (R² 0.67-0.70 against x1): their
        first eABF run had hardly reached the right well. With ``patience=2`` those three went on
        to x1, and 9 loops of the 10 ended there (R² 1.0000) at iteration 3-4; the tenth reached x1
        and left it at its last iteration. Two passes do not always tell a stall: on vacuum
        alanine dipeptide from C7eq (tutorial 05 settings, seeds 0-2, tanh encoders) the first two
        iterations stayed in C7eq and passed the kNN test; seeds 0 and 1, run on, crossed at
        iterations 3 and 4 (see ``activation``).
    weights : {"abf", "czar"}, default "abf"
        Free-energy estimate behind each iteration's weights and the production's
        (:func:`eabf_log_weights`): the eABF run's own ABF estimate or its CZAR free energy. With
        few crossings, CZAR's estimate can leave a whole basin out of its connected region, and
        the frames there get zero weight; the ABF estimate keeps every frame. On vacuum alanine
        dipeptide (2-D eABF along (φ, ψ), 3 ns, seeds 0-7) the C7ax weight was 0.6-5.1 % with
        "abf" and 0.08-3.6 % with "czar", against 2.2-2.5 %. Neither steadies a loop whose
        iterations cross 1-6 times: with tutorial 05's alanine settings and "abf" (seeds 0 and 1),
        C7ax held 0.0-76 % of the weight and the regscores were 0.69-0.995.
    score_weights : {"training", "uniform"}, default "training"
        How the frames of an iteration count in its scores (``regscore``, ``knn_regscore``, the
        bootstrap threshold and ``reference_score``). "training": with the weights the CV was trained
        with, so, with ``reweight=True``, for the unbiased density; "uniform": each frame as
        sampled. An autoencoder trained on reweighted frames is fixed by the frames that carry the
        weight; where the bias pushed the system into regions of little weight (barriers, rare
        basins), it is barely constrained, and there two successive CVs may differ without either
        fitting its data worse. Uniform scores count those frames as much as the others. With
        ``reweight=False`` the two are the same. On the entropic switch (1M steps per iteration,
        ``min_score=0.99``, seeds 0-9) both stopped the ten loops at the same iterations, nine on x1;
        the four loops whose first eABF run hardly left the left well passed 0.99 at iteration 1 on a
        CV along x2, which scored 0.02-0.07 against x1 under the training weights but 0.53-0.67
        uniformly, on frames that climb out of the well diagonally. On vacuum alanine dipeptide
        (backbone inputs fitted with Cβ, 15 ns iterations; the two loops of ``steps_per_iteration``
        replayed), C7ax held 1.3-7.6 % of the training weight; under it the regscores were 0.66,
        0.988, 0.993, 0.975 (seed 0) and 0.75, 0.9899, 0.934, 0.986 (seed 3), against 0.86-0.97
        uniformly; the kNN regscores of seed 0 were 0.9990-0.9996 at iterations 2-4; and the biased
        CVs scored 0.91-0.98 against (φ, ψ) on their own frames, against 0.67-0.96 uniformly. Fresh
        trainings on iteration 4's weighted frames from other initial weights scored 0.92-0.989
        against that iteration's CV, so a weighted affine ``min_score`` of 0.99 asks for more than
        these autoencoders give on identical data; ``criterion="knn"`` does not (0.9992-0.9999). The
        scores quoted for the other parameters were measured with "uniform" unless stated.
    n_models : int, default 1
        Autoencoders trained per iteration (and per bootstrap sub-sample), from different initial
        weights. With more than one, the iteration's CV is their average: each member's CV is mapped
        onto the first member's by the affine fit weighted as in training, and the mapped CVs are
        averaged, computed exactly by one wider encoder (the members side by side; the decoder is the
        first member's). A warning says when a member maps onto the first with R² below 0.8. Training
        takes ``n_models`` times as long. Autoencoders trained on identical frames from different
        initial weights find CVs that differ by more than an affine map, and regscore counts those
        random differences as a change of CV; the average removes most of them. On vacuum alanine
        dipeptide (iteration 4 of the seed-0 loop of ``score_weights``, weighted scores) single
        autoencoders trained on the same frames agreed to 0.979-0.998 (28 pairs), averages of four to
        0.999, and averages of four trained on the two halves of the frames to 0.999. Between iterations
        3 and 4, averages of four agreed to 0.987-0.991 (single pairs 0.969-0.997): what remains is the
        iterations' different free-energy estimates (φ > 0 held 2.0 % and 3.1 % of the weight; with
        iteration 3's basin weights set to iteration 4's, the averages agreed to 0.993-0.994). Rerun
        with ``n_models=4`` (``min_score=0.99``), the seed-0 loop scored 0.841, 0.9974, 0.9942 and
        converged at iteration 3, its CVs at 0.97-0.98 against (φ, ψ); seed 3 (κ 40) scored 0.747,
        0.983, 0.973 by iteration 3. The wider encoder is cheap on the Python route (aligned positions,
        30-160-2 against 30-40-2: 0.30-0.32 ms per step either way on vacuum alanine), but OpenMM
        compiles the expression route's much more slowly: with body-frame inputs the eABF set-up of a
        21-160-2 encoder had not finished after 24 min, where the 21-40-2 one took 2 min (both on two
        busy cores, ``benchmarks/bench_iterative.py --n-models``); there, keep ``n_models=1``.
    state_file : str or path-like, optional
        Written (atomically) after every iteration; an existing one with the same settings is
        resumed. It holds pickled modules: load only files you wrote.
    seed : int, default 0
        Seeds sampling, training and the bootstrap. Iteration i (and the production, after the
        last) draws its own seed from ``numpy.random.SeedSequence([seed, i])``, so that the loops of
        two seeds share no random stream. (With ``seed + i``, iteration i + 1 of seed s would repeat
        the random numbers of iteration i of seed s + 1: on the entropic switch, whose Brownian
        dynamics common noise synchronises, the R² of seed 1's CVs against x1 then followed seed 2's
        one iteration late, to within 0.02.)
    verbose : bool, default False
        tqdm progress bar over iterations.

    Attributes
    ----------
    results : MDAnalysis.analysis.base.Results
        After :meth:`run`: ``iterations`` (Dataset over dim ``iteration``, 0 the unbiased one:
        ``regscore`` and ``knn_regscore`` against the previous CV, ``threshold`` used (for
        ``criterion``), ``reference_score``,
        ``n_frames``, ``ess`` (Kish effective sample size ``(Σw)²/Σw²`` of the training weights,
        ``n_frames`` for uniform ones), ``pmf`` (kJ/mol, histogram of the frames along ξ_i
        reweighted to the unbiased density, also when ``reweight=False``; coordinate ``xi`` per
        iteration and bin)),
        ``models`` (list: ``models[i]`` is ξ_i, a CV module positions (Å) -> CV), ``cv`` (the last),
        ``converged`` (bool), ``production`` (the production eABF's results or None),
        ``production_log_weights`` (:func:`eabf_log_weights` of the production frames with the
        ``weights`` estimate, for free energies along any coordinate, or None).
    n_resumed_ : int
        After :meth:`run`: iterations read from ``state_file`` rather than computed.

    References
    ----------
    Z. Belkacemi, P. Gkeka, T. Lelièvre, G. Stoltz, J. Chem. Theory Comput. 18, 59 (2022).

    Examples
    --------
    >>> toy = mk.systems.EntropicSwitch()                                       # doctest: +SKIP
    >>> loop = IterativeCVLearning(toy, reference=toy.cv("x1"), max_iterations=5).run()  # doctest: +SKIP
    >>> loop.results.iterations[["regscore", "reference_score", "ess"]]         # doctest: +SKIP
    """

    def __init__(self, system, featurizer=None, *, n_cv=1, hidden=(), activation="elu",
                 steps_per_iteration=1_000_000, sample_frequency=50, max_iterations=10, min_score=None,
                 reweight=True, reference=None, positions=None, temperature=None, particles=None,
                 integrator=None, route="auto", n_bins=50, grid_margin=0.05, kappa=None, full_samples=100,
                 trainer=None, n_bootstrap=10, ess_threshold=0.05, production_steps=0,
                 production_grid_margin=None, production_kappa=None, start="previous", criterion="regscore",
                 patience=2, weights="abf", score_weights="training", n_models=1, state_file=None, seed=0,
                 verbose=False):  # fmt: skip
        self.toy = None if isinstance(system, openmm.System) else system
        if self.toy is not None and not hasattr(self.toy, "system"):
            raise TypeError(f"system must be an openmm.System or a mdcvkit.systems toy, not {type(system).__name__}")
        self.system = system if self.toy is None else self.toy.system
        if positions is None:
            if self.toy is None:
                raise ValueError("positions=None: pass the start positions (nm) of the OpenMM System")
            positions = self.toy.positions
        self.positions = _positions_nm(positions)
        if temperature is None:
            if self.toy is None:
                raise ValueError("temperature=None: pass the temperature in K of the OpenMM System")
            temperature = self.toy.temperature
        self.temperature = _temperature_kelvin(temperature)
        self.kT = MOLAR_GAS_CONSTANT * self.temperature
        n_particles = self.system.getNumParticles()
        if featurizer is None:
            if self.toy is None:
                raise ValueError("featurizer=None: pass a Featurizer or the particle indices of the CV atoms")
            featurizer = _Coordinates(range(self.toy.n_dim))
        elif not isinstance(featurizer, Featurizer):
            particles = np.asarray(featurizer, dtype=np.int64).reshape(-1) if particles is None else particles
            featurizer = Positions(len(particles))
        self.featurizer = featurizer
        check_route(route)
        if route == "expression" and not isinstance(featurizer, _Coordinates):
            try:
                _descriptors_of(featurizer)
            except ValueError as err:
                raise ValueError(f"route='expression' cannot compile this featurizer: {err}") from err
        self.route = route
        if particles is None and featurizer.n_atoms != n_particles:
            raise ValueError(
                f"the featurizer reads n_atoms={featurizer.n_atoms} atoms but the system has {n_particles} "
                f"particles and particles=None; pass particles= with the system index of each featurizer atom"
            )
        self.particles = np.arange(featurizer.n_atoms) if particles is None else np.asarray(particles, np.int64)
        if self.particles.ndim != 1 or len(self.particles) != featurizer.n_atoms:
            raise ValueError(
                f"the featurizer reads n_atoms={featurizer.n_atoms} atoms but particles has "
                f"{self.particles.size} entries; pass particles= with the system index of each featurizer atom"
            )
        if self.particles.min() < 0 or self.particles.max() >= n_particles:
            raise ValueError(
                f"the featurizer reads n_atoms={featurizer.n_atoms} atoms at system indices "
                f"{self.particles.tolist()[:10]} but the system has {n_particles} particles; build the "
                f"featurizer for the system's atoms or pass particles= with valid indices"
            )
        for label, value, low in (("max_iterations", max_iterations, 1), ("steps_per_iteration",
                                  steps_per_iteration, 1), ("sample_frequency", sample_frequency, 1),
                                  ("n_bins", n_bins, 2), ("n_bootstrap", n_bootstrap, 1),
                                  ("production_steps", production_steps, 0), ("patience", patience, 1),
                                  ("n_models", n_models, 1)):  # fmt: skip
            check_int(value, label, low)
        if steps_per_iteration < 10 * sample_frequency:
            raise ValueError(
                f"steps_per_iteration={steps_per_iteration} gives fewer than 10 frames with "
                f"sample_frequency={sample_frequency}; sample longer or more often"
            )
        if n_cv not in (1, 2):
            raise ValueError(f"n_cv={n_cv!r} must be 1 or 2 (what eABF supports)")
        if min_score is not None and not -np.inf < min_score <= 1:
            raise ValueError(f"min_score={min_score!r} must be a regscore <= 1, e.g. 0.99, or None")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion={criterion!r} must be one of {sorted(CRITERIA)}: 'regscore' (FEBILAE's "
                             f"affine test) or 'knn' (the same CV up to a smooth invertible map)")  # fmt: skip
        if production_grid_margin is None:
            production_grid_margin = grid_margin
        for label, value in (("grid_margin", grid_margin), ("production_grid_margin", production_grid_margin)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value < np.inf:
                raise ValueError(f"{label}={value!r} must be a non-negative fraction of the span, e.g. 0.1")
        if kappa is not None:  # checked here, not after the unbiased run and the first training
            kappa = _check_kappa(kappa, n_cv)
        if production_kappa is not None:
            production_kappa = _check_kappa(production_kappa, n_cv, "production_kappa")
        if reference is not None and not callable(reference):
            raise TypeError(f"reference must be a function of positions (n_frames, n_atoms, 3) in Å, e.g. "
                            f"toy.cv('x1'), not {type(reference).__name__}")
        if weights not in ESTIMATORS:
            raise ValueError(f"weights={weights!r} must be one of {list(ESTIMATORS)}: the free-energy estimate "
                             f"behind the weights (see eabf_log_weights)")  # fmt: skip
        if score_weights not in SCORE_WEIGHTS:
            raise ValueError(f"score_weights={score_weights!r} must be one of {list(SCORE_WEIGHTS)}: 'training' "
                             f"(frames weighted as in training) or 'uniform' (each frame as sampled)")  # fmt: skip
        if start not in ("previous", "initial"):
            raise ValueError(f"start={start!r} must be 'previous' (continue from the last run) or 'initial'")
        if not 0 <= ess_threshold < 1:
            raise ValueError(f"ess_threshold={ess_threshold!r} must be a fraction in [0, 1), e.g. 0.05")
        self.n_cv = int(n_cv)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        # hidden and activation are checked by building the autoencoder now, not after the unbiased run
        AutoEncoder(featurizer.n_features, self.n_cv, hidden=self.hidden, activation=activation)
        self.steps_per_iteration = int(steps_per_iteration)
        self.sample_frequency = int(sample_frequency)
        self.max_iterations = int(max_iterations)
        self.min_score = min_score
        self.reweight = bool(reweight)
        self.reference = reference
        self.integrator = integrator
        self.n_bins = int(n_bins)
        self.grid_margin = float(grid_margin)
        self.kappa = kappa
        self.full_samples = full_samples
        self.trainer = Trainer(max_epochs=200) if trainer is None else trainer
        self.n_bootstrap = int(n_bootstrap)
        self.ess_threshold = float(ess_threshold)
        self.production_steps = int(production_steps)
        self.production_grid_margin = float(production_grid_margin)
        self.production_kappa = production_kappa
        self.start = start
        self.criterion = criterion
        self.patience = int(patience)
        self.weights = weights
        self.score_weights = score_weights
        self.n_models = int(n_models)
        self.state_file = None if state_file is None else as_path(state_file, "state_file")
        self.seed = check_seed(seed)
        self.verbose = verbose
        self.results = Results()

    # --- pieces ------------------------------------------------------------------------------------------
    def _integrator(self, seed):
        if self.integrator is not None:
            integrator = openmm.XmlSerializer.clone(self.integrator)
            integrator.setRandomNumberSeed(openmm_seed(seed))
            return integrator
        if self.toy is not None:
            return self.toy.integrator(seed)
        integrator = openmm.LangevinMiddleIntegrator(self.temperature, 1.0, 0.002)
        integrator.setRandomNumberSeed(openmm_seed(seed))
        return integrator

    def _sample_unbiased(self, seed):
        """Positions (Å) of the featurizer atoms every ``sample_frequency`` steps, and the last positions (nm)."""
        platform = "Reference" if self.system.getNumParticles() <= 200 else "CPU"
        context = openmm.Context(self.system, self._integrator(seed), openmm.Platform.getPlatformByName(platform))
        context.setPositions(self.positions)
        context.setVelocitiesToTemperature(self.temperature, openmm_seed(seed))
        frames = []
        for _ in range(self.steps_per_iteration // self.sample_frequency):
            context.getIntegrator().step(self.sample_frequency)
            pos = context.getState(getPositions=True).getPositions(asNumpy=True)._value
            frames.append(pos[self.particles] * NM_TO_ANGSTROM)
        return np.asarray(frames), pos

    def _features(self, positions):
        """Features ``(n_frames, n_features)`` of positions in Å, float32."""
        with torch.no_grad():
            return self.featurizer(torch.as_tensor(positions, dtype=torch.float32))

    def _train(self, features, log_w, seed, indices=None):
        """A fresh CV trained on ``features`` (rows ``indices``): the encoder of one autoencoder, or with
        ``n_models`` > 1 the average of several (:func:`_averaged_autoencoder`), as a :class:`_ScaledCV`."""
        training = features if indices is None else features[indices]
        if log_w is not None:  # frames of zero weight (no CZAR estimate in their bin) take no part
            log_w = log_w if indices is None else log_w[indices]
            kept = np.isfinite(log_w)
            training, log_w = training[torch.as_tensor(kept)], log_w[kept]
        members = []
        for k in range(self.n_models):
            member_seed = seed if k == 0 else _iteration_seed(seed, k)
            torch.manual_seed(member_seed)  # the initial weights: a resumed run repeats an uninterrupted one
            model = AutoEncoder(self.featurizer.n_features, self.n_cv, hidden=self.hidden,
                                activation=self.activation, scale_groups=self.featurizer.scale_groups)  # fmt: skip
            trainer = copy.copy(self.trainer)
            trainer.seed = member_seed
            members.append(trainer.fit(model, training.numpy(), log_weights=log_w).model.cpu().eval())
        fitted = members[0] if len(members) == 1 else _averaged_autoencoder(members, training, self.activation, log_w)
        with torch.no_grad():
            values = fitted.encode(features).double().numpy()
        scale = values.std(axis=0)
        return _ScaledCV(self.featurizer, fitted, values.mean(axis=0), np.where(scale > 0, scale, 1.0))

    def _grid(self, cv, positions, margin=None):
        """eABF grid over the values of ``cv`` on ``positions`` (Å) and the start, widened by ``margin``."""
        values = [_cv_values(cv, positions), _cv_values(cv, self.positions[self.particles][None] * NM_TO_ANGSTROM)]
        if self.toy is not None:
            values.append(_cv_values(cv, self._toy_region()))
        values = np.concatenate(values)
        lower, upper = values.min(axis=0), values.max(axis=0)
        pad = (self.grid_margin if margin is None else margin) * (upper - lower) + 1e-6
        return Grid(lower - pad, upper + pad, [self.n_bins] * self.n_cv, names=[f"cv{k}" for k in range(self.n_cv)])

    def _toy_region(self):
        """Positions (Å) of a mesh over the toy's bounds where its potential is below 15 kT."""
        if not hasattr(self, "_region"):
            axes = [np.linspace(lo, hi, 101) for lo, hi in self.toy.bounds]
            mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
            energy = self.toy.potential(mesh)
            keep = mesh[self.toy.beta * (energy - energy.min()) < 15]
            positions = np.zeros((len(keep), self.system.getNumParticles(), 3))
            positions[:, 0, : keep.shape[1]] = keep * NM_TO_ANGSTROM
            self._region = positions[:, self.particles]
        return self._region

    def _pmf(self, cv, positions, log_w, grid):
        values = _cv_values(cv, positions)
        index = grid.index(values)
        weights = np.exp(log_w) if log_w is not None else np.ones(len(values))
        hist = np.bincount(index[index >= 0], weights=weights[index >= 0], minlength=int(np.prod(grid.shape)))
        with np.errstate(divide="ignore"):
            pmf = -self.kT * np.log(hist / hist.sum())
        pmf[~np.isfinite(pmf)] = np.nan
        return (pmf - np.nanmin(pmf)).reshape(grid.shape)

    def _reference_score(self, cv, positions, frame_weights):
        if self.reference is None:
            return np.nan
        if isinstance(self.reference, nn.Module):
            with torch.no_grad():
                ref = self.reference(torch.as_tensor(positions, dtype=torch.float64)).double().numpy()
        else:
            ref = np.asarray(self.reference(positions), dtype=float)
        return regscore(_cv_values(cv, positions), ref, weights=frame_weights)

    def _eabf(self, cv, grid, n_steps, seed, positions, kappa=None):
        """eABF along ``cv`` from ``positions`` (nm), κ ``kappa`` (default ``self.kappa``); the run and its last
        positions (nm)."""
        fast = cv.descriptor_cv() if self.route in ("auto", "expression") else None
        # "auto" compiles the DescriptorCV when OpenMM can hold it (at most 32 collective variables), else
        # runs it through a Python-driven route
        kappa = self.kappa if kappa is None else kappa
        kappa = self.kT / (2 * grid.width) ** 2 if kappa is None else kappa
        kwargs = {"lambda_mass": self.toy.mass} if self.toy is not None else {}
        eabf = ExtendedABF(self.system, positions, cv if fast is None else fast, grid, kappa, self.temperature,
                           particles=self.particles, route=self.route, integrator=self._integrator(seed),
                           sample_frequency=self.sample_frequency,
                           update_frequency=self.sample_frequency * max(1, 1000 // self.sample_frequency),
                           full_samples=self.full_samples, store_positions=True, seed=seed, **kwargs)  # fmt: skip
        eabf.run(n_steps)
        last = eabf.context.getState(getPositions=True).getPositions(asNumpy=True)._value
        return eabf, np.asarray(last[: self.system.getNumParticles()], dtype=float)  # without λ's particle

    def _start(self, state):
        """Start positions (nm) of the next sampling run."""
        return state["last"] if self.start == "previous" and state.get("last") is not None else self.positions

    # --- state -------------------------------------------------------------------------------------------
    def _settings(self):
        return {
            "n_cv": self.n_cv, "hidden": list(self.hidden), "activation": self.activation,
            "steps_per_iteration": self.steps_per_iteration, "sample_frequency": self.sample_frequency,
            "reweight": self.reweight, "n_bins": self.n_bins, "grid_margin": self.grid_margin, "seed": self.seed,
            "start": self.start, "criterion": self.criterion, "weights": self.weights,
            "score_weights": self.score_weights, "n_models": self.n_models,
            "features": list(self.featurizer.labels), "particles": self.particles.tolist(),
        }  # fmt: skip

    def _save(self, state):
        with atomic_path(self.state_file) as tmp:
            torch.save(state, tmp)

    def _load(self):
        state = torch.load(self.state_file, weights_only=False)
        if not isinstance(state, dict) or "settings" not in state:
            raise ValueError(f"state_file={str(self.state_file)!r} is not an IterativeCVLearning state; "
                             f"pass another path or delete it")  # fmt: skip
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state_file={str(self.state_file)!r} has layout {state.get('version')!r}, written by "
                             f"another mdcvkit version; this one reads layout {STATE_VERSION}: delete it to start "
                             f"afresh, or pass another path")  # fmt: skip
        mine = self._settings()
        for key, value in mine.items():
            if state["settings"].get(key) != value:
                raise ValueError(
                    f"state_file={str(self.state_file)!r} was written with {key}={state['settings'].get(key)!r} "
                    f"but this run has {key}={value!r}; use the same settings to resume, or another state_file"
                )
        return state

    # --- the loop ----------------------------------------------------------------------------------------
    def run(self):
        """Run the loop (or resume it from ``state_file``).

        Returns
        -------
        IterativeCVLearning
            ``self``, with ``results`` filled.

        Warns
        -----
        UserWarning
            When the effective sample size of an iteration's weights is below ``ess_threshold``.
        """
        if self.state_file is not None and self.state_file.exists():
            state = self._load()
            logger.info("resuming from %s after iteration %d", self.state_file, len(state["records"]) - 1)
        else:
            state = {"version": STATE_VERSION, "settings": self._settings(), "records": [], "models": [],
                     "positions": None, "last": None, "converged": False}  # fmt: skip
        self.n_resumed_ = len(state["records"])
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_iterations + 1, desc="FEBILAE", unit="iteration", initial=self.n_resumed_)
        try:
            while not state["converged"] and len(state["records"]) <= self.max_iterations:
                self._iteration(state)
                if self.state_file is not None:
                    self._save(state)
                if bar is not None:
                    last = state["records"][-1]
                    bar.set_postfix(regscore=f"{last['regscore']:.3f}", knn=f"{last['knn_regscore']:.3f}",
                                    ess=f"{last['ess']:.0f}")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        self._conclude(state)
        return self

    def _iteration(self, state):
        i = len(state["records"])
        seed = _iteration_seed(self.seed, i)
        if i == 0:
            (positions, last), log_w = self._sample_unbiased(seed), None
            target = None
            ess = float(len(positions))
            scores, threshold = {name: np.nan for name in CRITERIA}, np.nan
        else:
            previous = state["models"][-1]
            eabf, last = self._eabf(previous, self._grid(previous, state["positions"]), self.steps_per_iteration, seed,
                                    self._start(state))  # fmt: skip
            positions = eabf.results.samples.positions.values
            target = eabf_log_weights(eabf, self.weights)
            ess = _ess(target)
            if self.reweight and ess < self.ess_threshold * len(positions):
                warnings.warn(
                    f"iteration {i}: the weights collapsed: effective sample size {ess:.0f} of {len(positions)} "
                    f"frames ({ess / len(positions):.1%} < ess_threshold={self.ess_threshold}); sample longer "
                    f"(steps_per_iteration={self.steps_per_iteration}) or pass a smaller kappa",
                    stacklevel=3,
                )
            log_w = target if self.reweight else None
            if not self.reweight:
                ess = float(len(positions))
        features = self._features(positions)
        cv = self._train(features, log_w, seed)
        # weights of the frames in every score of this iteration; zero where the training gave none
        frame_weights = np.exp(log_w) if self.score_weights == "training" and log_w is not None else None
        if i > 0:
            before, after = _cv_values(previous, positions), _cv_values(cv, positions)
            scores = {name: score(before, after, weights=frame_weights) for name, score in CRITERIA.items()}
            threshold = self.min_score
            if threshold is None:  # sub-samples of the frames that carry weight
                usable = np.arange(len(positions)) if log_w is None else np.flatnonzero(np.isfinite(log_w))
                threshold, _ = regscore_threshold(
                    lambda idx: _cv_values(cv if idx is None else self._train(features, log_w, seed, usable[idx]),
                                           positions),
                    len(usable), n_bootstrap=self.n_bootstrap, seed=seed,
                    score=lambda a, b: CRITERIA[self.criterion](a, b, weights=frame_weights),
                )  # fmt: skip
        grid = self._grid(cv, positions)
        record = {
            **{RECORD_KEYS[name]: value for name, value in scores.items()}, "threshold": threshold,
            "reference_score": self._reference_score(cv, positions, frame_weights),
            "n_frames": len(positions), "ess": ess, "pmf": self._pmf(cv, positions, target, grid),
            "grid": [grid.centers(d) for d in range(grid.n_dim)],
        }  # fmt: skip
        logger.info("iteration %d: regscore %.4f, knn_regscore %.4f (%s threshold %.4f), reference score %.4f, "
                    "%d frames, ESS %.0f", i, scores["regscore"], scores["knn"], self.criterion, threshold,
                    record["reference_score"], len(positions), ess)  # fmt: skip
        state["records"].append(record)
        state["models"].append(cv)
        state["positions"] = positions.astype(np.float32)
        state["last"] = last
        passed = [r[RECORD_KEYS[self.criterion]] >= r["threshold"] for r in state["records"][1:]]
        state["converged"] = len(passed) >= self.patience and all(passed[-self.patience :])

    def _conclude(self, state):
        records = state["records"]
        n = len(records)
        data = {
            key: ("iteration", np.array([r[key] for r in records], dtype=float), {"long_name": name, "units": units})
            for key, name, units in (
                ("regscore", "regscore against the previous CV", "1"),
                ("knn_regscore", "kNN regscore against the previous CV", "1"),
                ("threshold", f"threshold of the {self.criterion} criterion", "1"),
                ("reference_score", "regscore of the reference against the CV", "1"),
                ("n_frames", "frames", "1"),
                ("ess", "effective sample size of the training weights", "frames"),
            )
        }  # fmt: skip
        bins = [f"bin{d}" for d in range(self.n_cv)]
        data["pmf"] = (("iteration", *bins), np.stack([r["pmf"] for r in records]),
                       {"long_name": "free energy along the iteration's CV", "units": "kJ/mol"})  # fmt: skip
        coords = {"iteration": np.arange(n)}
        for d, b in enumerate(bins):
            coords[f"xi{d}" if self.n_cv > 1 else "xi"] = (("iteration", b), np.stack([r["grid"][d] for r in records]),
                                                            {"long_name": "CV", "units": "CV spread"})  # fmt: skip
        self.results.iterations = xr.Dataset(data, coords=coords, attrs={"long_name": "FEBILAE iterations"})
        self.results.models = list(state["models"])
        self.results.cv = self.results.models[-1]
        self.results.converged = bool(state["converged"])
        self.results.production = self.results.production_log_weights = None
        if self.production_steps:
            cv = self.results.cv
            seed = _iteration_seed(self.seed, n)
            grid = self._grid(cv, state["positions"], self.production_grid_margin)
            eabf, _ = self._eabf(cv, grid, self.production_steps, seed, self._start(state), self.production_kappa)
            self.results.production = eabf.results
            self.results.production_log_weights = eabf_log_weights(eabf, self.weights)
