"""The sampling step of the committor loop: umbrella windows along logit q (MBAR) or OPES along logit q.

:class:`UmbrellaWindows` and :class:`CommittorOPES` are the two samplers of
:class:`~mdcvkit.biasing.Committor`. Each holds its settings and offers the loop's calls:
``targets`` (where the next iteration starts its runs), ``sample`` (frames ``X_0`` along the current
committor, each followed by a short unbiased trajectory to ``X_τ``), ``log_weights`` (the weight of
every biased frame of every iteration in the unbiased density: MBAR through pymbar for the windows,
OPES's own bias for OPES) and ``windows_to_add``. The bias reaches OpenMM only through
:func:`mdcvkit.biasing.add_cv_bias` (windows) or :class:`mdcvkit.biasing.OPES`.
"""

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import openmm
import torch
from scipy.special import expit, logit, logsumexp

from ..._checks import check_int, check_number, openmm_seed
from ...analysis import CollectiveVariable
from ...export.openmm import NM_TO_ANGSTROM
from ..bias import add_cv_bias
from ..grid import Grid
from ..opes import OPES
from ..reweight import effective_sample_size, opes_log_weights

logger = logging.getLogger(__name__)

__all__ = ["Basin", "CommittorOPES", "UmbrellaWindows", "mbar_log_weights"]

#: the umbrella bias along z = logit q (the CV, dimensionless), in kJ/mol: harmonic within ``width`` of the
#: target and linear beyond, open toward its basin for an end window (``below`` or ``above`` = 1 drops the
#: bias on that side), and flat where ``|z| > clip``. Where q saturates, the loss leaves z free and its
#: gradient can be huge: a harmonic force, or any force out there, blew up runs of alanine dipeptide.
#: :func:`umbrella_energy` is the same in NumPy.
UMBRELLA = ("kappa*select(step(width-abs(d)), 0.5*d^2, width*(abs(d)-0.5*width))*(1-below*step(-d))*(1-above*step(d));"
            " d=min(max(cv0,-clip),clip)-target")
#: runs of a window before a blow-up is an error
ATTEMPTS = 3
#: OPES along q biases z = logit q on [-Z_MAX, Z_MAX] (q from 3e-4 to 1 - 3e-4); beyond, no bias
Z_MAX = 8.0


class Basin:
    """A basin as a range of one CV component: ``lower <= cv(positions)[:, component] <= upper``.

    Parameters
    ----------
    cv : callable
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``, e.g. ``toy.cv("x1")`` or a
        :class:`~mdcvkit.analysis.CollectiveVariable` of the dihedral φ (rad).
    lower, upper : float
        Bounds in the CV's units, ``lower < upper``.
    component : int, default 0

    Examples
    --------
    >>> a = Basin(toy.cv("x1"), -10.0, -0.8)     # doctest: +SKIP
    >>> a(positions_angstrom)                     # -> bool array (n_frames,); doctest: +SKIP
    """

    def __init__(self, cv, lower, upper, component=0):
        if not callable(cv):
            raise TypeError(f"cv must be a CV module or function of positions (Å), not {type(cv).__name__}")
        lower = check_number("lower", lower, minimum=-np.inf, example="-0.8")
        upper = check_number("upper", upper, minimum=-np.inf, example="0.8")
        if not lower < upper:
            raise ValueError(f"lower={lower!r} must be below upper={upper!r}")
        self.cv, self.lower, self.upper = cv, lower, upper
        self.component = check_int(component, "component", 0)

    def __call__(self, positions):
        with torch.no_grad():
            values = self.cv(torch.as_tensor(np.asarray(positions), dtype=torch.float32))
        values = np.asarray(values, dtype=float).reshape(len(positions), -1)[:, self.component]
        return (values >= self.lower) & (values <= self.upper)

    def __repr__(self):
        return f"Basin({type(self.cv).__name__}, {self.lower!r}, {self.upper!r}, component={self.component})"


@dataclass(frozen=True)
class UmbrellaWindows:
    """Settings of the umbrella windows along z = logit q, and the calls of a sampler.

    The windows sit at targets evenly spread in ``z = logit q`` over ``[-z_max, z_max]``, with a
    harmonic bias in z; the two end windows are open toward their basins (no bias beyond the
    target), so that they sample the basins whole. Windows along q itself overlap poorly where q is
    steep: on the 2-D double well, the windows at q = 0.1 and 0.2 shared almost no frames and MBAR put
    6 times too much weight on the barrier top (``docs/findings/committor.md``).

    Parameters
    ----------
    n_windows : int, default 11
        Windows per iteration; windows added where neighbours overlap poorly come on top.
    z_max : float, default 5.0
        Targets span ``z ∈ [-z_max, z_max]``, q from ``expit(-z_max)`` (0.0067) to ``expit(z_max)``.
    kappa : float, optional
        Force constant in kJ/mol (z is dimensionless); default ``4 kT / Δz²`` with the spacing
        ``Δz = 2 z_max / (n_windows − 1)``: a window width ``sqrt(kT/κ)`` of half the spacing.
    n_samples : int, default 100
        Frames ``X_0`` per window.
    stride : int, default 50
        Biased steps between two frames.
    lag : int, default 20
        Unbiased steps from each ``X_0`` to its ``X_τ`` (τ = lag × time step).
    n_equilibration : int, default 200
        Biased steps before a window's first frame.
    min_overlap : float, default 0.03
        MBAR overlap of neighbouring windows below which a window is added between them.
    route : {"auto", "expression", "python", "torch"}, default "auto"
        Route of the bias (:func:`~mdcvkit.biasing.add_cv_bias`).
    """

    n_windows: int = 11
    z_max: float = 5.0
    kappa: float = None
    n_samples: int = 100
    stride: int = 50
    lag: int = 20
    n_equilibration: int = 200
    min_overlap: float = 0.03
    route: str = "auto"

    def __post_init__(self):
        check_int(self.n_windows, "n_windows", 2)
        check_number("z_max", self.z_max, strict=True, example="5.0")
        _check_shooting(self)
        if self.kappa is not None:
            check_number("kappa", self.kappa, strict=True, example="1.0 (kJ/mol)")
        if not 0 <= check_number("min_overlap", self.min_overlap, example="0.03") < 1:
            raise ValueError(f"min_overlap={self.min_overlap!r} must be in [0, 1), e.g. 0.03")

    def targets(self):
        """Targets in q, evenly spread in z = logit q over ``[-z_max, z_max]``."""
        return expit(np.linspace(-self.z_max, self.z_max, self.n_windows))

    def spacing(self):
        """Δz between neighbouring targets; also the half-width of the harmonic part of the bias."""
        return 2.0 * self.z_max / (self.n_windows - 1)

    def clip(self):
        """``|z|`` beyond which the bias is flat: two spacings past the outer targets."""
        return self.z_max + 2.0 * self.spacing()

    def force_constant(self, kT):
        """κ in kJ/mol: the given one, or ``4 kT / Δz²``."""
        return float(self.kappa) if self.kappa is not None else 4.0 * kT / self.spacing() ** 2

    def sample(self, engine, cv, targets, starts, seed, kappa=None):
        """Frames in windows along ``cv``, each with the end of a short unbiased trajectory.

        Parameters
        ----------
        engine : object
            The loop's simulation engine (system, particles, integrators, basins).
        cv : CollectiveVariable or None
            The current committor, positions (Å) -> q; None with ``kappa=0``.
        targets : array_like of float
            Window centres as q in (0, 1); the lowest and highest are open toward A and B.
        starts : sequence of numpy.ndarray
            Start positions (nm) of each window, all particles. The windows run from each basin toward
            q = 0.5 (those below in rising order, those above in falling order), and a window starts
            from the end of its neighbour on the basin's side instead when that lies nearer its target
            in z: each side climbs the barrier one spacing at a time from its own basin, so neither
            side inherits the other's slow degrees of freedom.
        seed : int
        kappa : float, optional
            κ in kJ/mol instead of :meth:`force_constant` (0 samples without bias: no force is added).

        Returns
        -------
        dict
            ``positions`` and ``lagged``, (n, n_particles, 3) in nm, of ``X_0`` and ``X_τ``; ``window``
            (n,) index into ``targets``; ``kappa`` (kJ/mol).
        """
        targets = np.asarray(targets, dtype=float)
        if targets.ndim != 1 or targets.size == 0 or np.any((targets <= 0) | (targets >= 1)):
            raise ValueError(f"window targets {np.round(targets, 4).tolist()} must lie in (0, 1): q is a probability "
                             f"and a window sits at z = logit q")  # fmt: skip
        if len(starts) != len(targets):
            raise ValueError(f"{len(starts)} starts for {len(targets)} window targets; pass one start per window")
        kappa = self.force_constant(engine.kT) if kappa is None else float(kappa)
        system, bias = engine.system, None
        if kappa:
            system, z = openmm.XmlSerializer.clone(engine.system), logit_cv(cv)
            parameters = {"kappa": kappa, "width": self.spacing(), "clip": self.clip(), "target": 0.0, "below": 0.0,
                          "above": 0.0}  # fmt: skip
            bias = add_cv_bias(system, z, UMBRELLA, starts[0], particles=engine.particles, route=self.route,
                               parameters=parameters, name="committor umbrella")
        biased = engine.context(system, engine.integrator(seed, system, bias))
        free = engine.context(engine.system, engine.integrator(seed + 1))
        positions, lagged, window = [], [], []
        below, above = _open_ends(targets)
        for chain in _from_the_basins(targets):
            previous = None  # each side's chain starts from its own basin
            for k in chain:
                target, start = targets[k], starts[k]
                if bias is not None:
                    for name, value in (("target", logit(target)), ("below", below[k]), ("above", above[k])):
                        biased.setParameter(name, float(value))
                    if previous is not None and _distance(z, engine, previous, target) < _distance(z, engine, start,
                                                                                                     target):
                        start = previous  # the last window's end is nearer: a short pull, not one across the barrier
                x0, xt = self._window(biased, free, start, engine.temperature, seed + k, target)
                positions += x0
                lagged += xt
                window += [k] * len(x0)
                previous = biased.getState(getPositions=True).getPositions(asNumpy=True)._value
        return {"positions": np.asarray(positions), "lagged": np.asarray(lagged), "window": np.asarray(window),
                "kappa": kappa}

    def _window(self, biased, free, start, temperature, seed, target):
        """One window's frames from ``start``; a run that blows up (a steep committor can kick an atom hard)
        starts again with new velocities, up to ``ATTEMPTS`` times."""
        for attempt in range(ATTEMPTS):
            try:
                biased.setPositions(start)
                biased.setVelocitiesToTemperature(temperature, openmm_seed(seed + 7919 * attempt))
                biased.getIntegrator().step(self.n_equilibration)
                return _shoot(biased, biased.getIntegrator().step, free, self.n_samples, self.stride, self.lag)
            except openmm.OpenMMException as err:
                if attempt == ATTEMPTS - 1:
                    raise ValueError(f"the window at q = {target:.4g} blew up {ATTEMPTS} times ({err}); lower the "
                                     f"time step of the integrator or kappa") from err  # fmt: skip
                logger.warning("the window at q = %.4g blew up (%s); starting it again", target, err)

    def log_weights(self, state, kT, pick=None):
        """Log weights of every window frame in the unbiased density, by MBAR over all windows so far.

        Parameters
        ----------
        state : dict
            The loop's state: its frames (``data``: ``q`` of every model, ``iteration``, ``state``), the
            windows (``states``: iteration, target q, κ in kJ/mol) and their last free energies.
        kT : float
            kJ/mol.
        pick : array_like of int, optional
            Window frames to weigh, with repeats (a bootstrap sample); default all.

        Returns
        -------
        log_weights, free_energies, overlap
            As :func:`mbar_log_weights`.
        """
        data = state["data"]
        mask = data["iteration"] > 0
        iteration, target, kappa = np.array(state["states"]).T
        below, above = np.zeros(len(target)), np.zeros(len(target))
        for i in np.unique(iteration):  # each iteration's end windows are open toward the basins
            run = np.flatnonzero(iteration == i)
            below[run], above[run] = _open_ends(target[run])
        z = logit(data["q"][mask][:, iteration.astype(int) - 1].T)  # z of the model each window biased
        reduced = umbrella_energy(z, logit(target)[:, None], kappa[:, None], self.spacing(), self.clip(),
                                  below[:, None], above[:, None]) / kT  # fmt: skip
        windows = data["state"][mask]
        if pick is not None:
            reduced, windows = reduced[:, pick], windows[pick]
        n_states, known = len(state["states"]), state["free_energies"]
        initial = None if known is None else np.concatenate([known, np.zeros(n_states - len(known))])
        return mbar_log_weights(reduced, np.bincount(windows, minlength=n_states), initial)

    def windows_to_add(self, targets, overlap):
        """Midpoints in z of neighbouring targets whose MBAR overlap is below ``min_overlap``, as q."""
        order = np.argsort(targets)
        return [float(expit(0.5 * (logit(targets[i]) + logit(targets[j]))))
                for i, j in zip(order[:-1], order[1:], strict=True) if overlap[i, j] < self.min_overlap]


def _from_the_basins(targets):
    """Two chains of window indices: from A up to q = 0.5, and from B down to above 0.5."""
    order = np.argsort(targets, kind="stable")
    return order[targets[order] <= 0.5], order[targets[order] > 0.5][::-1]


def _distance(z, engine, positions, target):
    """|z(positions) − logit(target)| of positions (nm, all particles)."""
    angstrom = torch.as_tensor(np.asarray(positions)[None, engine.particles] * NM_TO_ANGSTROM, dtype=torch.float32)
    with torch.no_grad():
        return abs(float(z(angstrom)[0, 0]) - logit(target))


def umbrella_energy(z, target, kappa, width, clip, below, above):
    """:data:`UMBRELLA` in NumPy: the bias (kJ/mol) at z of a window at ``target`` (z), broadcast over the arguments."""
    d = np.clip(z, -clip, clip) - target
    a = np.abs(d)
    energy = kappa * np.where(a <= width, 0.5 * d**2, width * (a - 0.5 * width))
    return energy * (1 - below * (d < 0)) * (1 - above * (d > 0))


def _open_ends(targets):
    """Flags (1.0/0.0) of the window open below (the lowest target) and above (the highest)."""
    targets = np.asarray(targets, dtype=float)
    return (targets == targets.min()).astype(float), (targets == targets.max()).astype(float)


def logit_cv(cv):
    """The CV ``z = logit q`` of a committor CV (its network without the sigmoid), in eval mode."""
    return CollectiveVariable(cv.featurizer, cv.model.logit_model()).eval()


def _check_shooting(settings):
    """Check the settings both samplers share: frames, their spacing and lag, the equilibration (steps)."""
    for name in ("n_samples", "stride", "lag"):
        check_int(getattr(settings, name), name, 1)
    check_int(settings.n_equilibration, "n_equilibration", 0)


def _shoot(context, step, free, n_samples, stride, lag):
    """``n_samples`` frames ``X_0`` of ``context``, ``stride`` steps apart (``step(stride)``), each followed by ``lag``
    unbiased steps of ``free`` from its positions and velocities to ``X_τ``; two lists of (n_particles, 3) nm."""
    positions, lagged = [], []
    for _ in range(n_samples):
        step(stride)
        state = context.getState(getPositions=True, getVelocities=True)
        x0 = state.getPositions(asNumpy=True)._value
        free.setPositions(x0)
        free.setVelocities(state.getVelocities())
        free.getIntegrator().step(lag)
        positions.append(np.asarray(x0, dtype=np.float32))
        lagged.append(np.asarray(free.getState(getPositions=True).getPositions(asNumpy=True)._value, dtype=np.float32))
    return positions, lagged


@dataclass(frozen=True)
class CommittorOPES:
    """Settings of OPES along q, the committor loop's other sampler, and its calls.

    Each iteration runs OPES (:class:`~mdcvkit.biasing.OPES`) along the current committor from a
    frame near q = 0.5, and takes a frame ``X_0`` every ``stride`` steps, each followed by an unbiased
    trajectory to ``X_τ``. OPES biases ``z = logit q``, the network's output before its sigmoid, on
    ``[-8, 8]``: q itself crowds both basins into its ends, where a bias along it cannot tell frames
    apart (Kang, Trizio and Parrinello bias z for the same reason). A frame's weight is OPES's own,
    ``exp(β V)`` of the bias acting when it was taken (:func:`~mdcvkit.biasing.opes_log_weights`);
    the iterations, each an estimate of the same unbiased density, are pooled in proportion to their
    effective sample sizes. The unbiased first iteration samples as :class:`UmbrellaWindows` does.

    Parameters
    ----------
    barrier : float, optional
        PLUMED's ``BARRIER`` in kJ/mol, the free-energy barrier along z to flatten; default 10 kT.
    pace : int, default 100
        PLUMED's ``PACE``: steps between kernel depositions; a multiple of ``stride``. An iteration is
        short (``n_samples × stride`` steps), so OPES deposits often to flatten q within it: on the
        2-D double well, pace 500 gave twice the committor RMSE of pace 100
        (``docs/findings/committor.md``).
    n_samples : int, default 1000
        Frames ``X_0`` per iteration (as many as the default 11 umbrella windows of 100 give).
    stride : int, default 50
        Biased steps between two frames.
    lag : int, default 20
        Unbiased steps from each ``X_0`` to its ``X_τ``.
    n_equilibration : int, default 1000
        Biased steps before the first frame; a multiple of ``stride``.
    n_bins : int, default 50
        Bins of OPES's grid over z ∈ [-8, 8].
    route : {"auto", "expression", "python", "torch"}, default "auto"
        Route of the CV to OpenMM (:func:`~mdcvkit.biasing.add_cv_bias`).

    Examples
    --------
    >>> Committor(toy, state_a=a, state_b=b, starts=starts, sampling=CommittorOPES(barrier=16.0))  # doctest: +SKIP

    References
    ----------
    P. Kang, E. Trizio, M. Parrinello, Nat. Comput. Sci. 4, 451 (2024).
    """

    barrier: float = None
    pace: int = 100
    n_samples: int = 1000
    stride: int = 50
    lag: int = 20
    n_equilibration: int = 1000
    n_bins: int = 50
    route: str = "auto"

    def __post_init__(self):
        check_int(self.pace, "pace", 1)
        check_int(self.n_bins, "n_bins", 2)
        _check_shooting(self)
        if self.barrier is not None:
            check_number("barrier", self.barrier, strict=True, example="16.0 (kJ/mol)")
        for name in ("pace", "n_equilibration"):
            if getattr(self, name) % self.stride:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of stride={self.stride}: OPES "
                                 f"samples between its frames; pass e.g. {name}="
                                 f"{self.stride * max(1, getattr(self, name) // self.stride)}")  # fmt: skip

    def targets(self):
        """Where an iteration starts: near q = 0.5."""
        return np.array([0.5])

    def sample(self, engine, cv, targets, starts, seed, kappa=None):
        """Frames along ``cv`` by OPES from ``starts[0]``, each with the end of a short unbiased trajectory.

        Parameters
        ----------
        engine : object
            The loop's simulation engine (system, particles, integrators, basins).
        cv : CollectiveVariable or None
            The current committor, positions (Å) -> q; None with ``kappa=0``.
        targets : array_like of float
            ``targets()``; with ``kappa=0``, one per start.
        starts : sequence of numpy.ndarray
            Start positions (nm, all particles).
        seed : int
        kappa : float, optional
            0 samples without bias from every start, as :meth:`UmbrellaWindows.sample`.

        Returns
        -------
        dict
            ``positions`` and ``lagged`` (n, n_particles, 3) in nm, ``window`` (n,) zeros, ``kappa`` 0 and
            ``log_weight`` (n,), OPES's log weight of each frame within its run.
        """
        if kappa == 0:
            return UmbrellaWindows(n_samples=self.n_samples, stride=self.stride, lag=self.lag,
                                   n_equilibration=self.n_equilibration, route=self.route).sample(
                engine, None, targets, starts, seed, kappa=0.0)  # fmt: skip
        barrier = 10 * engine.kT if self.barrier is None else self.barrier
        opes = OPES(engine.system, starts[0], logit_cv(cv), Grid(-Z_MAX, Z_MAX, self.n_bins), barrier,
                    engine.temperature, pace=self.pace, particles=engine.particles, route=self.route,
                    integrator=engine.integrator(seed), sample_frequency=self.stride, seed=seed,
                    verbose=False)  # fmt: skip
        opes.run(self.n_equilibration)
        free = engine.context(engine.system, engine.integrator(seed + 1))
        positions, lagged = _shoot(opes.context, opes.run, free, self.n_samples, self.stride, self.lag)
        return {"positions": np.asarray(positions), "lagged": np.asarray(lagged), "window": np.zeros(len(positions),
                int), "kappa": 0.0, "log_weight": opes_log_weights(opes)[-len(positions):]}  # fmt: skip

    def log_weights(self, state, kT, pick=None):
        """Log weights of every biased frame in the unbiased density: each run's OPES weights, runs pooled by ESS.

        Parameters
        ----------
        state : dict
            The loop's state (``data``: ``log_weight`` and ``iteration`` of every frame).
        kT : float
            kJ/mol (unused: OPES's weights are already in kT).
        pick : array_like of int, optional
            Biased frames to weigh, with repeats (a bootstrap sample); default all.

        Returns
        -------
        log_weights : numpy.ndarray
            Normalised over the frames of iterations ≥ 1.
        free_energies, overlap : None
            Umbrella windows' quantities, which OPES has not.
        """
        data = state["data"]
        mask = data["iteration"] > 0
        log_w, iteration = data["log_weight"][mask], data["iteration"][mask]
        if pick is not None:
            log_w, iteration = log_w[pick], iteration[pick]
        for i in np.unique(iteration):
            run = iteration == i
            log_w[run] += np.log(effective_sample_size(log_w[run])) - logsumexp(log_w[run])
        return log_w - logsumexp(log_w), None, None

    def windows_to_add(self, targets, overlap):
        """None: OPES has no windows."""
        return []


def _mbar(reduced, counts, initial):
    """pymbar's MBAR, its log quiet (on import it warns about JAX and its timeseries module)."""
    log = logging.getLogger("pymbar")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from pymbar import MBAR
        from pymbar.utils import ParameterError

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return MBAR(reduced, counts, initial_f_k=initial, solver_protocol="robust")
    except (ParameterError, ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
        raise ValueError(f"MBAR did not converge ({type(err).__name__}: {err}); the windows do not overlap: "
                         f"sample longer (n_samples) or use more windows (n_windows)") from err
    finally:
        log.setLevel(level)


def mbar_log_weights(reduced, counts, initial=None, tolerance=1e-4, min_gap=1e-6):
    """Weights of every frame in the unbiased density, from windows recombined by MBAR (pymbar).

    Parameters
    ----------
    reduced : array_like, shape (n_states, n_frames)
        Reduced bias ``β w_k(x_n)`` of frame n in state k (the unbiased potential cancels).
    counts : array_like of int, shape (n_states,)
        Frames drawn in each state, in the order of the columns of ``reduced``.
    initial : array_like, shape (n_states,), optional
        Starting free energies (e.g. a previous solution).
    tolerance : float, default 1e-4
        Largest accepted residual of the MBAR equations (kT).
    min_gap : float, default 1e-6
        Smallest accepted spectral gap ``1 − λ₂`` of the overlap matrix (0 when windows form groups
        with no overlap between them).

    Returns
    -------
    log_weights : numpy.ndarray, shape (n_frames,)
        Normalised: ``logsumexp(log_weights) == 0``.
    free_energies : numpy.ndarray, shape (n_states,)
        Reduced free energies f_k, ``f_0 = 0``.
    overlap : numpy.ndarray, shape (n_states, n_states)
        MBAR overlap matrix.

    Raises
    ------
    ValueError
        When MBAR does not converge or the windows do not overlap, or the inputs do not fit.

    References
    ----------
    M. R. Shirts, J. D. Chodera, J. Chem. Phys. 129, 124105 (2008).
    """
    reduced = np.asarray(reduced, dtype=float)
    counts = np.asarray(counts, dtype=int)
    if reduced.ndim != 2 or reduced.shape[0] != len(counts) or counts.sum() != reduced.shape[1]:
        raise ValueError(f"reduced has shape {reduced.shape} but counts={counts.tolist()} sums to "
                         f"{counts.sum()}; pass one row per state and one column per frame")
    if not np.all(np.isfinite(reduced)):
        raise ValueError("reduced holds NaN or infinite bias energies; check the CVs of the windows")
    mbar = _mbar(reduced, counts, initial)
    f = np.asarray(mbar.f_k, dtype=float)
    log_w = -logsumexp(f[:, None] - reduced, b=counts[:, None], axis=0)
    log_w -= logsumexp(log_w)
    sampled = counts > 0
    f_check = -logsumexp(log_w[None] - reduced, axis=1)
    residual = np.max(np.abs((f_check - f_check[0]) - (f - f[0]))[sampled]) if np.any(sampled) else np.inf
    if not np.isfinite(residual) or residual > tolerance:
        raise ValueError(f"MBAR did not converge (residual {residual:.3g} kT > tolerance={tolerance:g}); the windows "
                         f"overlap too little: sample longer (n_samples) or use more windows (n_windows)")
    overlap = mbar.compute_overlap()
    gap = 1.0 - np.sort(np.abs(overlap["eigenvalues"]))[-2] if len(counts) > 1 else 1.0
    if gap < min_gap:
        raise ValueError(f"MBAR did not converge: the windows fall into groups that share no frames (spectral gap of "
                         f"the overlap matrix {gap:.2g} < {min_gap:g}), so their free energies are undetermined; "
                         f"sample longer (n_samples) or use more windows (n_windows)")
    return log_w, f - f[0], np.asarray(overlap["matrix"])
