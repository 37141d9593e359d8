"""OPES (on-the-fly probability enhanced sampling) along a CV module, through the package openmm-opes.

OPES builds its bias from an on-the-fly kernel estimate of the probability density along the CV,
``V(ξ) = (1 - 1/γ) kT ln(P(ξ)/Z + ε)``, deposited every ``pace`` steps; the bias soon becomes
nearly static and samples the well-tempered distribution ``∝ P(ξ)^{1/γ}`` (Invernizzi and Parrinello
2020; the explore variant, 2022). The sampler itself is ``openmm_opes.OPES``; this module gives it the
CV through :func:`mdcvkit.biasing.cv_force` (the package's one bridge to OpenMM) and records what
:class:`~mdcvkit.biasing.ExtendedABF` records: the free energy and the counts on a :class:`Grid`,
the CV and bias time series for reweighting (:func:`~mdcvkit.biasing.opes_log_weights`), and an
atomic, fingerprinted save/restore.

References
----------
M. Invernizzi, M. Parrinello, J. Phys. Chem. Lett. 11, 2731 (2020) (OPES).
M. Invernizzi, M. Parrinello, J. Chem. Theory Comput. 18, 3988 (2022) (OPES-explore).
"""

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from .._checks import check_int
from .._progress import progress_bar, resolve_verbose
from ..export.openmm import NM_TO_ANGSTROM, available_routes, check_route, evaluate_cv
from ._sampler import GridSampler
from .bias import cv_force
from .eabf import MOLAR_GAS_CONSTANT, _temperature_kelvin
from .reweight import histogram_pmf, opes_log_weights

__all__ = ["OPES"]

#: the prefix of the sampler's own state in a file written by :meth:`OPES.save`
_STATE_PREFIX = "opes."


def _sampler_class():
    """``openmm_opes.OPES``, imported when first needed."""
    try:
        from openmm_opes import OPES as Sampler
    except ImportError as err:
        raise ImportError("mdcvkit.biasing.OPES needs the package openmm-opes (Python >= 3.11): "
                          "pip install openmm-opes") from err  # fmt: skip
    return Sampler


def _positive(value, name, units, example):
    """``value`` (a number or an openmm Quantity in ``units``) as a positive float, or a ValueError naming it."""
    number = value.value_in_unit(units) if unit.is_quantity(value) else value
    if isinstance(number, bool) or not isinstance(number, (int, float, np.number)) or not 0 < number < np.inf:
        raise ValueError(f"{name}={value!r} must be a positive number ({units}); pass e.g. {name}={example}")
    return float(number)


def _check_sigma(sigma, n_cv):
    """``"adaptive"`` or ``n_cv`` positive kernel widths (CV units)."""
    if isinstance(sigma, str) and sigma == "adaptive":
        return sigma
    values = np.atleast_1d(np.asarray(sigma, dtype=object))
    if values.size in (1, n_cv) and all(not isinstance(v, (bool, str)) and isinstance(v, (int, float, np.number))
                                        and 0 < v < np.inf for v in values):  # fmt: skip
        return [float(v) for v in np.broadcast_to(values, (n_cv,))]
    raise ValueError(f"sigma={sigma!r} must be 'adaptive' or one or {n_cv} positive kernel widths in CV units "
                     f"(PLUMED's SIGMA, the CV's standard deviation in a basin); pass e.g. sigma='adaptive'")


class OPES(GridSampler):
    """OPES along a CV module, with the free energy on a grid and per-sample bias for reweighting.

    Parameters
    ----------
    system : openmm.System
        The unbiased system; it is copied, never modified.
    positions : array_like or openmm.unit.Quantity, shape (n_particles, 3)
        Starting positions (nm if bare numbers).
    cv : torch.nn.Module
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)`` with n_cv 1 or 2, with an
        ``n_cv`` attribute (a :class:`~mdcvkit.analysis.CollectiveVariable`).
    grid : Grid or tuple
        Bins in CV units for the free energy and the counts (``(lower, upper, n_bins)`` or one such
        tuple per component, or a :class:`Grid`); it must contain the starting CV. OPES tabulates its
        bias on ``2 n_bins + 1`` nodes over it; outside, the CV feels no bias.
    barrier : float or openmm.unit.Quantity
        PLUMED's ``BARRIER``: the free-energy barrier to overcome, kJ/mol.
    temperature : float or openmm.unit.Quantity
        K.
    pace : int, default 500
        PLUMED's ``PACE``: steps between kernel depositions.
    sigma : "adaptive", float or sequence of float, default "adaptive"
        PLUMED's ``SIGMA``: the initial kernel width in CV units (the CV's standard deviation in
        the unbiased basin), one or ``n_cv`` values; ``"adaptive"`` (``SIGMA=ADAPTIVE``) measures it
        every ``sample_frequency`` steps over a window of ten depositions.
    explore : bool, default False
        OPES-explore (PLUMED's ``OPES_METAD_EXPLORE``): the bias follows the sampled, well-tempered
        density rather than the reweighted one; it explores faster and converges more slowly.
    bias_factor : float, optional
        PLUMED's ``BIASFACTOR`` γ > 1; default ``barrier / kT``.
    particles : sequence of int, optional
        System index of each CV input atom; default all particles.
    route : {"auto", "expression", "python", "torch"}, default "auto"
        How the CV reaches OpenMM (see :func:`mdcvkit.biasing.add_cv_bias`).
    integrator : openmm.Integrator, optional
        A stochastic integrator at ``temperature``; default LangevinMiddle, 1/ps, 2 fs. Its seed
        is set from ``seed``. With ``bias_stride > 1`` it must be a Langevin integrator.
    platform : str, optional
        OpenMM platform; default :func:`mdcvkit.biasing.default_platform`.
    bias_stride : int, default 1
        Steps between evaluations of the bias (:func:`mdcvkit.biasing.bias_integrator`); must
        divide ``sample_frequency``.
    sample_frequency : int, default 10
        Steps between samples of ξ and of the bias; must divide ``pace``.
    store_positions : bool, default False
        Also keep the CV atoms' positions (Å) of every sample in ``results.samples``.
    seed : int, default 0
        Seeds the integrator and the initial velocities.
    verbose : bool or None, default None
        tqdm progress bar in :meth:`run`; None shows it when stderr is a terminal, False silences it.

    Attributes
    ----------
    results : MDAnalysis.analysis.base.Results
        After :meth:`run`: ``pmf`` (OPES's free-energy estimate, its reweighted kernel density,
        on the grid centres, kJ/mol, 0 at its minimum; NaN before the first kernel),
        ``reweighted_pmf`` (the histogram of the samples weighted by :func:`opes_log_weights`, NaN
        in empty bins), ``bias`` (the bias ``V`` on the grid centres, kJ/mol), ``counts`` (samples
        of ξ per bin), ``samples`` (Dataset over ``sample``: ``time`` in ps, ``xi`` and the bias
        ``bias`` acting at each sample, kJ/mol), ``n_kernels``.
    context : openmm.Context
        The running simulation.

    Raises
    ------
    ValueError
        For a barrier ≤ 0, a pace < 1, a bias factor ≤ 1, a CV of more than 2 components, a grid
        that does not fit the CV or does not contain the start, or strides that do not divide.

    Examples
    --------
    >>> toy = mk.systems.DoubleWell2D()                                                     # doctest: +SKIP
    >>> opes = OPES.for_toy(toy, "x1", grid=(-2, 2, 80), barrier=2.0).run(600_000)        # doctest: +SKIP
    >>> opes.results.pmf                                                                    # doctest: +SKIP
    """

    _method = "OPES"
    _n_cv_limit = "OPES's grid takes 1 or 2 here"
    _series = ("xi", "bias")

    def __init__(self, system, positions, cv, grid, barrier, temperature, *, pace=500, sigma="adaptive",
                 explore=False, bias_factor=None, particles=None, route="auto", integrator=None, platform=None,
                 bias_stride=1, sample_frequency=10, store_positions=False, seed=0, verbose=None):  # fmt: skip
        positions, xi0 = self._set_up(system, positions, cv, grid, particles)
        n_cv = xi0.size
        self.temperature = _temperature_kelvin(temperature)
        self.kT = MOLAR_GAS_CONSTANT * self.temperature
        self.barrier = _positive(barrier, "barrier", unit.kilojoule_per_mole, f"{10 * self.kT:.3g} (10 kT)")
        self.pace = check_int(pace, "pace", 1, "pass the steps between kernel depositions (PLUMED's PACE), e.g. 500")
        self.sigma = _check_sigma(sigma, n_cv)
        self.explore = bool(explore)
        self.bias_factor = self.barrier / self.kT if bias_factor is None else _positive(
            bias_factor, "bias_factor", unit.dimensionless, 10)  # fmt: skip
        if self.bias_factor <= 1:
            raise ValueError(f"bias_factor={self.bias_factor:g} must exceed 1 (it is barrier / kT by default); pass a "
                             f"larger barrier (here kT = {self.kT:.3g} kJ/mol) or bias_factor")  # fmt: skip
        self.bias_stride = check_int(bias_stride, "bias_stride", 1)
        self.sample_frequency = check_int(sample_frequency, "sample_frequency", 1)
        if self.sample_frequency % self.bias_stride or self.pace % self.sample_frequency:
            raise ValueError(f"bias_stride={bias_stride} must divide sample_frequency={sample_frequency}, which must "
                             f"divide pace={pace}; pass e.g. sample_frequency={self.bias_stride}, pace="
                             f"{self.bias_stride * max(1, self.pace // self.bias_stride)}")  # fmt: skip
        check_route(route)
        self.route = available_routes(cv, self.particles)[0] if route == "auto" else route  # what cv_force takes
        self.store_positions = bool(store_positions)
        self.seed, self.verbose = seed, verbose
        resolve_verbose(verbose)  # checks its type
        self.system = openmm.XmlSerializer.clone(system)
        self._sampler = self._build_sampler()
        self.integrator = self._integrator(integrator, self.force)
        # openmm-opes steps an app.Simulation; the topology is not used
        self._simulation = app.Simulation(app.Topology(), self.system, self.integrator, self._platform(platform))
        self.context = self._simulation.context
        self._start(positions)

    @classmethod
    def for_toy(cls, toy, cv="x1", grid=None, barrier=None, **kwargs):
        """OPES along a coordinate (or any CV) of a :mod:`mdcvkit.systems` toy, moved by the toy's Brownian integrator.

        Parameters
        ----------
        toy : mdcvkit.systems.ToySystem
            Its System, start and temperature are used.
        cv : str, tuple of str or CV module, default "x1"
            A name or names that ``toy.cv`` knows, or a CV module on positions in Å.
        grid : Grid or tuple
            In reduced units (nm).
        barrier : float
            In kJ/mol, the toys' reduced energy unit; e.g. ``8 * toy.kT``.
        **kwargs
            Other settings of :class:`OPES`; ``integrator`` defaults to ``toy.integrator(seed)``.

        Returns
        -------
        OPES
        """
        return cls(toy.system, toy.positions, cls._toy_cv(toy, cv, kwargs), grid, barrier, toy.temperature, **kwargs)

    # --- building ----------------------------------------------------------------------------------------
    def _build_sampler(self):
        """``openmm_opes.OPES`` on one BiasVariable per CV component; it adds its force to ``self.system``."""
        grid, stride, adaptive = self.grid, self.bias_stride, self.sigma == "adaptive"
        variables = []
        for d in range(grid.n_dim):
            force = cv_force(self.cv, self.particles, self._system_size, component=d, route=self.route)
            width = grid.width[d] if adaptive else self.sigma[d]
            variables.append(app.BiasVariable(force, float(grid.lower[d]), float(grid.upper[d]), float(width),
                                              bool(grid.periodic[d]), int(2 * grid.n_bins[d] + 1)))  # fmt: skip
        sampler = _sampler_class()(self.system, variables, self.temperature, self.barrier, self.pace // stride,
                                   self.sample_frequency // stride if adaptive else None, biasFactor=self.bias_factor,
                                   exploreMode=self.explore)  # fmt: skip
        self.force = self.system.getForce(self.system.getNumForces() - 1)
        self.force.setName("mdcvkit OPES bias")
        return sampler

    # --- running -----------------------------------------------------------------------------------------
    def run(self, n_steps):
        """Run ``n_steps`` steps of OPES, depositing kernels every ``pace`` steps and sampling ξ and the bias.

        Parameters
        ----------
        n_steps : int
            Integration steps, a multiple of ``sample_frequency``.

        Returns
        -------
        OPES
            ``self``, with ``results`` updated.
        """
        n_steps = check_int(n_steps, "n_steps", 0)
        if n_steps % self.sample_frequency:
            raise ValueError(f"n_steps={n_steps} must be a multiple of sample_frequency={self.sample_frequency}; "
                             f"pass n_steps={self.sample_frequency * (n_steps // self.sample_frequency)}")
        bar = progress_bar(total=n_steps, verbose=self.verbose, desc="OPES", unit="step")
        done = 0
        while done < n_steps:
            chunk = min(self.pace - self.n_steps % self.pace, n_steps - done)
            frames, biases = [], []
            for _ in range(chunk // self.sample_frequency):
                self._advance(self.sample_frequency)
                frames.append(self._positions()[self.particles])
                biases.append(self._sampler.getBiasEnergy(self.context).value_in_unit(unit.kilojoule_per_mole))
            self._accumulate(np.asarray(frames), np.asarray(biases))
            done += chunk
            bar.update(chunk)
        bar.close()
        self._conclude()
        return self

    def _step(self, n_steps):
        self._sampler.step(self._simulation, n_steps)

    def _blow_up_hint(self):
        return f"the barrier ({self.barrier:g} kJ/mol)"

    def _accumulate(self, frames, biases):
        """Samples of the CV atoms' positions (nm) and of the bias (kJ/mol), the last taken now."""
        self._record(frames, xi=evaluate_cv(self._cv64, frames * NM_TO_ANGSTROM, self.grid.n_dim), bias=biases)

    def _on_grid(self, values):
        """Values on OpenMM's ``2 n + 1`` nodes per axis (slowest axis last there) at the grid's bin centres."""
        values = np.transpose(np.asarray(values, dtype=float))
        return values[tuple(slice(1, None, 2) for _ in range(self.grid.n_dim))]

    def _conclude(self):
        grid = self.grid
        free = self._on_grid(self._sampler.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole))
        free[~np.isfinite(free)] = np.nan
        if np.any(np.isfinite(free)):
            free -= np.nanmin(free)
        self.results.pmf = self._grid_array(free, "OPES free energy (reweighted kernel density)")
        bias = self._on_grid(self._sampler.getBias().value_in_unit(unit.kilojoule_per_mole))
        self.results.bias = self._grid_array(bias, "OPES bias")
        self.results.samples = self._samples_dataset()
        xi = self.results.samples.xi.values
        index = grid.index(xi)
        counts = np.bincount(index[index >= 0], minlength=int(np.prod(grid.shape))).reshape(grid.shape)
        self.results.counts = self._grid_array(counts, "samples of the CV per bin", "1")
        reweighted = (histogram_pmf(xi, opes_log_weights(self), grid, self.kT) if len(xi)
                      else np.full(grid.shape, np.nan))  # fmt: skip
        self.results.reweighted_pmf = self._grid_array(reweighted, "reweighted histogram of the OPES samples")
        self.results.n_kernels = int(self._sampler.getNumKernels())

    # --- restart -----------------------------------------------------------------------------------------
    def _settings(self):
        return {"grid": self.grid.to_dict(), "barrier": self.barrier, "pace": self.pace, "sigma": self.sigma,
                "explore": self.explore, "bias_factor": self.bias_factor, "temperature": self.temperature,
                "sample_frequency": self.sample_frequency, "bias_stride": self.bias_stride,
                "store_positions": self.store_positions}  # fmt: skip

    def save(self, path):
        """Write the kernels, the samples and the simulation state to one file, for :meth:`restore`.

        Written under a temporary name, then renamed: a save that is interrupted keeps the last file whole.

        Parameters
        ----------
        path : str or path-like
            Where; ``.npz`` is added unless the name ends in it (:meth:`restore` adds it too).

        Returns
        -------
        pathlib.Path
            Where the state now is.
        """
        return self._save(path, **{_STATE_PREFIX + key: value for key, value in self._sampler.getState().items()})

    def restore(self, path):
        """Read back what :meth:`save` wrote, kernels and samples included, and continue from there.

        Parameters
        ----------
        path : str or path-like
            The file of :meth:`save` (``.npz`` appended when missing); it must come from a run with the
            same settings, CV, System and integrator.

        Returns
        -------
        OPES
            ``self``, its ``results`` those of the saved run.

        Raises
        ------
        FileNotFoundError
            When nothing is at ``path``.
        ValueError
            When the file is no OPES state (text, truncated, foreign), or comes from other settings, another
            CV (its parameters or featurizer) or another System: the message names each difference with both
            values.
        """
        saved = self._load(path)
        self.context.setStepCount(self.n_steps // self.bias_stride)  # openmm-opes deposits on the step count
        self._sampler.setState({key[len(_STATE_PREFIX):]: value for key, value in saved.items()
                                if key.startswith(_STATE_PREFIX)})  # fmt: skip
        self._sampler.updateContext(self.context)
        self._conclude()
        return self
