"""Settings of the FEBILAE loop, in two small groups: how each iteration samples, and when the loop stops.

:class:`Sampling` and :class:`Convergence` are frozen dataclasses checked on construction, so a bad
setting fails before any simulation runs. What the defaults rest on, and what was measured with other
values, is in ``docs/findings/febilae.md``.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .._checks import check_int, check_number
from ..export.openmm import check_route
from .eabf import _check_kappa
from .reweight import ESTIMATORS

__all__ = ["Sampling", "Convergence", "CRITERIA", "SCORE_WEIGHTS", "STARTS", "SAMPLERS", "as_settings"]

#: scores that can decide convergence (their functions: :data:`mdcvkit.biasing.iterative.CRITERIA`)
CRITERIA = ("knn", "regscore")
#: how the frames of an iteration count in its scores: as in training, or each frame as sampled
SCORE_WEIGHTS = ("training", "uniform")
#: where each biased run starts: where the previous run ended, or from the loop's start positions
STARTS = ("previous", "initial")
#: samplers of the biased runs: extended ABF (:class:`~mdcvkit.biasing.ExtendedABF`) or :class:`~mdcvkit.biasing.OPES`
SAMPLERS = ("eabf", "opes")


def _check_fraction(value, name, upper=np.inf, example="0.1"):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value < upper:
        bound = "a non-negative fraction of the span" if upper == np.inf else f"a fraction in [0, {upper:g})"
        raise ValueError(f"{name}={value!r} must be {bound}, e.g. {name}={example}")
    return float(value)


def _check_choice(value, name, choices, meaning):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {list(choices)}: {meaning}")


@dataclass(frozen=True)
class Sampling:
    """How each FEBILAE iteration samples, weights its frames, and how the production run samples.

    Every CV of the loop is standardised (zero mean, unit variance over its training frames), so grids
    and κ are in units of its spread.

    Parameters
    ----------
    sampler : {"eabf", "opes"}, default "eabf"
        How each iteration (and the production) biases the previous CV: extended ABF
        (:class:`~mdcvkit.biasing.ExtendedABF`, weights :func:`~mdcvkit.biasing.eabf_log_weights`) or
        OPES (:class:`~mdcvkit.biasing.OPES` with ``barrier``, ``pace`` and an adaptive kernel width,
        weights :func:`~mdcvkit.biasing.opes_log_weights`). The eABF settings (``kappa``,
        ``full_samples``, ``weights``, ``production_kappa``) do not act on OPES, nor the OPES settings on eABF.
    steps : int, default 1_000_000
        Integration steps of each sampling run (the unbiased one and each biased run).
    sample_frequency : int, default 50
        Steps between stored frames; ``steps`` must give at least 10 frames.
    n_bins : int, default 50
        Bins per CV component of the eABF grid.
    grid_margin : float, default 0.05
        Fraction of the span of the previous frames' CV values (and, for a toy, of its region below
        15 kT) added to the eABF grid on each side: how far beyond the region already seen an
        iteration can push (eABF flattens the free energy only inside its grid).
    kappa : float or sequence of float, optional
        eABF coupling in kJ/mol per (CV spread)², one or ``n_cv`` values; default ``kT / (2 Δ)²`` for
        a bin width Δ.
    full_samples : int, default 100
        Samples per bin before the full ABF force applies (:class:`~mdcvkit.biasing.ExtendedABF`).
    bias_stride : int, default 1
        Steps between evaluations of the CV coupling force (multiple time stepping, passed to
        :class:`~mdcvkit.biasing.ExtendedABF`; needs a Langevin integrator); must divide
        ``sample_frequency``.
    barrier : float, optional
        OPES's ``BARRIER`` (as in PLUMED) in kJ/mol; default 10 kT.
    pace : int, default 500
        OPES's ``PACE``: steps between kernel depositions; a multiple of ``sample_frequency``.
    route : {"auto", "expression", "python", "torch"}, default "auto"
        How the sampler puts each CV into OpenMM (:func:`mdcvkit.biasing.add_cv_bias`).
    start : {"previous", "initial"}, default "previous"
        Where each eABF run (and the production) starts: where the previous run ended, so that the
        iterations form one trajectory whose bias is renewed, or from the loop's start positions.
    reweight : bool, default True
        Train on frames weighted for the unbiased density by the sampler's own weights
        (:func:`~mdcvkit.biasing.eabf_log_weights` or :func:`~mdcvkit.biasing.opes_log_weights`);
        False trains on the biased frames as they are.
    weights : {"abf", "czar"}, default "abf"
        Free-energy estimate behind the eABF weights of the iterations and of the production.
    ess_threshold : float, default 0.05
        Warn when the effective sample size of an iteration's weights is below this fraction of its
        frames.
    production_steps : int, default 0
        Steps of a final eABF run along the last CV (none by default).
    production_grid_margin : float, optional
        ``grid_margin`` of the production run; default ``grid_margin``.
    production_kappa : float or sequence of float, optional
        κ of the production run in kJ/mol per (CV spread)²; default ``kappa``.

    Raises
    ------
    ValueError
        Naming the setting, its value and a valid one, for any setting out of range.
    """

    sampler: str = "eabf"
    steps: int = 1_000_000
    sample_frequency: int = 50
    n_bins: int = 50
    grid_margin: float = 0.05
    kappa: object = None
    full_samples: int = 100
    bias_stride: int = 1
    barrier: object = None
    pace: int = 500
    route: str = "auto"
    start: str = "previous"
    reweight: bool = True
    weights: str = "abf"
    ess_threshold: float = 0.05
    production_steps: int = 0
    production_grid_margin: object = None
    production_kappa: object = None

    def __post_init__(self):
        for name, low in (("steps", 1), ("sample_frequency", 1), ("n_bins", 2), ("full_samples", 1),
                          ("bias_stride", 1), ("production_steps", 0)):  # fmt: skip
            object.__setattr__(self, name, check_int(getattr(self, name), name, low))
        _check_choice(self.sampler, "sampler", SAMPLERS, "'eabf' (extended ABF) or 'opes' (OPES)")
        object.__setattr__(self, "pace", check_int(self.pace, "pace", 1, "pass the steps between OPES kernel "
                                                   "depositions (PLUMED's PACE), e.g. pace=500"))  # fmt: skip
        if self.sampler == "opes" and self.pace % self.sample_frequency:
            raise ValueError(f"pace={self.pace} must be a multiple of sample_frequency={self.sample_frequency}: OPES "
                             f"samples its bias between depositions; pass e.g. pace="
                             f"{self.sample_frequency * max(1, self.pace // self.sample_frequency)}")  # fmt: skip
        if self.barrier is not None:
            object.__setattr__(self, "barrier", check_number("barrier", self.barrier, strict=True, example="25.0"))
        if self.sample_frequency % self.bias_stride:
            raise ValueError(f"bias_stride={self.bias_stride} must divide sample_frequency={self.sample_frequency}: "
                             f"frames are stored between bias evaluations; pass e.g. sample_frequency="
                             f"{self.bias_stride * max(1, self.sample_frequency // self.bias_stride)}")  # fmt: skip
        if self.steps < 10 * self.sample_frequency:
            raise ValueError(f"steps={self.steps} gives fewer than 10 frames with sample_frequency="
                             f"{self.sample_frequency}; sample longer or more often")  # fmt: skip
        object.__setattr__(self, "grid_margin", _check_fraction(self.grid_margin, "grid_margin"))
        if self.production_grid_margin is not None:
            object.__setattr__(self, "production_grid_margin",
                               _check_fraction(self.production_grid_margin, "production_grid_margin"))  # fmt: skip
        for name in ("kappa", "production_kappa"):
            value = getattr(self, name)
            if value is not None:  # one value or one per CV component (eABF takes 1 or 2)
                n = np.size(value) if np.size(value) in (1, 2) and not isinstance(value, (str, bool)) else 1
                object.__setattr__(self, name, tuple(float(k) for k in _check_kappa(value, n, name)))
        check_route(self.route)
        _check_choice(self.start, "start", STARTS, "'previous' (continue from the last run) or 'initial'")
        if not isinstance(self.reweight, (bool, np.bool_)):
            raise ValueError(f"reweight={self.reweight!r} must be True or False")
        _check_choice(self.weights, "weights", ESTIMATORS,
                      "the free-energy estimate behind the weights (see eabf_log_weights)")  # fmt: skip
        object.__setattr__(self, "ess_threshold", _check_fraction(self.ess_threshold, "ess_threshold", 1, "0.05"))

    def replace(self, **changes):
        """A copy with ``changes`` applied (checked like a new instance)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Convergence:
    """When the FEBILAE loop stops: a score between successive CVs passing a threshold, ``patience`` times.

    Parameters
    ----------
    criterion : {"regscore", "knn"}, default "regscore"
        Which score between successive CVs decides; both are reported. "regscore" is FEBILAE's (the new
        CV an affine function of the previous one, :func:`mdcvkit.metrics.regscore`); "knn" asks only for
        a smooth invertible map (:func:`mdcvkit.metrics.knn_regscore`), what a 2-D latent is defined up to.
    min_score : float, optional
        Score at which an iteration passes; default the bootstrap threshold of each iteration
        (:func:`mdcvkit.metrics.regscore_threshold`: ``n_bootstrap`` CVs trained on 10 % of the frames
        that carry weight, 5th percentile of their scores against the CV trained on all). Pass 1.0 to
        run all ``max_iterations``.
    patience : int, default 2
        Successive biased iterations that must pass before the loop stops (FEBILAE: 1). A high score
        also means a stalled loop, whose run along the old CV found nothing new.
    max_iterations : int, default 10
        Biased iterations at most (≥ 1).
    n_bootstrap : int, default 10
        Sub-sample CVs of the default ``min_score``.
    score_weights : {"training", "uniform"}, default "training"
        How the frames of an iteration count in its scores (``regscore``, ``knn_regscore``, the
        bootstrap threshold and ``reference_score``): with the weights the CV was trained with, or each
        frame as sampled.

    Raises
    ------
    ValueError
        Naming the setting, its value and a valid one, for any setting out of range.
    """

    criterion: str = "regscore"
    min_score: object = None
    patience: int = 2
    max_iterations: int = 10
    n_bootstrap: int = 10
    score_weights: str = "training"

    def __post_init__(self):
        _check_choice(self.criterion, "criterion", CRITERIA,
                      "'regscore' (FEBILAE's affine test) or 'knn' (the same CV up to a smooth invertible map)")
        if self.min_score is not None:
            if isinstance(self.min_score, bool) or not isinstance(self.min_score, (int, float, np.number)) \
                    or not -np.inf < self.min_score <= 1:
                raise ValueError(f"min_score={self.min_score!r} must be a regscore <= 1, e.g. 0.99, or None")
            object.__setattr__(self, "min_score", float(self.min_score))
        for name in ("patience", "max_iterations", "n_bootstrap"):
            object.__setattr__(self, name, check_int(getattr(self, name), name, 1))
        _check_choice(self.score_weights, "score_weights", SCORE_WEIGHTS,
                      "'training' (frames weighted as in training) or 'uniform' (each frame as sampled)")

    def replace(self, **changes):
        """A copy with ``changes`` applied (checked like a new instance)."""
        return dataclasses.replace(self, **changes)


def as_settings(value, cls, name):
    """``value`` as a ``cls`` (:class:`Sampling` or :class:`Convergence`): None gives the defaults, a dict its fields.

    Raises
    ------
    TypeError
        When ``value`` is neither None, a ``cls`` nor a dict.
    ValueError
        When the dict holds a key that is not a setting of ``cls`` (naming them all), or a bad value.
    """
    if value is None or isinstance(value, cls):
        return cls() if value is None else value
    if isinstance(value, Mapping):
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValueError(f"{name}={dict(value)!r}: {unknown} not among its settings; its settings are {fields}")
        return cls(**value)
    raise TypeError(f"{name} must be a {cls.__name__} or a dict of its settings, not {type(value).__name__}")
