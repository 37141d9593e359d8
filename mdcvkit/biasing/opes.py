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

import json

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch
import xarray as xr
from MDAnalysis.analysis.base import Results

from .._checks import check_int, openmm_seed
from .._io import atomic_path
from .._params import check_fingerprint, data_digest, plain
from .._progress import progress_bar, resolve_verbose
from ..export.openmm import NM_TO_ANGSTROM, _float64, available_routes, check_route, evaluate_cv, positions_nm
from .bias import bias_integrator, check_particles, cv_force, default_platform
from .eabf import MOLAR_GAS_CONSTANT, ExtendedABF, _temperature_kelvin
from .grid import Grid
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


class OPES:
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

    def __init__(self, system, positions, cv, grid, barrier, temperature, *, pace=500, sigma="adaptive",
                 explore=False, bias_factor=None, particles=None, route="auto", integrator=None, platform=None,
                 bias_stride=1, sample_frequency=10, store_positions=False, seed=0, verbose=None):  # fmt: skip
        positions = positions_nm(positions)
        self.particles = check_particles(system, cv, particles, positions)
        xi0 = evaluate_cv(cv, positions[self.particles] * NM_TO_ANGSTROM)[0]
        n_cv = xi0.size
        if n_cv not in (1, 2):
            raise ValueError(f"the CV has n_cv={n_cv} components; OPES's grid takes 1 or 2 here, select components "
                             f"(e.g. a CollectiveVariable of 2 outputs)")  # fmt: skip
        names = getattr(cv, "names", None)
        self.grid = Grid.create(grid, names=names if names is not None and len(names) == n_cv else None)
        if self.grid.n_dim != n_cv:
            raise ValueError(f"grid has {self.grid.n_dim} component(s) but the CV has n_cv={n_cv}; pass one per CV")
        if n_cv == 2 and self.grid.periodic[0] != self.grid.periodic[1]:
            raise ValueError(f"grid periodic={self.grid.periodic.tolist()}: a 2-D OPES grid must be periodic in both "
                             f"components or in neither (OpenMM's 2-D tables are)")  # fmt: skip
        if not self.grid.contains(xi0[None])[0]:
            raise ValueError(f"grid {self.grid} does not contain the starting CV value {xi0.tolist()}; widen the grid "
                             f"or start from positions inside it")  # fmt: skip
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
        self.cv, self.store_positions = cv, bool(store_positions)
        self.seed, self.verbose = seed, verbose
        resolve_verbose(verbose)  # checks its type
        self._system_size = system.getNumParticles()
        self._system_digest = data_digest(np.frombuffer(openmm.XmlSerializer.serialize(system).encode(), np.uint8))
        self.system = openmm.XmlSerializer.clone(system)
        self._sampler = self._build_sampler()
        self.integrator = self._integrator(integrator)
        platform = default_platform(self._system_size) if platform is None else (
            openmm.Platform.getPlatformByName(platform))  # fmt: skip
        # openmm-opes steps an app.Simulation; the topology is not used
        self._simulation = app.Simulation(app.Topology(), self.system, self.integrator, platform)
        self.context = self._simulation.context
        self.context.setPositions(positions)
        self.context.setVelocitiesToTemperature(self.temperature, openmm_seed(seed))
        self._cv64 = _float64(cv)
        self._samples = {"time": [], "xi": [], "bias": [], "positions": []}
        self.n_steps = 0
        self.results = Results()

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
        module = toy.cv(cv) if isinstance(cv, (str, tuple)) else cv
        kwargs.setdefault("integrator", toy.integrator(kwargs.get("seed", 0)))
        return cls(toy.system, toy.positions, module, grid, barrier, toy.temperature, **kwargs)

    # --- building ----------------------------------------------------------------------------------------
    def _build_sampler(self):
        """``openmm_opes.OPES`` on one BiasVariable per CV component; it adds its force to ``self.system``."""
        grid, stride = self.grid, self.bias_stride
        variables = []
        for d in range(grid.n_dim):
            force = cv_force(self.cv, self.particles, self._system_size, component=d, route=self.route)
            width = grid.width[d] if self.sigma == "adaptive" else self.sigma[d]
            variables.append(app.BiasVariable(force, float(grid.lower[d]), float(grid.upper[d]), float(width),
                                              bool(grid.periodic[d]), int(2 * grid.n_bins[d] + 1)))  # fmt: skip
        adaptive = self.sigma == "adaptive"
        sampler = _sampler_class()(self.system, variables, self.temperature, self.barrier, self.pace // stride,
                                   self.sample_frequency // stride if adaptive else None, biasFactor=self.bias_factor,
                                   exploreMode=self.explore)  # fmt: skip
        self.force = self.system.getForce(self.system.getNumForces() - 1)
        self.force.setName("mdcvkit OPES bias")
        return sampler

    def _integrator(self, integrator):
        if integrator is None:
            integrator = openmm.LangevinMiddleIntegrator(self.temperature, 1.0, 0.002)
        else:
            integrator = openmm.XmlSerializer.clone(integrator)
        self.timestep = integrator.getStepSize().value_in_unit(unit.picosecond)
        if self.bias_stride > 1:
            if not isinstance(integrator, (openmm.LangevinMiddleIntegrator, openmm.LangevinIntegrator)):
                raise ValueError(f"bias_stride={self.bias_stride} needs a Langevin integrator, not "
                                 f"{type(integrator).__name__}; pass bias_stride=1 or a LangevinMiddleIntegrator")
            integrator = bias_integrator(self.system, self.force, integrator.getTemperature(),
                                         timestep=self.timestep, friction=integrator.getFriction(),
                                         bias_stride=self.bias_stride)  # fmt: skip
        if hasattr(integrator, "setRandomNumberSeed"):
            integrator.setRandomNumberSeed(openmm_seed(self.seed))
        return integrator

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
                # a State holds positions in nm; skipping the unit conversion halves the sampling cost
                frames.append(self.context.getState(getPositions=True).getPositions(asNumpy=True)._value[self.particles])
                biases.append(self._sampler.getBiasEnergy(self.context).value_in_unit(unit.kilojoule_per_mole))
            self._accumulate(np.asarray(frames), np.asarray(biases))
            done += chunk
            bar.update(chunk)
        bar.close()
        self._conclude()
        return self

    def _advance(self, n_steps):
        try:
            self._sampler.step(self._simulation, n_steps // self.bias_stride)  # an MTS step is bias_stride steps
        except (openmm.OpenMMException, FloatingPointError):
            positions = self.context.getState(getPositions=True).getPositions(asNumpy=True)._value
            if np.all(np.isfinite(positions)):
                raise
            raise FloatingPointError(f"OPES blew up within {n_steps} steps after step {self.n_steps}: the positions "
                                     f"became non-finite; lower the time step ({1000 * self.timestep:g} fs), "
                                     f"bias_stride ({self.bias_stride}) or the barrier ({self.barrier:g} kJ/mol)"
                                     ) from None  # fmt: skip
        self.n_steps += n_steps

    def _accumulate(self, frames, biases):
        xi = evaluate_cv(self._cv64, frames * NM_TO_ANGSTROM, self.grid.n_dim)
        last = self.n_steps * self.timestep
        times = last - self.sample_frequency * self.timestep * np.arange(len(xi))[::-1]
        for key, value in (("time", times), ("xi", xi), ("bias", biases)):
            self._samples[key].append(value)
        if self.store_positions:
            self._samples["positions"].append(frames * NM_TO_ANGSTROM)

    def _on_grid(self, values):
        """Values on OpenMM's ``2 n + 1`` nodes per axis (slowest axis last there) at the grid's bin centres."""
        values = np.transpose(np.asarray(values, dtype=float))
        return values[tuple(slice(1, None, 2) for _ in range(self.grid.n_dim))]

    def _conclude(self):
        grid = self.grid
        coords = {n: (n, grid.centers(d), {"long_name": n, "units": "CV units"}) for d, n in enumerate(grid.names)}
        dims = tuple(grid.names)

        def on_grid(values, long_name, units="kJ/mol"):
            return xr.DataArray(values, dims=dims, coords=coords, attrs={"long_name": long_name, "units": units})

        free = self._on_grid(self._sampler.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole))
        free[~np.isfinite(free)] = np.nan
        if np.any(np.isfinite(free)):
            free -= np.nanmin(free)
        self.results.pmf = on_grid(free, "OPES free energy (reweighted kernel density)")
        self.results.bias = on_grid(self._on_grid(self._sampler.getBias().value_in_unit(unit.kilojoule_per_mole)),
                                    "OPES bias")  # fmt: skip
        self.results.samples = self._samples_dataset()
        xi = self.results.samples.xi.values
        index = grid.index(xi)
        counts = np.bincount(index[index >= 0], minlength=int(np.prod(grid.shape))).reshape(grid.shape)
        self.results.counts = on_grid(counts, "samples of the CV per bin", "1")
        reweighted = (histogram_pmf(xi, opes_log_weights(self), grid, self.kT) if len(xi)
                      else np.full(grid.shape, np.nan))  # fmt: skip
        self.results.reweighted_pmf = on_grid(reweighted, "reweighted histogram of the OPES samples")
        self.results.n_kernels = int(self._sampler.getNumKernels())

    def _samples_dataset(self):
        s, n_dim = self._samples, self.grid.n_dim
        time = np.concatenate(s["time"]) if s["time"] else np.zeros(0)
        data = {
            "xi": (("sample", "cv"), np.concatenate(s["xi"]) if s["xi"] else np.zeros((0, n_dim)),
                   {"long_name": "collective variable", "units": "CV units"}),
            "bias": (("sample",), np.concatenate(s["bias"]) if s["bias"] else np.zeros(0),
                     {"long_name": "OPES bias energy", "units": "kJ/mol"}),
        }  # fmt: skip
        if self.store_positions:
            positions = np.concatenate(s["positions"]) if s["positions"] else np.zeros((0, len(self.particles), 3))
            data["positions"] = (("sample", "atom", "spatial"), positions,
                                 {"long_name": "positions of the CV atoms", "units": "Å"})  # fmt: skip
        return xr.Dataset(data, coords={"sample": np.arange(len(time)), "time": ("sample", time, {"units": "ps"}),
                                        "cv": self.grid.names},
                          attrs={"long_name": "OPES samples", "time_units": "ps", "kT": self.kT})  # fmt: skip

    # --- restart -----------------------------------------------------------------------------------------
    def _fingerprint(self):
        """Everything that determines the run: sampler settings, the CV, the System, the integrator."""
        cv = self.cv
        state = cv.state_dict() if isinstance(cv, torch.nn.Module) else {}
        featurizer = getattr(cv, "featurizer", None)
        return plain({
            "sampler": {"grid": self.grid.to_dict(), "barrier": self.barrier, "pace": self.pace, "sigma": self.sigma,
                        "explore": self.explore, "bias_factor": self.bias_factor, "temperature": self.temperature,
                        "sample_frequency": self.sample_frequency, "bias_stride": self.bias_stride,
                        "store_positions": self.store_positions},
            "cv": {"class": type(cv).__name__, "parameters": data_digest(*state.values()),
                   "featurizer": featurizer.get_config() if featurizer is not None else None,
                   "particles": self.particles, "route": self.route},
            "system": {"n_particles": self._system_size, "digest": self._system_digest},
            "integrator": {"class": type(self.integrator).__name__, "timestep": self.timestep},
        })  # fmt: skip

    _state_path = staticmethod(ExtendedABF._state_path)  # the same ".npz" rule as eABF's state files

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
        path = self._state_path(path)
        state = self.context.getState(getPositions=True, getVelocities=True, getParameters=True)
        samples = self._samples_dataset()
        arrays = {"fingerprint": json.dumps(self._fingerprint()), "state": openmm.XmlSerializer.serialize(state),
                  "n_steps": self.n_steps, **{key: samples[key].values for key in ("time", "xi", "bias")},
                  **{_STATE_PREFIX + key: value for key, value in self._sampler.getState().items()}}  # fmt: skip
        if self.store_positions:
            arrays["positions"] = samples.positions.values
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        return path

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
        path = self._state_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"'{path}': no such file; expected an OPES state written by save()")
        try:
            with np.load(path) as saved:
                saved = {key: saved[key] for key in saved.files}
            fingerprint = json.loads(str(saved["fingerprint"]))
        except Exception as err:  # zip, pickle, JSON or missing-key errors of a file that is not ours
            raise ValueError(f"'{path}' is not an OPES state written by save() ({type(err).__name__}: {err}); pass "
                             f"the file save() wrote") from err  # fmt: skip
        check_fingerprint(fingerprint, self._fingerprint(), path, name="path")
        self.context.setState(openmm.XmlSerializer.deserialize(str(saved["state"])))
        self.n_steps = int(saved["n_steps"])
        self.context.setStepCount(self.n_steps // self.bias_stride)  # openmm-opes deposits on the step count
        self._sampler.setState({key[len(_STATE_PREFIX):]: value for key, value in saved.items()
                                if key.startswith(_STATE_PREFIX)})  # fmt: skip
        self._sampler.updateContext(self.context)
        self._samples = {key: [saved[key]] for key in ("time", "xi", "bias")}
        self._samples["positions"] = [saved["positions"]] if self.store_positions else []
        self._conclude()
        return self
