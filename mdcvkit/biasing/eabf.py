"""Extended-system adaptive biasing force (eABF) on a CV module, with the CZAR estimator.

Each CV component ξ_d gets an extended variable λ_d: a coordinate of one
massive dummy particle added to a copy of the System, coupled by
``κ_d/2 (ξ_d(q) - λ_d)²`` through an :class:`openmm.CustomCVForce` and
thermostatted by the simulation's own (stochastic) integrator. The ABF bias
on λ, ``-Â(λ)``, is the integral of the running mean of ``κ (λ - ξ)`` in the
bins of λ, ramped in over the first ``full_samples`` samples of a bin as
Colvars' ``fullSamples`` does, and refreshed as a tabulated function of the
CustomCVForce every ``update_frequency`` steps. The free energy along ξ is
estimated by CZAR (:mod:`mdcvkit.biasing.czar`).

References
----------
T. Lelièvre, M. Rousset, G. Stoltz, J. Chem. Phys. 126, 134111 (2007) (ABF).
H. Fu, X. Shao, C. Chipot, W. Cai, J. Chem. Theory Comput. 12, 3506 (2016) (eABF).
A. Lesage, T. Lelièvre, G. Stoltz, J. Hénin, J. Phys. Chem. B 121, 3676 (2017) (CZAR).
"""

import logging
import math
import warnings

import numpy as np
import openmm
import openmm.unit as unit
import torch
from scipy.interpolate import RegularGridInterpolator

from .._checks import check_int
from .._progress import progress_bar, resolve_verbose
from ..export.openmm import NM_TO_ANGSTROM, collective_variables, module_dtype
from ..systems import MOLAR_GAS_CONSTANT  # re-exported: kJ/mol/K, as OpenMM uses it
from ._sampler import GridSampler
from .bias import _free_group
from .czar import CZARAccumulator, integrate_gradient, to_dataset
from .extended import coupling_force, extended_system, lambda_restraint, table_arguments

__all__ = ["ExtendedABF", "MOLAR_GAS_CONSTANT"]

logger = logging.getLogger(__name__)


def _check_kappa(kappa, n_dim, name="kappa"):
    """``kappa`` as ``n_dim`` positive floats, or a ValueError naming ``name``."""
    if unit.is_quantity(kappa):
        kappa = kappa.value_in_unit(kappa.unit)
    try:
        value = np.asarray(kappa, dtype=float)
    except (TypeError, ValueError):
        value = None
    if value is not None and not isinstance(kappa, bool) and value.size in (1, n_dim):
        value = np.broadcast_to(value.reshape(-1), (n_dim,)).copy()
    else:
        value = None
    if value is None or not np.all(np.isfinite(value)) or np.any(value <= 0):
        raise ValueError(
            f"{name}={kappa!r} must be a positive coupling constant in kJ/mol/(CV unit)², "
            f"one or {n_dim} value(s); "
            f"pass e.g. {name} = kT / sigma**2 with sigma a tenth of the CV's range"
        )
    return value


def _temperature_kelvin(temperature):
    if unit.is_quantity(temperature):
        temperature = temperature.value_in_unit(unit.kelvin)
    temperature = float(temperature)
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature={temperature!r} must be a positive number of kelvin; pass e.g. 300")
    return temperature


class ExtendedABF(GridSampler):
    """Extended ABF on a CV module, with the CZAR free-energy estimator.

    Parameters
    ----------
    system : openmm.System
        The unbiased system; it is copied, never modified.
    positions : array_like or openmm.unit.Quantity, shape (n_particles, 3)
        Starting positions (nm if bare numbers).
    cv : torch.nn.Module or callable
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``, with n_cv 1 or 2.
    grid : Grid or tuple
        Bins for ξ and λ in CV units: ``(lower, upper, n_bins)`` or one such tuple per component,
        or a :class:`Grid` (which can mark components periodic). Must contain the starting CV.
    kappa : float or sequence of float
        Coupling constant(s) in kJ/mol/(CV unit)², ``kT / σ²`` for a coupling width σ.
    temperature : float or openmm.unit.Quantity
        Temperature in K (of the integrator and of the estimators).
    particles : sequence of int, optional
        System index of each CV input atom; default all particles.
    route : {"auto", "expression", "python", "torch"}, default "auto"
        How the CV reaches OpenMM (see :func:`mdcvkit.biasing.add_cv_bias`).
    integrator : openmm.Integrator, optional
        A stochastic integrator at ``temperature``; default LangevinMiddle, friction 1/ps, 2 fs.
        Its random seed is set from ``seed``. With ``bias_stride > 1`` it must be a Langevin
        integrator, whose temperature, friction and step the multiple-time-step one takes.
    platform : str, optional
        OpenMM platform; default :func:`mdcvkit.biasing.default_platform`.
    bias_stride : int, default 1
        Steps between evaluations of the coupling force (the CV): with more than 1, an
        :class:`openmm.MTSLangevinIntegrator` evaluates it with an outer step ``bias_stride``
        times the integrator's (see :func:`mdcvkit.biasing.bias_integrator`). ``sample_frequency``
        and ``update_frequency`` must be multiples of it. Free energies with strides 4 and 8
        agree with stride 1 within their statistical error on the toys and on alanine
        dipeptide's φ (``tests/test_biasing_eabf.py``).
    lambda_mass : float, optional
        Mass of the λ particle in amu (× (nm / CV unit)²); default ``κ (τ / 2π)²`` from
        ``time_constant`` (Colvars' ``extendedTimeConstant``).
    time_constant : float, default 0.2
        Oscillation period τ of λ in ps (Colvars' default 200 fs).
    full_samples : int, default 200
        Samples of a λ bin before its ABF force is applied in full; ramped in linearly from
        ``full_samples / 2`` (Colvars' ``fullSamples``). Samples are taken every
        ``sample_frequency`` steps, so with ``sample_frequency > 1`` this counts samples, not the
        steps Colvars counts: divide a Colvars value by ``sample_frequency``. In 2-D there are
        ``n_bins²`` bins to fill, so keep it small: on vacuum alanine dipeptide from C7eq, 5 ns of
        eABF along (φ, ψ) itself (15 × 15 bins, ``sample_frequency=10``) never reached C7ax with
        200 and crossed C7eq ↔ C7ax 21 times with 20 (80 times on 24 × 24 bins), against 178
        crossings for 1-D eABF along φ.
    update_frequency : int, default 100
        Steps between refreshes of the tabulated ABF bias (and between progress updates).
    sample_frequency : int, default 1
        Steps between samples of (ξ, λ); must divide ``update_frequency``.
    store_positions : bool, default False
        Also keep the CV atoms' positions (Å) of every sample in ``results.samples``.
    seed : int, default 0
        Seeds the integrator and the initial velocities.
    verbose : bool or None, default None
        tqdm progress bar in :meth:`run`; None shows it when stderr is a terminal, False silences it.
    progress : bool, optional
        Deprecated name of ``verbose`` (DeprecationWarning).

    Attributes
    ----------
    results : MDAnalysis.analysis.base.Results
        After :meth:`run`: ``pmf`` (CZAR free energy on the grid centres, kJ/mol, NaN where
        unsampled), ``czar_gradient``, ``counts`` (samples of ξ per bin), ``abf_bias`` (the bias
        ``-Â(λ)`` on λ, kJ/mol), ``abf_counts`` (samples of λ per bin), ``samples`` (Dataset over
        dim ``sample``: ``time`` in ps, ``xi``, ``lam`` and the total ``bias`` energy in kJ/mol at
        each sample, for reweighting).
    context : openmm.Context
        The running simulation (the λ particle is the last particle).

    Examples
    --------
    >>> toy = mk.systems.EntropicSwitch()                                  # doctest: +SKIP
    >>> eabf = ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 80), kappa=25).run(200_000)  # doctest: +SKIP
    >>> eabf.results.pmf                                                   # doctest: +SKIP
    """

    _method = "eABF"
    _n_cv_limit = "ExtendedABF supports 1 or 2"
    _series = ("xi", "lam", "bias")

    def __init__(
        self,
        system,
        positions,
        cv,
        grid,
        kappa,
        temperature,
        *,
        particles=None,
        route="auto",
        integrator=None,
        platform=None,
        lambda_mass=None,
        time_constant=0.2,
        full_samples=200,
        update_frequency=100,
        sample_frequency=1,
        store_positions=False,
        seed=0,
        verbose=None,
        bias_stride=1,
        progress=None,
    ):
        positions, xi0 = self._set_up(system, positions, cv, grid, particles)
        n_cv = xi0.size
        self.kappa = _check_kappa(kappa, n_cv)
        self.temperature = _temperature_kelvin(temperature)
        self.kT = MOLAR_GAS_CONSTANT * self.temperature
        for label, value in (
            ("full_samples", full_samples),
            ("update_frequency", update_frequency),
            ("sample_frequency", sample_frequency),
        ):
            check_int(value, label)
        check_int(bias_stride, "bias_stride")
        if sample_frequency % bias_stride:
            raise ValueError(
                f"bias_stride={bias_stride} must divide sample_frequency={sample_frequency}: the bias is "
                f"evaluated every bias_stride steps; pass e.g. "
                f"sample_frequency={bias_stride * max(1, sample_frequency // bias_stride)}"
            )
        if update_frequency % sample_frequency:
            raise ValueError(
                f"sample_frequency={sample_frequency} must divide "
                f"update_frequency={update_frequency}; pass e.g. "
                f"update_frequency={sample_frequency * max(1, update_frequency // sample_frequency)}"
            )
        if not np.isfinite(time_constant) or time_constant <= 0:
            raise ValueError(
                f"time_constant={time_constant!r} must be a positive number of ps; pass e.g. 0.2"
            )
        self.full_samples = int(full_samples)
        self.update_frequency = int(update_frequency)
        self.sample_frequency = int(sample_frequency)
        self.bias_stride = int(bias_stride)
        self.store_positions = bool(store_positions)
        self.seed = seed
        if progress is not None:
            warnings.warn("progress= is deprecated; pass verbose= (the name every long-running mdcvkit call uses)",
                          DeprecationWarning, stacklevel=2)
            verbose = progress
        resolve_verbose(verbose)  # checks its type
        self.verbose = verbose
        self.lambda_mass = (
            float(np.max(self.kappa)) * (time_constant / (2 * math.pi)) ** 2
            if lambda_mass is None
            else lambda_mass
        )
        if not np.isfinite(self.lambda_mass) or self.lambda_mass <= 0:
            raise ValueError(f"lambda_mass={lambda_mass!r} must be a positive mass in amu")

        self.system, self._park = extended_system(system, self.lambda_mass)
        self.lambda_index = self.system.getNumParticles() - 1
        self._add_coupling(route)
        self.integrator = self._integrator(integrator, self.coupling)
        self.context = openmm.Context(self.system, self.integrator, self._platform(platform))
        extended = np.vstack([positions, np.zeros((1, 3))])
        extended[-1, :n_cv] = xi0
        extended[-1, 2] = self._park
        self._start(extended)

        n_bins = int(np.prod(self.grid.shape))
        self.abf_counts = np.zeros(n_bins, dtype=np.int64)
        self.abf_sum = np.zeros((n_bins, n_cv))
        self.czar = CZARAccumulator(self.grid, self.kappa, self.kT)

    @classmethod
    def for_toy(cls, toy, cv="x1", grid=None, kappa=None, **kwargs):
        """eABF on a toy of :mod:`mdcvkit.systems` with its Brownian dynamics.

        Parameters
        ----------
        toy : mdcvkit.systems.ToySystem
        cv : str, tuple of str or CV module, default "x1"
            Reduced coordinate(s) (see ``toy.cv``) or any CV module on positions in Å.
        grid : Grid or tuple
            Bins in reduced units.
        kappa : float, optional
            Coupling in kJ/mol/(reduced length)²; default ``kT / 0.1²``.
        **kwargs
            Passed on; defaults: ``lambda_mass = toy.mass`` (1 amu), ``integrator =
            toy.integrator(seed)``.

        Returns
        -------
        ExtendedABF
        """
        if kappa is None:
            kappa = toy.kT / 0.1**2
        kwargs.setdefault("lambda_mass", toy.mass)
        return cls(toy.system, toy.positions, cls._toy_cv(toy, cv, kwargs), grid, kappa, toy.temperature, **kwargs)

    # --- building ----------------------------------------------------------------------------------------
    def _add_coupling(self, route):
        n_cv = self.grid.n_dim
        forces, definitions, self.route = collective_variables(
            self.cv, self.particles, n_cv, self.lambda_index, route=route
        )
        self.coupling = coupling_force(self.grid, self.kappa, forces, definitions, self.lambda_index)
        self.coupling.setForceGroup(_free_group(self.system))
        self.system.addForce(self.coupling)
        self.system.addForce(lambda_restraint(n_cv, float(np.max(self.kappa)), self.lambda_index, self._park))

    def _integrator(self, integrator, bias):
        """The shared integrator set-up, then checks that the estimators and λ's dynamics need."""
        integrator = super()._integrator(integrator, bias)
        if hasattr(integrator, "getTemperature"):
            t = integrator.getTemperature().value_in_unit(unit.kelvin)
            if abs(t - self.temperature) > 1e-6 * self.temperature:
                warnings.warn(
                    f"the integrator runs at {t} K but temperature={self.temperature} K "
                    f"is used by the estimators",
                    stacklevel=3,
                )
        if isinstance(integrator, openmm.BrownianIntegrator):
            dt = integrator.getStepSize().value_in_unit(unit.picosecond)
            gamma = integrator.getFriction().value_in_unit(unit.picosecond**-1)
            stiffness = dt * float(np.max(self.kappa)) / (self.lambda_mass * gamma)
            if stiffness > 0.5:
                raise ValueError(
                    f"lambda_mass={self.lambda_mass:g} amu is too light for Brownian dynamics with kappa="
                    f"{np.max(self.kappa):g} and a {dt} ps step "
                    f"(dt*kappa/(m*friction)={stiffness:.2f} > 0.5); pass "
                    f"lambda_mass >= {2 * dt * np.max(self.kappa) / gamma:g}"
                )
        return integrator

    # --- ABF bias -----------------------------------------------------------------------------------------
    def abf_gradient(self):
        """Current ramped ABF estimate of ``dA/dλ``, ``(n_dim, *grid.shape)`` in kJ/mol per CV unit."""
        n = self.abf_counts.astype(float)
        half = self.full_samples / 2.0
        ramp = (
            np.clip((n - half) / max(half, 1.0), 0.0, 1.0) if self.full_samples > 1 else (n > 0).astype(float)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(n[:, None] > 0, self.abf_sum / n[:, None], 0.0)
        return (ramp[:, None] * mean).T.reshape((self.grid.n_dim, *self.grid.shape))

    def _abf_free_energy_edges(self):
        """Â(λ) on the bin edges, from the ramped gradient (bin-wise constant in 1-D)."""
        grid, gradient = self.grid, self.abf_gradient()
        if grid.n_dim == 1:
            g = gradient[0] - (gradient[0].mean() if grid.periodic[0] else 0.0)
            edges = np.concatenate([[0.0], np.cumsum(g * grid.width[0])])
            if grid.periodic[0]:
                edges[-1] = edges[0]  # OpenMM's periodic splines need equal end points, bit for bit
            return edges
        centers = integrate_gradient(gradient, grid)
        points = [grid.centers(d) for d in range(2)]
        if np.all(grid.periodic):  # pad by wrapping so that the table matches at lower and upper edges
            centers = np.pad(centers, 1, mode="wrap")
            points = [np.r_[p[0] - w, p, p[-1] + w] for p, w in zip(points, grid.width, strict=True)]
        interpolate = RegularGridInterpolator(points, centers, bounds_error=False, fill_value=None)
        edges = interpolate(np.stack(np.meshgrid(grid.edges(0), grid.edges(1), indexing="ij"), axis=-1))
        if np.all(grid.periodic):
            edges[-1, :] = edges[0, :]
            edges[:, -1] = edges[:, 0]
        return edges

    def _refresh_bias(self):
        self._abf_edges = self._abf_free_energy_edges()
        self.coupling.getTabulatedFunction(0).setFunctionParameters(
            *table_arguments(self.grid, self._abf_edges)
        )
        self.coupling.updateParametersInContext(self.context)

    def _bias_energy(self, xi, lam):
        """Coupling + walls + ABF bias (linear interpolation of the table) per sample, kJ/mol."""
        grid = self.grid
        delta = grid.wrap(xi - lam)
        energy = 0.5 * (self.kappa * delta**2).sum(axis=1)
        for d in range(grid.n_dim):
            if not grid.periodic[d]:
                over = (
                    np.maximum(0, lam[:, d] - grid.upper[d]) ** 2
                    + np.maximum(0, grid.lower[d] - lam[:, d]) ** 2
                )
                energy += 0.5 * self.kappa[d] * over
        edges = getattr(self, "_abf_edges", None)
        if edges is not None:
            points = [grid.edges(d) for d in range(grid.n_dim)]
            clipped = np.clip(lam, grid.lower, grid.upper)
            energy -= RegularGridInterpolator(points, edges)(clipped)
        return energy

    # --- running ------------------------------------------------------------------------------------------
    def evaluate(self, positions_nm):
        """CV of positions of the CV atoms ``(n_frames, n_atoms, 3)`` in nm, batched, as float64."""
        x = np.asarray(positions_nm) * NM_TO_ANGSTROM
        with torch.no_grad():
            out = self._cv64(torch.as_tensor(x, dtype=module_dtype(self._cv64)))
        return out.double().numpy().reshape(len(x), -1)

    def run(self, n_steps):
        """Run ``n_steps`` steps of eABF, accumulating ABF and CZAR statistics.

        Parameters
        ----------
        n_steps : int
            Integration steps (the time step is the integrator's).

        Returns
        -------
        ExtendedABF
            ``self``, with ``results`` updated.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
            raise ValueError(f"n_steps={n_steps!r} must be a non-negative integer")
        if n_steps % self.bias_stride:
            raise ValueError(
                f"n_steps={n_steps} must be a multiple of bias_stride={self.bias_stride}; pass "
                f"n_steps={self.bias_stride * (n_steps // self.bias_stride)}"
            )
        bar = progress_bar(total=int(n_steps), verbose=self.verbose, desc="eABF", unit="step")
        done = 0
        n_dim = self.grid.n_dim
        while done < n_steps:
            chunk = min(self.update_frequency, n_steps - done)
            frames, lams = [], []
            for _ in range(chunk // self.sample_frequency):
                self._advance(self.sample_frequency)
                pos = self._positions()
                frames.append(pos[self.particles])
                lams.append(pos[self.lambda_index, :n_dim])
            if frames:
                self._accumulate(np.asarray(frames), np.asarray(lams))
            if chunk % self.sample_frequency:
                self._advance(chunk % self.sample_frequency)
            done += chunk
            self._refresh_bias()
            bar.update(chunk)
        bar.close()
        self._conclude()
        return self

    def _step(self, n_steps):
        self.integrator.step(n_steps)

    def _blow_up_hint(self):
        return f"kappa ({self.kappa.tolist()})"

    def _accumulate(self, frames, lam):
        """Samples of the CV atoms' positions (nm) and λ, the last taken now, into the samples, ABF and CZAR."""
        xi = self.evaluate(frames)
        if not np.all(np.isfinite(xi)):
            raise FloatingPointError(
                f"the CV became non-finite at step {self.n_steps}; lower the time step or kappa"
            )
        self._record(frames, xi=xi, lam=lam, bias=self._bias_energy(xi, lam))
        flat = self.grid.index(lam)
        keep = flat >= 0
        force = self.kappa * self.grid.wrap(lam[keep] - xi[keep])
        self.abf_counts += np.bincount(flat[keep], minlength=self.abf_counts.size)
        for d in range(self.grid.n_dim):
            self.abf_sum[:, d] += np.bincount(flat[keep], weights=force[:, d], minlength=self.abf_counts.size)
        self.czar.add(xi, lam)

    def _conclude(self):
        grid = self.grid
        estimate = to_dataset(self.czar)
        self.results.pmf = estimate["pmf"]
        self.results.czar_gradient = estimate["gradient"]
        self.results.counts = estimate["counts"]
        edges = self._abf_free_energy_edges()
        centers = RegularGridInterpolator([grid.edges(d) for d in range(grid.n_dim)], edges)(
            np.stack(np.meshgrid(*[grid.centers(d) for d in range(grid.n_dim)], indexing="ij"), axis=-1)
        )
        self.results.abf_bias = self._grid_array(-centers, "ABF bias on lambda")
        self.results.abf_counts = self._grid_array(self.abf_counts.reshape(grid.shape), "samples of lambda per bin",
                                                   "1")
        self.results.samples = self._samples_dataset()

    # --- restart --------------------------------------------------------------------------------------------
    def _settings(self):
        return {"grid": self.grid.to_dict(), "kappa": self.kappa, "temperature": self.temperature,
                "lambda_mass": self.lambda_mass, "full_samples": self.full_samples,
                "update_frequency": self.update_frequency, "sample_frequency": self.sample_frequency,
                "bias_stride": self.bias_stride, "store_positions": self.store_positions}  # fmt: skip

    def save(self, path):
        """Save the estimate and the simulation state to continue it later with :meth:`restore`.

        The file is written under a temporary name and renamed, so an interrupted save leaves the
        previous state intact.

        Parameters
        ----------
        path : str or path-like
            ``.npz`` is appended when missing (as :meth:`restore` does).

        Returns
        -------
        pathlib.Path
            The file written.
        """
        return self._save(path, abf_counts=self.abf_counts, abf_sum=self.abf_sum)

    def restore(self, path):
        """Continue from a state written by :meth:`save` with the same settings, CV, System and integrator.

        Parameters
        ----------
        path : str or path-like
            ``.npz`` is appended when missing.

        Returns
        -------
        ExtendedABF
            ``self``.

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        ValueError
            If the file is not an ExtendedABF state (truncated, foreign, text), or was written with
            other settings: the message names each differing setting and both values.
        """
        saved = self._load(path)
        self.abf_counts = saved["abf_counts"].copy()
        self.abf_sum = saved["abf_sum"].copy()
        self.czar = CZARAccumulator(self.grid, self.kappa, self.kT)
        self.czar.add(saved["xi"], saved["lam"])  # the samples hold all CZAR needs
        self._refresh_bias()
        self._conclude()
        return self
