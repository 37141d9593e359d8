"""Umbrella windows along the committor, and their recombination by MBAR.

:class:`UmbrellaWindows` is the sampling step of :class:`~mdcvkit.biasing.Committor`: it holds the
settings and offers two calls, :meth:`UmbrellaWindows.sample` (frames in windows along the current
committor, each followed by a short unbiased trajectory) and :meth:`UmbrellaWindows.log_weights`
(the weight of every frame of every iteration in the unbiased density, by MBAR through pymbar).
Another sampler (OPES along q, say) can take its place by offering the same two calls.
The bias reaches OpenMM only through :func:`mdcvkit.biasing.add_cv_bias`.
"""

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import openmm
import torch
from scipy.special import logsumexp

from ..._checks import check_int, check_number, openmm_seed
from ..bias import add_cv_bias

__all__ = ["Basin", "UmbrellaWindows", "mbar_log_weights"]

#: the umbrella bias on the committor, in kJ/mol (the CV is q, dimensionless)
UMBRELLA = "0.5*kappa*(cv0-target)^2"


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
    """Settings of the umbrella windows along q, and the two calls of a sampler.

    Parameters
    ----------
    n_windows : int, default 11
        Windows per iteration at targets evenly spread over [0, 1] (ends included); windows added
        where neighbours overlap poorly come on top.
    kappa : float, optional
        Force constant in kJ/mol (q is dimensionless); default ``4 kT (n_windows − 1)²``, a window
        width ``sqrt(kT/κ)`` of half the spacing.
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
    kappa: float = None
    n_samples: int = 100
    stride: int = 50
    lag: int = 20
    n_equilibration: int = 200
    min_overlap: float = 0.03
    route: str = "auto"

    def __post_init__(self):
        for name in ("n_windows", "n_samples", "stride", "lag"):
            check_int(getattr(self, name), name, 2 if name == "n_windows" else 1)
        check_int(self.n_equilibration, "n_equilibration", 0)
        if self.kappa is not None:
            check_number("kappa", self.kappa, strict=True, example="500 (kJ/mol)")
        if not 0 <= check_number("min_overlap", self.min_overlap, example="0.03") < 1:
            raise ValueError(f"min_overlap={self.min_overlap!r} must be in [0, 1), e.g. 0.03")

    def targets(self):
        """The evenly spread targets over [0, 1]."""
        return np.linspace(0.0, 1.0, self.n_windows)

    def force_constant(self, kT):
        """κ in kJ/mol: the given one, or ``4 kT (n_windows − 1)²``."""
        return float(self.kappa) if self.kappa is not None else 4.0 * kT * (self.n_windows - 1) ** 2

    def sample(self, engine, cv, targets, starts, seed, kappa=None):
        """Frames in windows along ``cv``, each with the end of a short unbiased trajectory.

        Parameters
        ----------
        engine : object
            The loop's simulation engine (system, particles, integrators, basins).
        cv : CollectiveVariable or None
            The current committor, positions (Å) -> q; None with ``kappa=0``.
        targets : array_like of float
            Window centres in [0, 1].
        starts : sequence of numpy.ndarray
            Start positions (nm) of each window, all particles.
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
        if targets.ndim != 1 or targets.size == 0 or np.any((targets < 0) | (targets > 1)):
            raise ValueError(f"window targets {np.round(targets, 4).tolist()} must lie in [0, 1]; q is a probability")
        kappa = self.force_constant(engine.kT) if kappa is None else float(kappa)
        system, bias = engine.system, None
        if kappa:
            system = openmm.XmlSerializer.clone(engine.system)
            bias = add_cv_bias(system, cv, UMBRELLA, starts[0], particles=engine.particles, route=self.route,
                               parameters={"kappa": kappa, "target": float(targets[0])}, name="committor umbrella")
        biased = engine.context(system, engine.integrator(seed, system, bias))
        free = engine.context(engine.system, engine.integrator(seed + 1))
        positions, lagged, window = [], [], []
        for k, (target, start) in enumerate(zip(targets, starts, strict=True)):
            if bias is not None:
                biased.setParameter("target", float(target))
            biased.setPositions(start)
            biased.setVelocitiesToTemperature(engine.temperature, openmm_seed(seed + k))
            biased.getIntegrator().step(self.n_equilibration)
            for _ in range(self.n_samples):
                biased.getIntegrator().step(self.stride)
                state = biased.getState(getPositions=True, getVelocities=True)
                x0 = state.getPositions(asNumpy=True)._value
                free.setPositions(x0)
                free.setVelocities(state.getVelocities())
                free.getIntegrator().step(self.lag)
                xt = free.getState(getPositions=True).getPositions(asNumpy=True)._value
                positions.append(np.asarray(x0, dtype=np.float32))
                lagged.append(np.asarray(xt, dtype=np.float32))
                window.append(k)
        return {"positions": np.asarray(positions), "lagged": np.asarray(lagged), "window": np.asarray(window),
                "kappa": kappa}

    def log_weights(self, reduced, counts, initial=None):
        """Log weights of all frames in the unbiased density, by MBAR (see :func:`mbar_log_weights`)."""
        return mbar_log_weights(reduced, counts, initial)

    def windows_to_add(self, targets, overlap):
        """Midpoints of neighbouring targets whose MBAR overlap is below ``min_overlap``."""
        order = np.argsort(targets)
        return [0.5 * (targets[i] + targets[j]) for i, j in zip(order[:-1], order[1:], strict=True)
                if overlap[i, j] < self.min_overlap]


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
