"""What :class:`~mdcvkit.biasing.ExtendedABF` and :class:`~mdcvkit.biasing.OPES` share: the CV and System
set-up, the integrator, stepping, the samples of a run and the fingerprinted state files.

Not public API: both samplers derive from :class:`GridSampler` and keep their own ``run``, ``save`` and
``restore`` (with their docstrings), which call the pieces here.
"""

import json

import numpy as np
import openmm
import openmm.unit as unit
import torch
import xarray as xr
from MDAnalysis.analysis.base import Results

from .._checks import openmm_seed
from .._io import as_path, atomic_path
from .._params import check_fingerprint, data_digest, plain
from ..export.openmm import NM_TO_ANGSTROM, _float64, evaluate_cv, positions_nm
from .bias import bias_integrator, check_particles, default_platform
from .grid import Grid

__all__ = ["GridSampler"]

#: dims, long name and units of each series of ``results.samples`` (``{method}``: the sampler's name)
_SERIES = {
    "xi": (("sample", "cv"), "collective variable", "CV units"),
    "lam": (("sample", "cv"), "extended variable lambda", "CV units"),
    "bias": (("sample",), "{method} bias energy", "kJ/mol"),
    "positions": (("sample", "atom", "spatial"), "positions of the CV atoms", "Å"),
}


class GridSampler:
    """Base of the samplers that bias a CV module on a :class:`Grid` and sample it every ``sample_frequency`` steps.

    A subclass sets the class attributes below and calls :meth:`_set_up` first in ``__init__``; it stores
    ``temperature``, ``kT``, ``sample_frequency``, ``bias_stride``, ``store_positions``, ``seed``, ``route``,
    ``system``, ``integrator`` (from :meth:`_integrator`) and ``context``, and defines ``_settings`` (its part
    of the fingerprint), ``_step(n)`` (n integrator steps), ``_blow_up_hint`` and ``_conclude``.
    """

    #: the method's name in messages and labels, e.g. "eABF"
    _method = ""
    #: what the message about a CV of more than two components says the sampler takes
    _n_cv_limit = ""
    #: the series sampled besides ``time`` (and ``positions`` with ``store_positions``), keys of ``_SERIES``
    _series = ("xi", "bias")

    # --- set-up ------------------------------------------------------------------------------------------
    def _set_up(self, system, positions, cv, grid, particles):
        """Check the CV at the start against ``grid`` and keep what the run needs of the System.

        Returns the positions in nm and the starting CV value ``(n_cv,)``.
        """
        positions = positions_nm(positions)
        self.particles = check_particles(system, cv, particles, positions)
        xi0 = evaluate_cv(cv, positions[self.particles] * NM_TO_ANGSTROM)[0]
        n_cv = xi0.size
        if n_cv not in (1, 2):
            raise ValueError(f"the CV has n_cv={n_cv} components; {self._n_cv_limit}, select components "
                             f"(e.g. a CollectiveVariable of 2 outputs)")  # fmt: skip
        names = getattr(cv, "names", None)
        self.grid = Grid.create(grid, names=names if names is not None and len(names) == n_cv else None)
        if self.grid.n_dim != n_cv:
            raise ValueError(f"grid has {self.grid.n_dim} component(s) but the CV has n_cv={n_cv}; pass one per CV")
        if n_cv == 2 and self.grid.periodic[0] != self.grid.periodic[1]:
            raise ValueError(f"grid periodic={self.grid.periodic.tolist()}: a 2-D {self._method} grid must be periodic "
                             f"in both components or in neither (OpenMM's 2-D tables are); make both periodic or "
                             f"neither")  # fmt: skip
        if not self.grid.contains(xi0[None])[0]:
            raise ValueError(f"grid {self.grid} does not contain the starting CV value {xi0.tolist()}; widen the grid "
                             f"or start from positions inside it")  # fmt: skip
        self.cv = cv
        self._cv64 = _float64(cv)
        self._system_size = system.getNumParticles()
        self._system_digest = data_digest(np.frombuffer(openmm.XmlSerializer.serialize(system).encode(), np.uint8))
        self._samples = {key: [] for key in ("time", *self._series, "positions")}
        self.n_steps = 0
        self.results = Results()
        return positions, xi0

    @staticmethod
    def _toy_cv(toy, cv, kwargs):
        """The CV module of ``for_toy`` (``toy.cv(cv)`` for names); ``kwargs`` get the toy's integrator by default."""
        kwargs.setdefault("integrator", toy.integrator(kwargs.get("seed", 0)))
        return toy.cv(cv) if isinstance(cv, (str, tuple)) else cv

    def _platform(self, platform):
        """The OpenMM platform named ``platform``, or :func:`default_platform` for the sampled System."""
        if platform is None:
            return default_platform(self.system.getNumParticles())
        return openmm.Platform.getPlatformByName(platform)

    def _start(self, positions):
        """Set the positions (nm) and draw the velocities at ``temperature`` from ``seed``."""
        self.context.setPositions(positions)
        self.context.setVelocitiesToTemperature(self.temperature, openmm_seed(self.seed))

    def _integrator(self, integrator, bias):
        """A seeded copy of ``integrator`` (default LangevinMiddle, 1/ps, 2 fs); with ``bias_stride > 1``, the
        multiple-time-step Langevin integrator of :func:`bias_integrator` that evaluates ``bias`` every stride."""
        if integrator is None:
            integrator = openmm.LangevinMiddleIntegrator(self.temperature, 1.0, 0.002)
        else:
            integrator = openmm.XmlSerializer.clone(integrator)
        self.timestep = integrator.getStepSize().value_in_unit(unit.picosecond)  # of the fast forces
        if self.bias_stride > 1:
            if not isinstance(integrator, (openmm.LangevinMiddleIntegrator, openmm.LangevinIntegrator)):
                raise ValueError(f"bias_stride={self.bias_stride} needs a Langevin integrator, not "
                                 f"{type(integrator).__name__}, for multiple time stepping (MTSLangevinIntegrator); "
                                 f"pass bias_stride=1 or a LangevinMiddleIntegrator")  # fmt: skip
            integrator = bias_integrator(self.system, bias, integrator.getTemperature(), timestep=self.timestep,
                                         friction=integrator.getFriction(), bias_stride=self.bias_stride)  # fmt: skip
        if hasattr(integrator, "setRandomNumberSeed"):
            integrator.setRandomNumberSeed(openmm_seed(self.seed))
        return integrator

    # --- running -----------------------------------------------------------------------------------------
    def _positions(self):
        """All positions now, nm (a State holds nm: skipping the unit conversion halves the sampling cost)."""
        return self.context.getState(getPositions=True).getPositions(asNumpy=True)._value

    def _advance(self, n_steps):
        """Integrate ``n_steps`` steps (a multiple of ``bias_stride``); a blow-up is a FloatingPointError."""
        try:
            self._step(n_steps // self.bias_stride)  # an MTS step is bias_stride steps
        except (openmm.OpenMMException, FloatingPointError):
            if np.all(np.isfinite(self._positions())):
                raise
            raise FloatingPointError(
                f"{self._method} blew up within {n_steps} steps after step {self.n_steps}: the positions became "
                f"non-finite; lower the time step ({1000 * self.timestep:g} fs), bias_stride ({self.bias_stride}) or "
                f"{self._blow_up_hint()}; a CV on Kabsch-aligned coordinates has no bounded gradient where the best "
                f"rotation onto its reference is not unique (see mdcvkit.features.AlignedPositions)"
            ) from None
        self.n_steps += n_steps

    def _record(self, positions, **series):
        """Keep a block of samples, one every ``sample_frequency`` steps, the last one taken at the current step.

        ``positions`` are the CV atoms' ``(n_samples, n_atoms, 3)`` in nm, ``series`` the arrays of ``_series``.
        """
        steps = self.n_steps - self.sample_frequency * np.arange(len(positions))[::-1]
        self._samples["time"].append(self.timestep * steps)
        for key, values in series.items():
            self._samples[key].append(values)
        if self.store_positions:
            self._samples["positions"].append(positions * NM_TO_ANGSTROM)

    def _sample_arrays(self):
        """The samples so far: ``time`` (ps), the ``_series`` and, with ``store_positions``, ``positions`` (Å)."""
        n_dim = self.grid.n_dim
        empty = {"time": (0,), "xi": (0, n_dim), "lam": (0, n_dim), "bias": (0,),
                 "positions": (0, len(self.particles), 3)}  # fmt: skip
        keys = ("time", *self._series, *(("positions",) if self.store_positions else ()))
        return {key: np.concatenate(self._samples[key]) if self._samples[key] else np.zeros(empty[key]) for key in keys}

    def _samples_dataset(self):
        """``results.samples``: a Dataset over ``sample`` with ``time`` in ps and the sampled series."""
        arrays = self._sample_arrays()
        time = arrays.pop("time")
        data = {}
        for key, values in arrays.items():
            dims, long_name, units = _SERIES[key]
            data[key] = (dims, values, {"long_name": long_name.format(method=self._method), "units": units})
        coords = {"sample": np.arange(len(time)), "time": ("sample", time, {"units": "ps"}), "cv": self.grid.names}
        attrs = {"long_name": f"{self._method} samples", "time_units": "ps", "kT": self.kT}
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def _grid_array(self, values, long_name, units="kJ/mol"):
        """``values`` of shape ``grid.shape`` as a DataArray over the grid's bin centres."""
        grid = self.grid
        coords = {n: (n, grid.centers(d), {"long_name": n, "units": "CV units"}) for d, n in enumerate(grid.names)}
        attrs = {"long_name": long_name, "units": units}
        return xr.DataArray(values, dims=tuple(grid.names), coords=coords, attrs=attrs)

    # --- state files -------------------------------------------------------------------------------------
    def _fingerprint(self):
        """Everything that determines the run: the sampler's settings, the CV, the System, the integrator."""
        cv = self.cv
        state = cv.state_dict() if isinstance(cv, torch.nn.Module) else {}
        featurizer = getattr(cv, "featurizer", None)
        return plain({
            "sampler": self._settings(),
            "cv": {"class": type(cv).__name__, "parameters": data_digest(*state.values()),
                   "featurizer": featurizer.get_config() if featurizer is not None else None,
                   "particles": self.particles, "route": self.route},
            "system": {"n_particles": self._system_size, "digest": self._system_digest},
            "integrator": {"class": type(self.integrator).__name__, "timestep": self.timestep},
        })  # fmt: skip

    @staticmethod
    def _state_path(path):
        """``path`` as a Path ending in ``.npz``."""
        path = as_path(path)
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    def _save(self, path, **arrays):
        """Write the fingerprint, the simulation state, the step, the samples and ``arrays`` to ``path``, atomically."""
        path = self._state_path(path)
        state = self.context.getState(getPositions=True, getVelocities=True, getParameters=True)
        arrays = {"fingerprint": json.dumps(self._fingerprint()), "state": openmm.XmlSerializer.serialize(state),
                  "n_steps": self.n_steps, **self._sample_arrays(), **arrays}  # fmt: skip
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        return path

    def _load(self, path):
        """Read a file of :meth:`_save` for this run's fingerprint; set the simulation, the step and the samples.

        Returns every array of the file, for the subclass to restore its own state from.
        """
        path = self._state_path(path)
        name = type(self).__name__
        if not path.is_file():
            raise FileNotFoundError(f"'{path}': no such file; expected an {name} state written by save()")
        try:
            with np.load(path) as saved:
                saved = {key: saved[key] for key in saved.files}
            fingerprint = json.loads(str(saved["fingerprint"]))
        except Exception as err:  # zip, pickle, JSON or missing-key errors of a file that is not ours
            raise ValueError(f"'{path}' is not an {name} state written by save() ({type(err).__name__}: {err}); pass "
                             f"the file save() wrote") from err  # fmt: skip
        check_fingerprint(fingerprint, self._fingerprint(), path, name="path")
        self.context.setState(openmm.XmlSerializer.deserialize(str(saved["state"])))
        self.n_steps = int(saved["n_steps"])
        self._samples = {key: [saved[key]] for key in ("time", *self._series)}
        self._samples["positions"] = [saved["positions"]] if self.store_positions else []
        return saved
