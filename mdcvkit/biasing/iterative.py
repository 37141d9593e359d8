"""FEBILAE: learn a CV, bias along it with eABF or OPES, reweight, retrain, until the CV stops changing.

References
----------
Z. Belkacemi, P. Gkeka, T. Lelièvre, G. Stoltz, "Chasing collective variables using autoencoders and
biased trajectories", J. Chem. Theory Comput. 18, 59 (2022) (FEBILAE).
A. Lesage, T. Lelièvre, G. Stoltz, J. Hénin, J. Phys. Chem. B 121, 3676 (2017) (eABF, CZAR).
M. Invernizzi, M. Parrinello, J. Phys. Chem. Lett. 11, 2731 (2020) (OPES).
"""

import dataclasses
import logging
import warnings
from collections.abc import Mapping

import numpy as np
import openmm
from MDAnalysis.analysis.base import Results

from .._checks import check_int, check_seed, openmm_seed
from .._io import as_path
from .._params import plain
from .._progress import progress_bar, resolve_verbose
from ..analysis import AutoencoderCV, CollectiveVariable
from ..export.openmm import NM_TO_ANGSTROM, positions_nm
from ..features import Featurizer, Positions
from ..metrics import knn_regscore, regscore, regscore_threshold
from ..models.averaging import affine_cv, average_autoencoders
from . import _febilae as pieces
from ._febilae import STATE_VERSION, cv_values, iteration_seed
from .bias import check_particles
from .eabf import MOLAR_GAS_CONSTANT, ExtendedABF, _check_kappa, _temperature_kelvin
from .grid import Grid
from .opes import OPES
from .reweight import eabf_log_weights, effective_sample_size, histogram_pmf, opes_log_weights
from .settings import Convergence, Sampling, as_settings

__all__ = ["IterativeCVLearning", "ESTIMATOR_DEFAULTS"]

logger = logging.getLogger(__name__)

#: scores that can decide convergence: name -> score(previous CV, new CV) on the same frames
CRITERIA = {"regscore": regscore, "knn": knn_regscore}
#: where each criterion's score is kept in an iteration's record (and in ``results.iterations``)
RECORD_KEYS = {"regscore": "regscore", "knn": "knn_regscore"}
#: AutoencoderCV settings of the default estimator, FEBILAE's: a 1-D CV, linear 2-1-2 on the toys, ELU
ESTIMATOR_DEFAULTS = {"n_cv": 1, "hidden": (), "activation": "elu", "max_epochs": 200}
#: estimator settings that the loop sets for every training (frames, weights, seeds): not the template's
PER_TRAINING = {"weights": None, "log_weights": None, "checkpoint": None, "seed": 0}


class IterativeCVLearning:
    """FEBILAE: iterate eABF (or OPES) along a learned CV, reweighting and retraining, until the CV converges.

    1. Sample ``sampling.steps`` unbiased steps from ``positions``; fit ``estimator`` on the frames; ξ₀
       is its CV.
    2. Iteration i ≥ 1: eABF along ξ_{i-1} (or OPES, ``sampling.sampler="opes"``) from where the previous
       run ended; the sampler's weights for the unbiased density, eABF's ``w_j ∝ exp(-β A_i(ξ_j)) / h_i(ξ_j)``
       (:func:`~mdcvkit.biasing.eabf_log_weights`; frames of weight zero left out) or OPES's
       ``w_j ∝ exp(β V_t(ξ_j))`` (:func:`~mdcvkit.biasing.opes_log_weights`); fit a fresh estimator with
       those ``log_weights``; ξ_i is its CV; ``regscore`` and ``knn_regscore`` between ξ_{i-1} and ξ_i on the
       frames of iteration i.
    3. Stop when the score of ``convergence.criterion`` has reached ``min_score`` in ``patience``
       successive iterations, or after ``max_iterations``; then an optional production run.

    Each CV is an ordinary :class:`~mdcvkit.analysis.CollectiveVariable`, standardised over its frames
    (folded into the encoder's last layer): grids and κ are in units of its spread. What the defaults
    rest on, measured on the toys and alanine dipeptide: findings page ``docs/findings/febilae.md``.

    Parameters
    ----------
    system : mdcvkit.systems.ToySystem or openmm.System
        A toy (its Brownian integrator, start and temperature are used) or an OpenMM System with
        ``positions`` and ``temperature``; never modified.
    featurizer : Featurizer or sequence of int, optional
        Positions ``(n_frames, n_atoms, 3)`` in Å -> features; particle indices give their
        :class:`~mdcvkit.features.Positions`. Default for a toy: ``Positions(1, axes=(0, 1))`` (x1, x2);
        required for an OpenMM System unless ``estimator`` holds one.
    estimator : AutoencoderCV or dict, optional
        The template of every training: an :class:`~mdcvkit.AutoencoderCV` whose settings are read back
        (:meth:`~mdcvkit.AutoencoderCV.get_params`: ``n_cv`` (1 or 2), ``model`` (any of the family),
        ``hidden``, ``activation``, trainer and model settings), or a dict of them laid over
        :data:`ESTIMATOR_DEFAULTS` (``n_cv=1, hidden=(), activation="elu", max_epochs=200``). Its atoms
        are ignored; its features are ``featurizer``; weights and seeds are the loop's.
    particles : sequence of int, optional
        System index of each featurizer atom; required unless the featurizer reads every particle.
    positions : array_like or openmm.unit.Quantity, shape (n_particles, 3), optional
        Start positions (nm if bare numbers); default the toy's start.
    temperature : float, optional
        K; default the toy's temperature.
    integrator : openmm.Integrator, optional
        At ``temperature``; default the toy's Brownian one, else LangevinMiddle (1/ps, 2 fs).
    sampling : Sampling or dict, optional
        Sampler (eABF or OPES), steps, grid, κ or barrier, bias route and stride, start, weights, production
        (:class:`Sampling`).
    convergence : Convergence or dict, optional
        Criterion, threshold, patience, iterations, bootstrap, score weights (:class:`Convergence`).
    n_models : int, default 1
        Models fitted per iteration (and per bootstrap sub-sample) from different initial weights and
        averaged into one CV (:func:`mdcvkit.models.average_autoencoders`); ``n_models`` times the cost.
    reference : callable, optional
        Positions (Å) -> ``(n_frames,)`` or ``(n_frames, k)``, e.g. ``toy.cv("x1")``; its regscore
        against each iteration's CV is reported.
    state_file : str or path-like, optional
        Written atomically after every iteration and resumed exactly; a resume with other settings is
        refused, naming each (``max_iterations``, ``patience``, production and ``ess_threshold`` may
        change). It holds pickled modules: load only files you wrote.
    seed : int, default 0
        Seeds sampling, training and the bootstrap; iteration i (and the production after the last)
        draws its own seed from ``numpy.random.SeedSequence([seed, i])``.
    verbose : bool or None, default None
        tqdm progress bar over iterations; None shows it when stderr is a terminal.

    Attributes
    ----------
    results : MDAnalysis.analysis.base.Results
        After :meth:`run`: ``iterations`` (Dataset over ``iteration``, 0 the unbiased one: ``regscore``,
        ``knn_regscore``, ``threshold``, ``reference_score``, ``n_frames``, ``ess`` (Kish effective
        sample size of the training weights, frames), ``pmf`` (kJ/mol, reweighted, along ``xi``)),
        ``models`` (``models[i]`` is ξ_i), ``cv`` (the last), ``converged``, ``production`` (the
        production run's results or None), ``production_log_weights``.
    n_resumed_ : int
        After :meth:`run`: iterations read from ``state_file`` rather than computed.

    Examples
    --------
    >>> toy = mk.systems.EntropicSwitch()                                              # doctest: +SKIP
    >>> loop = IterativeCVLearning(toy, estimator={"hidden": (8,)}, reference=toy.cv("x1"),
    ...                            convergence={"max_iterations": 5}).run()             # doctest: +SKIP
    >>> loop.results.iterations[["regscore", "reference_score", "ess"]]                # doctest: +SKIP
    """

    def __init__(self, system, featurizer=None, *, estimator=None, particles=None, positions=None,
                 temperature=None, integrator=None, sampling=None, convergence=None, n_models=1, reference=None,
                 state_file=None, seed=0, verbose=None):  # fmt: skip
        self.toy = None if isinstance(system, openmm.System) else system
        if self.toy is not None and not hasattr(self.toy, "system"):
            raise TypeError(f"system must be an openmm.System or a mdcvkit.systems toy, not {type(system).__name__}")
        self.system = system if self.toy is None else self.toy.system
        for name, value in (("positions", positions), ("temperature", temperature)):
            if value is None and self.toy is None:
                raise ValueError(f"{name}=None: pass the {name} of the OpenMM System (nm, K)")
        self.positions = positions_nm(self.toy.positions if positions is None else positions)
        self.temperature = _temperature_kelvin(self.toy.temperature if temperature is None else temperature)
        self.kT = MOLAR_GAS_CONSTANT * self.temperature
        self.sampling = as_settings(sampling, Sampling, "sampling")
        self.convergence = as_settings(convergence, Convergence, "convergence")
        if hasattr(estimator, "get_params"):
            params, self._estimator_class = dict(estimator.get_params()), type(estimator)
        elif estimator is None or isinstance(estimator, Mapping):
            params, self._estimator_class = {**ESTIMATOR_DEFAULTS, **(estimator or {})}, AutoencoderCV
        else:
            raise TypeError(f"estimator must be an AutoencoderCV or a dict of its settings, e.g. {{'model': 'vae'}}, "
                            f"not {type(estimator).__name__}")  # fmt: skip
        if featurizer is None and isinstance(params.get("features"), Featurizer):
            featurizer = params["features"]
        if featurizer is None:
            if self.toy is None:
                raise ValueError("featurizer=None: pass a Featurizer or the particle indices of the CV atoms")
            featurizer = Positions(1, names=["X"], axes=range(self.toy.n_dim))
        elif not isinstance(featurizer, Featurizer):
            particles = np.asarray(featurizer, dtype=np.int64).reshape(-1) if particles is None else particles
            featurizer = Positions(len(particles))
        self.featurizer = featurizer
        self.particles = check_particles(self.system, featurizer, particles, self.positions)
        if self.sampling.route == "expression":  # fail now, not after the unbiased run
            try:
                featurizer.to_openmm(self.particles)
            except ValueError as err:
                raise ValueError(f"route='expression' cannot compile this featurizer: {err}") from err
        names = list(getattr(featurizer, "names", None) or [])
        self._names = names if len(names) == featurizer.n_atoms else [f"A{k}" for k in range(featurizer.n_atoms)]
        self._params = {**params, "features": featurizer, **PER_TRAINING}
        # every estimator setting is checked now, on the start frame, not after the unbiased run
        start = self.positions[self.particles][None] * NM_TO_ANGSTROM
        self.estimator = self._estimator_class(pieces.memory_universe(start, self._names).atoms, **self._params)
        self._params = {**self.estimator.get_params(), **PER_TRAINING}  # every setting, read back
        self.n_cv = self.estimator.n_cv
        if self.n_cv not in (1, 2):
            raise ValueError(f"the estimator has n_cv={self.n_cv}; the loop's samplers take 1 or 2, e.g. {{'n_cv': 2}}")
        for name in ("kappa", "production_kappa"):
            if getattr(self.sampling, name) is not None:
                _check_kappa(getattr(self.sampling, name), self.n_cv, name)
        self.n_models = check_int(n_models, "n_models", 1)
        if reference is not None and not callable(reference):
            raise TypeError(f"reference must be a function of positions (n_frames, n_atoms, 3) in Å, e.g. "
                            f"toy.cv('x1'), not {type(reference).__name__}")
        resolve_verbose(verbose)  # checks its type
        self.reference, self.integrator, self.verbose = reference, integrator, verbose
        self.state_file = None if state_file is None else as_path(state_file, "state_file")
        self.seed = check_seed(seed)
        self.results = Results()

    # --- pieces ------------------------------------------------------------------------------------------
    def _integrator(self, seed):
        if self.integrator is None and self.toy is not None:
            return self.toy.integrator(seed)
        integrator = (openmm.LangevinMiddleIntegrator(self.temperature, 1.0, 0.002) if self.integrator is None
                      else openmm.XmlSerializer.clone(self.integrator))  # fmt: skip
        integrator.setRandomNumberSeed(openmm_seed(seed))
        return integrator

    def _sample_unbiased(self, seed):
        """Positions (Å) of the featurizer atoms every ``sample_frequency`` steps, and the last positions (nm)."""
        return pieces.sample_unbiased(self.system, self._integrator(seed), self.positions, self.temperature,
                                      self.particles, self.sampling.steps, self.sampling.sample_frequency, seed)

    def _fit(self, positions, log_w, seed):
        """The estimator fitted on ``positions`` (Å) with ``log_w``: a fresh one built from the template."""
        settings = {**self._params, "log_weights": log_w, "seed": seed}
        return self._estimator_class(pieces.memory_universe(positions, self._names).atoms, **settings).run()

    def _train(self, positions, log_w, seed, indices=None):
        """A fresh CV trained on ``positions`` (rows ``indices``), standardised over all of ``positions``:
        one model, or with ``n_models`` > 1 the average of several (:func:`average_autoencoders`)."""
        training = positions if indices is None else positions[indices]
        if log_w is not None:  # frames of zero weight (no CZAR estimate in their bin) take no part
            log_w = log_w if indices is None else log_w[indices]
            kept = np.isfinite(log_w)
            training, log_w = training[kept], log_w[kept]
        fits = [self._fit(training, log_w, seed if k == 0 else iteration_seed(seed, k)) for k in range(self.n_models)]
        members = [fit.results.model.model for fit in fits]
        model = members[0] if len(members) == 1 else average_autoencoders(members, fits[0].results.features, log_w)
        values = cv_values(CollectiveVariable(self.featurizer, model), positions)
        offset, scale = values.mean(axis=0), values.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        return CollectiveVariable(self.featurizer, affine_cv(model, np.diag(1 / scale), -offset / scale)).eval()

    def _grid(self, cv, positions, margin=None):
        """Sampler grid over the values of ``cv`` on ``positions`` (Å) and the start, widened by ``margin``."""
        values = [cv_values(cv, positions), cv_values(cv, self.positions[self.particles][None] * NM_TO_ANGSTROM)]
        if self.toy is not None:
            if not hasattr(self, "_region"):
                self._region = pieces.toy_region(self.toy, self.system.getNumParticles(), self.particles)
            values.append(cv_values(cv, self._region))
        values = np.concatenate(values)
        lower, upper = values.min(axis=0), values.max(axis=0)
        pad = (self.sampling.grid_margin if margin is None else margin) * (upper - lower) + 1e-6
        return Grid(lower - pad, upper + pad, [self.sampling.n_bins] * self.n_cv,
                    names=[f"cv{k}" for k in range(self.n_cv)])  # fmt: skip

    def _reference_score(self, cv, positions, frame_weights):
        if self.reference is None:
            return np.nan
        return regscore(cv_values(cv, positions), pieces.reference_values(self.reference, positions),
                        weights=frame_weights)  # fmt: skip

    def _biased(self, cv, grid, n_steps, seed, positions, kappa=None):
        """A run of ``sampling.sampler`` along ``cv`` from ``positions`` (nm), eABF's κ ``kappa`` (default the
        sampling's); the run and its last positions (nm)."""
        s = self.sampling
        kwargs = {"bias_stride": s.bias_stride} if s.bias_stride != 1 else {}
        common = {"particles": self.particles, "route": s.route, "integrator": self._integrator(seed),
                  "sample_frequency": s.sample_frequency, "store_positions": True, "seed": seed}  # fmt: skip
        if s.sampler == "opes":
            barrier = 10 * self.kT if s.barrier is None else s.barrier
            run = OPES(self.system, positions, cv, grid, barrier, self.temperature, pace=s.pace, **common, **kwargs)
        else:
            kappa = s.kappa if kappa is None else kappa
            kappa = self.kT / (2 * grid.width) ** 2 if kappa is None else kappa
            if self.toy is not None:
                kwargs["lambda_mass"] = self.toy.mass
            run = ExtendedABF(self.system, positions, cv, grid, kappa, self.temperature,
                              update_frequency=s.sample_frequency * max(1, 1000 // s.sample_frequency),
                              full_samples=s.full_samples, **common, **kwargs)  # fmt: skip
        run.run(n_steps)
        last = run.context.getState(getPositions=True).getPositions(asNumpy=True)._value
        return run, np.asarray(last[: self.system.getNumParticles()], dtype=float)  # without eABF's λ particle

    def _log_weights(self, run):
        """The sampler's own log-weights of a biased run's frames for the unbiased density."""
        if self.sampling.sampler == "opes":
            return opes_log_weights(run)
        return eabf_log_weights(run, self.sampling.weights)

    def _start(self, state):
        """Start positions (nm) of the next sampling run."""
        return state["last"] if self.sampling.start == "previous" and state.get("last") is not None else self.positions

    # --- state -------------------------------------------------------------------------------------------
    def _fingerprint(self):
        """Everything that determines the iterations (``max_iterations``, ``patience``, the production and the
        ESS warning may change on resume), as plain data."""
        params = {k: v for k, v in self._params.items()
                  if k not in (*PER_TRAINING, "features", "device", "chunk_size", "memory_budget")}
        default = "toy" if self.toy is not None else "LangevinMiddle 1/ps 2 fs"
        sampling, convergence = dataclasses.asdict(self.sampling), dataclasses.asdict(self.convergence)
        return plain({
            "estimator": {"class": self._estimator_class.__name__, **params},
            "featurizer": pieces.module_fingerprint(self.featurizer), "particles": self.particles,
            "n_models": self.n_models, "seed": self.seed, "reference": pieces.module_fingerprint(self.reference),
            "sampling": {k: v for k, v in sampling.items() if not k.startswith(("production", "ess"))},
            "convergence": {k: v for k, v in convergence.items() if k not in ("patience", "max_iterations")},
            "system": pieces.openmm_fingerprint(self.system, self.positions, self.temperature,
                                                default if self.integrator is None else self.integrator),
        })  # fmt: skip

    def _converged(self, records):
        patience = self.convergence.patience
        passed = [r[RECORD_KEYS[self.convergence.criterion]] >= r["threshold"] for r in records[1:]]
        return len(passed) >= patience and all(passed[-patience:])

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
            When the effective sample size of an iteration's weights is below ``sampling.ess_threshold``.
        """
        if self.state_file is not None and self.state_file.exists():
            state = pieces.load_state(self.state_file, self._fingerprint())
            state["converged"] = self._converged(state["records"])  # patience may differ from the writer's
            logger.info("resuming from %s after iteration %d", self.state_file, len(state["records"]) - 1)
        else:
            state = {"version": STATE_VERSION, "fingerprint": self._fingerprint(), "records": [], "models": [],
                     "positions": None, "last": None, "converged": False}  # fmt: skip
        self.n_resumed_ = len(state["records"])
        bar = progress_bar(total=self.convergence.max_iterations + 1, verbose=self.verbose, desc="FEBILAE",
                           unit="iteration", initial=self.n_resumed_)  # fmt: skip
        try:
            while not state["converged"] and len(state["records"]) <= self.convergence.max_iterations:
                self._iteration(state)
                if self.state_file is not None:
                    pieces.save_state(self.state_file, state)
                last = state["records"][-1]
                bar.set_postfix(regscore=f"{last['regscore']:.3f}", knn=f"{last['knn_regscore']:.3f}",
                                ess=f"{last['ess']:.0f}")  # fmt: skip
                bar.update(1)
        finally:
            bar.close()
        self._conclude(state)
        return self

    def _iteration(self, state):
        i, s, c = len(state["records"]), self.sampling, self.convergence
        seed = iteration_seed(self.seed, i)
        target = log_w = None
        if i == 0:
            positions, last = self._sample_unbiased(seed)
        else:
            previous = state["models"][-1]
            run, last = self._biased(previous, self._grid(previous, state["positions"]), s.steps, seed,
                                     self._start(state))  # fmt: skip
            positions = run.results.samples.positions.values
            target = self._log_weights(run)
            ess = effective_sample_size(target)
            if s.reweight and ess < s.ess_threshold * len(positions):
                warnings.warn(f"iteration {i}: the weights collapsed: effective sample size {ess:.0f} of "
                              f"{len(positions)} frames ({ess / len(positions):.1%} < ess_threshold="
                              f"{s.ess_threshold}); sample longer (steps={s.steps}) or pass a smaller kappa",
                              stacklevel=3)  # fmt: skip
            log_w = target if s.reweight else None
        ess = float(len(positions)) if log_w is None else ess
        cv = self._train(positions, log_w, seed)
        # weights of the frames in every score of this iteration; zero where the training gave none
        frame_weights = np.exp(log_w) if c.score_weights == "training" and log_w is not None else None
        scores, threshold = {name: np.nan for name in CRITERIA}, np.nan
        if i > 0:
            before, after = cv_values(previous, positions), cv_values(cv, positions)
            scores = {name: score(before, after, weights=frame_weights) for name, score in CRITERIA.items()}
            threshold = c.min_score
            if threshold is None:  # sub-samples of the frames that carry weight
                usable = np.arange(len(positions)) if log_w is None else np.flatnonzero(np.isfinite(log_w))
                threshold, _ = regscore_threshold(
                    lambda idx: cv_values(cv if idx is None else self._train(positions, log_w, seed, usable[idx]),
                                           positions),
                    len(usable), n_bootstrap=c.n_bootstrap, seed=seed,
                    score=lambda a, b: CRITERIA[c.criterion](a, b, weights=frame_weights),
                )  # fmt: skip
        grid = self._grid(cv, positions)
        record = {
            **{RECORD_KEYS[name]: value for name, value in scores.items()}, "threshold": threshold,
            "reference_score": self._reference_score(cv, positions, frame_weights),
            "n_frames": len(positions), "ess": ess,
            "pmf": histogram_pmf(cv_values(cv, positions), target, grid, self.kT),
            "grid": [grid.centers(d) for d in range(grid.n_dim)],
        }  # fmt: skip
        logger.info("iteration %d: regscore %.4f, knn_regscore %.4f (%s threshold %.4f), reference score %.4f, "
                    "%d frames, ESS %.0f", i, scores["regscore"], scores["knn"], c.criterion, threshold,
                    record["reference_score"], len(positions), ess)  # fmt: skip
        state["records"].append(record)
        state["models"].append(cv)
        state["positions"] = positions.astype(np.float32)
        state["last"] = last
        state["converged"] = self._converged(state["records"])

    def _conclude(self, state):
        records, n = state["records"], len(state["records"])
        self.results.iterations = pieces.iterations_dataset(records, self.convergence.criterion, self.n_cv)
        self.results.models = list(state["models"])
        self.results.cv = self.results.models[-1]
        self.results.converged = bool(state["converged"])
        self.results.production = self.results.production_log_weights = None
        s = self.sampling
        if s.production_steps:
            cv = self.results.cv
            margin = s.grid_margin if s.production_grid_margin is None else s.production_grid_margin
            grid = self._grid(cv, state["positions"], margin)
            run, _ = self._biased(cv, grid, s.production_steps, iteration_seed(self.seed, n), self._start(state),
                                  s.production_kappa)  # fmt: skip
            self.results.production = run.results
            self.results.production_log_weights = self._log_weights(run)
