"""Committor learning with adaptive importance sampling: the loop, its state file, and its results.

References
----------
G. M. Rotskoff, A. R. Mitchell, E. Vanden-Eijnden, Proceedings of Machine Learning Research 145, 757
(2022) (active importance sampling of the committor).
"""

import dataclasses
import logging
import time
from collections.abc import Mapping

import numpy as np
import openmm
import openmm.unit as unit
import torch
from MDAnalysis.analysis.base import Results
from scipy.special import expit

from ..._checks import check_int, check_number, check_seed, openmm_seed
from ..._io import as_path
from ..._params import plain
from ..._progress import progress_bar, resolve_verbose
from ...analysis import CollectiveVariable
from ...export.openmm import NM_TO_ANGSTROM, positions_nm
from ...features import Featurizer, Positions
from ...training import Trainer
from .._febilae import iteration_seed, load_state, module_fingerprint, openmm_fingerprint, save_state
from ..bias import bias_integrator, check_particles, default_platform
from ..eabf import MOLAR_GAS_CONSTANT, _temperature_kelvin
from ..reweight import effective_sample_size
from . import results as outputs
from .model import IN_A, IN_B, NEITHER, CommittorModel, fit_committor
from .sampling import CommittorOPES, UmbrellaWindows

__all__ = ["Committor"]

logger = logging.getLogger(__name__)

#: version of the state-file layout (2: q of every model on every frame, ``data["q"]``)
STATE_VERSION = 2
#: Trainer settings of every fit of the committor (a dict passed as ``trainer`` is laid over them)
TRAINER_DEFAULTS = {"max_epochs": 200, "patience": 20, "learning_rate": 3e-3, "batch_size": 512}


def _sampling(sampling):
    """The loop's sampler: an UmbrellaWindows or CommittorOPES, or one from a dict of settings (``sampler``:
    ``"umbrella"``, the default, or ``"opes"``)."""
    if isinstance(sampling, (UmbrellaWindows, CommittorOPES)):
        return sampling
    if sampling is not None and not isinstance(sampling, Mapping):
        raise TypeError(f"sampling must be an UmbrellaWindows, a CommittorOPES or a dict of settings, not "
                        f"{type(sampling).__name__}")  # fmt: skip
    settings = dict(sampling or {})
    kind = settings.pop("sampler", "umbrella")
    samplers = {"umbrella": UmbrellaWindows, "opes": CommittorOPES}
    if kind not in samplers:
        raise ValueError(f"sampling['sampler']={kind!r} is not a sampler of the committor loop; pass 'umbrella' "
                         f"(windows along logit q, MBAR) or 'opes' (OPES along logit q)")  # fmt: skip
    return samplers[kind](**settings)


class _Engine:
    """Simulations of the loop: the System, its integrators and contexts, the basins."""

    def __init__(self, toy, system, particles, temperature, integrator, state_a, state_b):
        self.toy, self.system, self.particles = toy, system, particles
        self.temperature, self.kT = temperature, MOLAR_GAS_CONSTANT * temperature
        self.template, self.state_a, self.state_b = integrator, state_a, state_b
        if integrator is not None and hasattr(integrator, "getFriction"):  # the dynamics run: its friction, 1/ps
            self.friction = integrator.getFriction().value_in_unit(unit.picosecond**-1)
        else:
            self.friction = toy.friction if toy is not None else 1.0
        self.masses = np.array([system.getParticleMass(int(p))._value for p in particles])
        dynamics = self.integrator(1, system)
        self.brownian = isinstance(dynamics, openmm.BrownianIntegrator)
        self.step_size = dynamics.getStepSize().value_in_unit(unit.picosecond)

    def lag_time(self, lag):
        """τ in ps of ``lag`` steps."""
        return lag * self.step_size

    def integrator(self, seed, system=None, bias=None):
        if self.toy is not None and self.template is None:
            return self.toy.integrator(seed)
        if self.template is None:  # LangevinMiddle, 1/ps, 2 fs (the bias, if any, every step)
            integrator = bias_integrator(system or self.system, bias, self.temperature)
        else:
            integrator = openmm.XmlSerializer.clone(self.template)
        integrator.setRandomNumberSeed(openmm_seed(seed))
        return integrator

    def context(self, system, integrator):
        return openmm.Context(system, integrator, default_platform(system.getNumParticles()))

    def labels(self, positions_nm):
        """Basin of each frame: 0 in A, 1 in B, −1 in neither."""
        angstrom = np.asarray(positions_nm, dtype=np.float32) * NM_TO_ANGSTROM
        in_a, in_b = self.state_a(angstrom), self.state_b(angstrom)
        if np.any(in_a & in_b):
            raise ValueError(f"{int(np.sum(in_a & in_b))} frames lie in both state_a and state_b; basins must not "
                             "overlap: narrow their ranges")
        return np.where(in_a, IN_A, np.where(in_b, IN_B, NEITHER)).astype(np.int8)


class Committor:
    """Learn the committor q(x) of A → B with umbrella windows along logit q, MBAR and the variational loss.

    0. Unbiased frames from each start in ``starts`` (one in A and one in B at least) train q₀.
    1. Iteration i ≥ 1: umbrella windows along z = logit q_{i−1} (``sampling``), each frame ``X_0`` followed by
       an unbiased trajectory to ``X_τ``; the windows of all iterations are recombined by MBAR; q_i is
       fitted from q_{i−1} on every window frame with its MBAR weight (:func:`fit_committor`); windows
       are added where neighbours overlap poorly.
    2. Stop when the RMS change of q on the iteration's frames is below ``tolerance``, or after
       ``max_iterations``.

    Parameters
    ----------
    system : mdcvkit.systems.ToySystem or openmm.System
        A toy (its Brownian integrator and temperature are used) or an OpenMM System; never modified.
    featurizer : Featurizer, optional
        Positions of the ``particles`` (Å) -> features; default for a toy ``Positions(1, axes=(0, 1))``.
    state_a, state_b : callable
        Positions of all particles ``(n_frames, n_particles, 3)`` in Å -> bool array (n_frames,), e.g.
        :class:`~mdcvkit.biasing.Basin`.
    starts : sequence of array_like
        Start positions (nm, all particles), at least one in A and one in B.
    particles : sequence of int, optional
        System index of each featurizer atom; default all particles.
    temperature : float, optional
        K; default the toy's (required for an OpenMM System).
    integrator : openmm.Integrator, optional
        Default the toy's Brownian one, else LangevinMiddle (1/ps, 2 fs).
    sampling : UmbrellaWindows, CommittorOPES or dict, optional
        The sampler and its settings; a dict of settings with ``"sampler"``: ``"umbrella"`` (default,
        windows along logit q recombined by MBAR) or ``"opes"`` (OPES along logit q, its own weights).
    model : dict, optional
        Settings of :class:`CommittorModel` (``hidden``, ``activation``, ``boundary_weight``).
    trainer : dict, optional
        Settings of :class:`~mdcvkit.training.Trainer` laid over :data:`TRAINER_DEFAULTS`.
    max_iterations : int, default 5
    tolerance : float, default 0.02
        RMS change of q between iterations below which the loop stops.
    state_file : str or path-like, optional
        Written atomically after every iteration and resumed; another setting is refused by name
        (``max_iterations`` and ``tolerance`` may change). It holds pickled tensors: load only yours.
    seed : int, default 0
    verbose : bool or None, default None
        Progress bar over iterations; None shows it when stderr is a terminal.

    Attributes
    ----------
    results.committor : CollectiveVariable
        The last committor, positions (Å) -> q, shape (n_frames, 1).
    results.models : list of CollectiveVariable
        q_i of every iteration.
    results.iterations : xarray.Dataset
        Over ``iteration``: ``n_frames``, ``n_windows``, ``rms_change``, ``min_overlap``, ``ess``, ``loss``,
        and the wall time (s) of each stage: ``time_sampling``, ``time_mbar``, ``time_training``.
    results.frames : xarray.Dataset
        Over ``frame`` (window frames of iterations ≥ 1): ``q``, ``log_weight`` (MBAR), ``label``,
        ``target``, ``iteration``, and ``positions`` (Å, all particles).
    results.windows : xarray.Dataset
        Over ``state``: ``target``, ``kappa`` (kJ/mol), ``iteration``, ``free_energy`` (kT).
    results.overlap : numpy.ndarray
        MBAR overlap matrix of the last iteration's windows.

    Examples
    --------
    >>> toy = mk.systems.DoubleWell2D(barrier=2.0)                                       # doctest: +SKIP
    >>> a, b = Basin(toy.cv("x1"), -5, -0.9), Basin(toy.cv("x1"), 0.9, 5)                 # doctest: +SKIP
    >>> loop = Committor(toy, state_a=a, state_b=b, starts=[toy.positions, -toy.positions]).run()  # doctest: +SKIP
    >>> loop.rate()["rate"]                                                                # doctest: +SKIP
    """

    def __init__(self, system, featurizer=None, *, state_a, state_b, starts, particles=None, temperature=None,
                 integrator=None, sampling=None, model=None, trainer=None, max_iterations=5, tolerance=0.02,
                 state_file=None, seed=0, verbose=None):  # fmt: skip
        self.toy = None if isinstance(system, openmm.System) else system
        if self.toy is not None and not hasattr(self.toy, "system"):
            raise TypeError(f"system must be an openmm.System or a mdcvkit.systems toy, not {type(system).__name__}")
        self.system = system if self.toy is None else self.toy.system
        if temperature is None and self.toy is None:
            raise ValueError("temperature=None: pass the temperature of the OpenMM System (K)")
        self.temperature = _temperature_kelvin(self.toy.temperature if temperature is None else temperature)
        if featurizer is None and self.toy is None:
            raise ValueError("featurizer=None: pass a Featurizer of the committor's input atoms")
        self.featurizer = Positions(1, axes=range(self.toy.n_dim)) if featurizer is None else featurizer
        if not isinstance(self.featurizer, Featurizer):
            raise TypeError(f"featurizer must be a mdcvkit Featurizer, not {type(featurizer).__name__}")
        for name, basin in (("state_a", state_a), ("state_b", state_b)):
            if not callable(basin):
                raise TypeError(f"{name} must be a function of positions (Å) -> bool, e.g. Basin(cv, lower, upper)")
        if isinstance(starts, np.ndarray) and starts.ndim == 2 or not starts or len(starts) < 2:
            raise ValueError("starts must be a list of at least two start positions (nm): one in A and one in B")
        self.starts = [positions_nm(s, "starts") for s in starts]
        self.particles = check_particles(self.system, self.featurizer, particles, self.starts[0])
        self.sampling = _sampling(sampling)
        if model is not None and not isinstance(model, Mapping):
            raise TypeError(f"model must be a dict of CommittorModel settings, not {type(model).__name__}")
        self.model = dict(model or {})
        self.seed = check_seed(seed)
        torch.manual_seed(self.seed)  # the template's initial weights, as AutoencoderCV seeds its model
        self._template = CommittorModel(self.featurizer.n_features, **self.model,
                                        scale_groups=getattr(self.featurizer, "scale_groups", None))
        self.trainer = {**TRAINER_DEFAULTS, **(trainer or {})}
        self.max_iterations = check_int(max_iterations, "max_iterations", 1)
        self.tolerance = check_number("tolerance", tolerance, strict=True, example="0.02")
        self.state_file = None if state_file is None else as_path(state_file, "state_file")
        resolve_verbose(verbose)  # checks its type
        self.verbose = verbose
        self.engine = _Engine(self.toy, self.system, self.particles, self.temperature, integrator, state_a, state_b)
        self.integrator = integrator
        labels = self.engine.labels(np.stack(self.starts))
        if not (np.any(labels == IN_A) and np.any(labels == IN_B)):
            raise ValueError(f"the starts lie in basins {labels.tolist()} (0 A, 1 B, -1 neither); pass at least one "
                             "start in A and one in B")
        self.results = Results()

    # --- pieces ------------------------------------------------------------------------------------------
    def _features(self, positions_nm):
        angstrom = torch.as_tensor(np.asarray(positions_nm)[:, self.particles] * NM_TO_ANGSTROM, dtype=torch.float32)
        with torch.no_grad():
            return self.featurizer(angstrom).numpy()

    def _cv(self, model):
        return CollectiveVariable(self.featurizer, model).eval()

    @staticmethod
    def _q(model, features):
        """q in float64 from the network's float32 logit, so that ``logit(q)`` gives z back in the basins."""
        with torch.no_grad():
            return expit(model.logit(torch.as_tensor(features, dtype=torch.float32))[:, 0].double().numpy())

    def _add(self, state, samples, iteration):
        """Append a sample's frames to ``state["data"]``, with q of every model so far on them."""
        data = state["data"]
        features = self._features(samples["positions"])
        q = np.empty((len(features), len(state["models"])))
        for k, model in enumerate(state["models"]):
            q[:, k] = self._q(model, features)
        new = {"positions": samples["positions"], "features": features, "q": q,
               "lagged": self._features(samples["lagged"]), "labels": self.engine.labels(samples["positions"]),
               "lagged_labels": self.engine.labels(samples["lagged"]),
               "log_weight": samples.get("log_weight", np.full(len(features), np.nan)),
               "state": samples["window"] + len(state["states"]) if iteration else -np.ones_like(samples["window"]),
               "iteration": np.full(len(samples["window"]), iteration)}  # fmt: skip
        for key, value in new.items():
            data[key] = value if key not in data else np.concatenate([data[key], value])

    def _add_model(self, state, model):
        """Append ``model`` to ``state["models"]``, and its q on every frame to ``state["data"]["q"]``."""
        data = state["data"]
        data["q"] = np.column_stack([data["q"], self._q(model, data["features"])])
        state["models"].append(model)

    def _fit(self, state, mask, log_w, seed):
        d = state["data"]
        start = self._template if not state["models"] else state["models"][-1]
        trainer = Trainer(**{**self.trainer, "seed": seed})
        return fit_committor(start, d["features"][mask], d["lagged"][mask], d["labels"][mask],
                             d["lagged_labels"][mask], log_w, trainer)

    def _starts(self, state, targets, seed):
        """For each target, a frame (nm) whose q under the last model is among the three nearest to it."""
        d = state["data"]
        q = d["q"][:, -1]
        rng = np.random.default_rng(seed)
        return [d["positions"][rng.choice(np.argsort(np.abs(q - t))[:3])].astype(float) for t in targets]

    # --- state -------------------------------------------------------------------------------------------
    def _fingerprint(self):
        default = "toy" if self.toy is not None else "LangevinMiddle 1/ps 2 fs"
        return plain({
            "featurizer": module_fingerprint(self.featurizer), "particles": self.particles,
            "basins": [outputs.basin_fingerprint(b) for b in (self.engine.state_a, self.engine.state_b)],
            "starts": [s.tolist() for s in self.starts],
            "sampling": {"sampler": type(self.sampling).__name__, **dataclasses.asdict(self.sampling)},
            "model": self._template.get_params(), "trainer": self.trainer, "seed": self.seed,
            "system": openmm_fingerprint(self.system, self.starts[0], self.temperature,
                                         default if self.integrator is None else self.integrator),
        })  # fmt: skip

    # --- the loop ----------------------------------------------------------------------------------------
    def run(self):
        """Run the loop (or resume it from ``state_file``).

        Returns
        -------
        Committor
            ``self``, with ``results`` filled.

        Raises
        ------
        ValueError
            When a basin is never reached, basins overlap, or MBAR does not converge.
        """
        if self.state_file is not None and self.state_file.exists():
            state = load_state(self.state_file, self._fingerprint(), "Committor", STATE_VERSION)
            logger.info("resuming from %s after iteration %d", self.state_file, len(state["records"]) - 1)
        else:
            state = {"kind": "mdcvkit.Committor", "version": STATE_VERSION, "fingerprint": self._fingerprint(),
                     "records": [], "models": [], "states": [], "data": {}, "extra": [], "log_w": None,
                     "overlap": None, "free_energies": None}  # fmt: skip
        first = len(state["records"])
        bar = progress_bar(range(first, self.max_iterations + 1), verbose=self.verbose, desc="committor",
                           unit="iteration", initial=first, total=self.max_iterations + 1)
        for i in bar:
            if i > 1 and state["records"][-1]["rms_change"] < self.tolerance:
                break
            self._iteration(state, i, iteration_seed(self.seed, i))
            bar.set_postfix(rms_change=f"{state['records'][-1]['rms_change']:.3g}")
            if self.state_file is not None:
                save_state(self.state_file, state)
        self._state = state
        outputs.conclude(self, state)
        return self

    def _iteration(self, state, i, seed):
        s = self.sampling
        clock = [time.perf_counter()]
        if i == 0:
            samples = s.sample(self.engine, None, np.full(len(self.starts), 0.5), self.starts, seed, kappa=0.0)
            self._add(state, samples, 0)
            clock.append(time.perf_counter())
            mask = state["data"]["iteration"] == 0
            log_w = np.zeros(int(mask.sum()))
        else:
            targets = np.sort(np.concatenate([s.targets(), state["extra"]]))
            samples = s.sample(self.engine, self._cv(state["models"][-1]), targets, self._starts(state, targets, seed),
                               seed)
            self._add(state, samples, i)
            clock.append(time.perf_counter())
            state["states"] += [(i, float(t), samples["kappa"]) for t in targets]
            mask = state["data"]["iteration"] > 0
            log_w, state["free_energies"], overlap = s.log_weights(state, self.engine.kT)
            state["log_w"] = log_w
            if overlap is not None:  # umbrella windows: the overlap of this iteration's windows
                now = slice(len(state["states"]) - len(targets), None)
                state["overlap"] = overlap[now, now]
                state["extra"] = sorted(set(state["extra"]) | set(s.windows_to_add(targets, state["overlap"])))
        labels = np.concatenate([state["data"]["labels"][mask], state["data"]["lagged_labels"][mask]])
        for basin, name in ((IN_A, "state_a"), (IN_B, "state_b")):
            if not np.any(labels == basin):
                raise ValueError(f"no frame of iteration {i} reached {name}: check that the basin holds the starts "
                                 f"and the windows, or widen it")
        clock.append(time.perf_counter())
        model, history = self._fit(state, mask, log_w, seed)
        clock.append(time.perf_counter())
        self._add_model(state, model)
        now = state["data"]["iteration"] == i
        q = state["data"]["q"][now]
        change = np.sqrt(np.mean((q[:, -1] - q[:, -2]) ** 2)) if i > 0 else np.inf
        state["records"].append({
            "n_frames": int(mask.sum()), "n_windows": int(len(np.unique(state["data"]["state"][now]))),
            "rms_change": float(change), "ess": effective_sample_size(log_w),
            "min_overlap": float(np.min(np.diag(state["overlap"], 1)))
            if i > 0 and state["overlap"] is not None and len(state["overlap"]) > 1
            else np.nan, "loss": float(history["validation"].min()),
            **{f"time_{k}": b - a
               for k, a, b in zip(("sampling", "mbar", "training"), clock[:-1], clock[1:], strict=True)}})
        logger.info("iteration %d: %d frames, RMS change of q %.4f", i, mask.sum(), change)

    # --- outputs -----------------------------------------------------------------------------------------
    def rate(self, n_bootstrap=100, confidence=0.95, seed=0, flux="auto"):
        """Rate constant k_AB of transition-path theory, ``ν / Σ π (1 − q)``, with a bootstrap interval.

        π is the unbiased density of the window frames (their MBAR or OPES weights); q is clamped to
        0 on A and 1 on B.

        Parameters
        ----------
        n_bootstrap : int, default 100
            Resamples of the frames, within each window (each OPES run).
        confidence : float, default 0.95
            Level of the percentile interval.
        seed : int, default 0
        flux : {"auto", "generator", "lagged"}, default "auto"
            The reactive flux ν (1/ps). ``"generator"``: ``⟨Σ_i kT/(m_i γ) |∇_i q|²⟩``, exact for
            overdamped (Brownian) dynamics and biased for Langevin dynamics, whose inertia it ignores.
            ``"lagged"``: ``⟨(q(X_τ) − q(X_0))²⟩ / 2τ`` over the loop's own unbiased trajectories
            ``X_0 → X_τ`` (τ = ``lag`` steps): the reactive flux of the dynamics seen every τ, right
            for any dynamics once τ exceeds its velocity memory (≈ 1/γ) and the time to cross the
            barrier top. ``"auto"``: generator for a Brownian integrator, lagged otherwise.

        Returns
        -------
        xarray.Dataset
            ``rate``, ``low``, ``high`` (1/ps), ``flux`` (1/ps) and ``p_a``, the probability of
            having last visited A; attributes ``flux`` (the estimator used) and ``friction``.

        Raises
        ------
        ValueError
            Before :meth:`run`, for a ``confidence`` outside (0, 1) or an unknown ``flux``.

        References
        ----------
        W. E, E. Vanden-Eijnden, Annu. Rev. Phys. Chem. 61, 391 (2010) (transition-path theory);
        P. Metzner, C. Schütte, E. Vanden-Eijnden, Multiscale Model. Simul. 7, 1192 (2009)
        (its discrete-time form).
        """
        return outputs.rate(self, n_bootstrap, confidence, seed, flux)

    def transition_states(self, lower=0.45, upper=0.55):
        """Frames with ``lower <= q <= upper`` (see :func:`transition_state_ensemble`)."""
        return outputs.transition_state_ensemble(self, lower, upper)

    def committor_test(self, p=0.5, width=0.05, n_configurations=20, n_trajectories=10, max_steps=20000,
                       check_every=10, seed=0):  # fmt: skip
        """Shoot unbiased trajectories from frames with q ≈ p (see :func:`committor_test`)."""
        return outputs.committor_test(self, p, width, n_configurations, n_trajectories, max_steps, check_every,
                                      seed)
