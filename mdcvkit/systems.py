"""Toy potentials as real OpenMM systems, with exact reference free energies.

Each toy is one particle moving in a :class:`openmm.CustomExternalForce`; the
coordinates that the potential does not use are held by a stiff harmonic
restraint, so that toys and molecules share one code path (OpenMM
``System``, integrator, reporters, bias forces).

Unit convention of the toys, stated once
----------------------------------------
The toys live in *reduced units*, mapped one to one onto OpenMM's units:
one reduced length is 1 nm, one reduced energy is 1 kJ/mol, one reduced time
is 1 ps and the particle mass is 1 amu. ``beta`` is in mol/kJ, so that the
reduced quantities of the literature stay readable (``EntropicSwitch().beta
== 4``, wells at ``x1 = ±1``); the temperature handed to OpenMM is
``kT / R`` in kelvin (about 30 K for ``beta = 4``). The CV modules of mdcvkit
take positions in Å, so a toy coordinate ``x1`` of 1 (reduced, i.e. 1 nm) is
seen as 10 Å by a CV module; :meth:`ToySystem.cv` returns the CV module that
maps positions in Å back to the reduced coordinate.

The dynamics is overdamped Langevin (Brownian) through
:class:`openmm.BrownianIntegrator` with friction 1/ps, so that with a mass of
1 amu one step reads ``x += dt * F + sqrt(2 kT dt) * N(0, 1)``, the
discretisation used by FEBILAE (Belkacemi et al. 2022) with ``dt = 1e-3``.
"""

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch
import xarray as xr
from scipy.integrate import trapezoid

from ._checks import openmm_seed
from .analysis import CollectiveVariable
from .features import Positions

__all__ = ["ToySystem", "EntropicSwitch", "DoubleWell2D", "TiltedDoubleWell2D", "FourWell1D", "TOYS"]

#: molar gas constant in kJ/mol/K, the one OpenMM uses
MOLAR_GAS_CONSTANT = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
_AXES = ("x1", "x2", "x3")


class ToySystem:
    """Base class of the toy potentials: one particle, a reduced-unit potential.

    Subclasses define ``expression`` (the OpenMM energy expression in ``x``
    and ``y``, reduced units), ``_energy(x1, x2, xp)`` (the same potential
    for ``xp`` = numpy or torch), ``n_dim`` (1 or 2), ``bounds`` (the box
    used for numerical integration), ``start`` and the defaults ``beta`` and
    ``timestep``.

    Attributes
    ----------
    system : openmm.System
        One particle of mass 1 amu with the potential as a
        :class:`openmm.CustomExternalForce` (plus a harmonic restraint
        ``restraint/2 * coord²`` on each unused coordinate).
    positions : numpy.ndarray, shape (1, 3)
        Starting position in nm (= reduced units).
    topology : openmm.app.Topology
        One chain, one residue, one atom named ``P``.
    """

    n_dim = 2
    expression = ""
    bounds = ((-2.5, 2.5), (-2.5, 2.5))
    start = (-1.0, 0.0)
    default_beta = 1.0
    default_timestep = 1e-3
    long_name = "toy potential"

    def __init__(self, *, beta=None, timestep=None, restraint=100.0):
        beta = self.default_beta if beta is None else beta
        timestep = self.default_timestep if timestep is None else timestep
        if not np.isfinite(beta) or beta <= 0:
            raise ValueError(f"beta={beta!r} must be a positive number (in mol/kJ); pass e.g. beta=4")
        if not np.isfinite(timestep) or timestep <= 0:
            raise ValueError(f"timestep={timestep!r} must be a positive number of ps; pass e.g. 1e-3")
        if not np.isfinite(restraint) or restraint <= 0:
            raise ValueError(
                f"restraint={restraint!r} must be a positive force constant (kJ/mol/nm²); pass e.g. 100"
            )
        self.beta = float(beta)
        self.timestep = float(timestep)
        self.restraint = float(restraint)
        self.friction = 1.0  # 1/ps
        self.mass = 1.0  # amu
        self.system = self._build_system()
        self.positions = np.zeros((1, 3))
        self.positions[0, : self.n_dim] = self.start
        self.topology = app.Topology()
        residue = self.topology.addResidue("TOY", self.topology.addChain())
        self.topology.addAtom("P", None, residue)

    # --- units -----------------------------------------------------------------------------------------
    @property
    def kT(self):
        """Thermal energy ``1 / beta`` in kJ/mol (reduced energy units)."""
        return 1.0 / self.beta

    @property
    def temperature(self):
        """Temperature in kelvin that gives ``kT`` to OpenMM (``kT / R``)."""
        return self.kT / MOLAR_GAS_CONSTANT

    # --- potential ---------------------------------------------------------------------------------------
    def _energy(self, x1, x2, xp):
        raise NotImplementedError

    def potential(self, x):
        """Potential energy of reduced coordinates.

        Parameters
        ----------
        x : array_like or torch.Tensor, shape (..., n_dim)
            Reduced coordinates (x1[, x2]), i.e. nm. A torch tensor gives a torch
            tensor (differentiable), anything else a numpy array.

        Returns
        -------
        numpy.ndarray or torch.Tensor, shape (...)
            Energy in kJ/mol (reduced energy units).
        """
        if isinstance(x, torch.Tensor):
            xp = torch
        else:
            xp = np
            x = np.asarray(x, dtype=float)
        if x.shape[-1] != self.n_dim:
            raise ValueError(
                f"x has last dimension {x.shape[-1]}, but {type(self).__name__} has n_dim={self.n_dim}; "
                f"pass coordinates of shape (..., {self.n_dim})"
            )
        x2 = x[..., 1] if self.n_dim == 2 else None
        return self._energy(x[..., 0], x2, xp)

    def _build_system(self):
        system = openmm.System()
        system.addParticle(self.mass)
        unused = "+".join(f"{c}^2" for c in "xyz"[self.n_dim :])
        force = openmm.CustomExternalForce(f"{self.expression} + 0.5*krestraint*({unused})")
        force.addGlobalParameter("krestraint", self.restraint)
        force.addParticle(0, [])
        force.setName(type(self).__name__)
        system.addForce(force)
        return system

    # --- dynamics ---------------------------------------------------------------------------------------
    def integrator(self, seed=0):
        """Overdamped Langevin integrator at the toy's temperature.

        Parameters
        ----------
        seed : int, default 0
            Seed of OpenMM's random number generator (0 would mean "pick one";
            it is mapped to a fixed nonzero seed so that runs repeat).

        Returns
        -------
        openmm.BrownianIntegrator
            Temperature ``kT/R`` (K), friction 1/ps, step ``timestep`` (ps).
        """
        integrator = openmm.BrownianIntegrator(self.temperature, self.friction, self.timestep)
        integrator.setRandomNumberSeed(openmm_seed(seed))
        return integrator

    def simulation(self, seed=0, platform="Reference", system=None):
        """A ready :class:`openmm.app.Simulation` of the toy at its starting position.

        Parameters
        ----------
        seed : int, default 0
            Seed of the integrator's random numbers.
        platform : str, default "Reference"
            OpenMM platform; for one particle Reference is about 100x faster than CPU.
        system : openmm.System, optional
            A modified copy of :attr:`system` (e.g. with a bias force); default the toy's own.

        Returns
        -------
        openmm.app.Simulation
        """
        simulation = app.Simulation(
            self.topology,
            self.system if system is None else system,
            self.integrator(seed),
            openmm.Platform.getPlatformByName(platform),
        )
        simulation.context.setPositions(self.positions)
        return simulation

    # --- collective variables and free energies -----------------------------------------------------------
    def cv(self, name="x1"):
        """CV module giving reduced coordinates of the particle.

        Parameters
        ----------
        name : str or tuple of str, default "x1"
            "x1", "x2", "x3", or a tuple of them such as ("x1", "x2").

        Returns
        -------
        mdcvkit.analysis.CollectiveVariable
            Maps positions ``(n_frames, 1, 3)`` in Å to ``(n_frames, n_cv)`` in reduced
            units (Å / 10), usable by every bias route, the expression route included.
        """
        names = (name,) if isinstance(name, str) else tuple(name)
        axes = [self._axis(n, "name") for n in names]
        return CollectiveVariable.from_featurizer(Positions(1, axes=axes), scale=10.0, names=names)

    def _axis(self, name, argument):
        if not isinstance(name, str) or name not in _AXES:
            raise ValueError(f"{argument}={name!r} is not a coordinate; use one of {list(_AXES)}")
        return _AXES.index(name)

    def default_grid(self, name="x1", n_points=201):
        """Evenly spaced reduced coordinates spanning :attr:`bounds` along ``name`` (nm)."""
        lower, upper = self.bounds[self._axis(name, "cv")]
        return np.linspace(lower, upper, n_points)

    def free_energy(self, cv="x1", grid=None, n_integration=2001):
        """Exact free energy along one or two coordinates, by numerical integration.

        ``F(x1) = -kT ln ∫ exp(-beta V(x1, x2)) dx2`` over ``bounds`` (trapezoid rule),
        shifted so that its minimum is 0; ``cv=("x1", "x2")`` gives ``V`` itself, shifted.

        Parameters
        ----------
        cv : str or tuple of str, default "x1"
            "x1", "x2" (2-D toys only), or ("x1", "x2").
        grid : array_like or tuple of array_like, optional
            Reduced coordinates (nm) where F is wanted; default 201 points over ``bounds``.
        n_integration : int, default 2001
            Points of the integration over the other coordinate.

        Returns
        -------
        xarray.DataArray
            Dims named after ``cv``; values in kJ/mol; attrs ``long_name`` and ``units``.
        """
        names = (cv,) if isinstance(cv, str) else tuple(cv)
        valid = list(_AXES[: self.n_dim])
        if (
            not names
            or len(names) > self.n_dim
            or any(n not in valid for n in names)
            or len(set(names)) < len(names)
        ):
            raise ValueError(
                f"cv={cv!r} is not a coordinate set of {type(self).__name__}; use one of {valid}"
                + (" or ('x1', 'x2')" if self.n_dim == 2 else "")
            )
        if grid is None:
            grids = [self.default_grid(n) for n in names]
        elif len(names) == 1:
            grids = [np.asarray(grid, dtype=float)]
        else:
            grids = [np.asarray(g, dtype=float) for g in grid]
        for g in grids:
            if g.ndim != 1 or g.size < 2 or not np.all(np.isfinite(g)):
                raise ValueError(
                    f"grid={grid!r} must hold 1-D arrays of finite coordinates (nm); pass np.linspace"
                )
        if len(names) == self.n_dim:
            mesh = np.meshgrid(*grids, indexing="ij")
            if names == ("x2", "x1"):
                mesh = mesh[::-1]
            energy = self.potential(np.stack(mesh, axis=-1))
        else:
            axis = valid.index(names[0])
            other = np.linspace(*self.bounds[1 - axis], n_integration)
            pair = np.meshgrid(grids[0], other, indexing="ij")
            if axis == 1:
                pair = pair[::-1]
            energy = self.potential(np.stack(pair, axis=-1))
            shift = energy.min()
            density = trapezoid(np.exp(-self.beta * (energy - shift)), other, axis=1)
            energy = shift - np.log(density) / self.beta
        energy = energy - energy.min()
        coords = {
            n: (n, g, {"units": "nm (reduced)", "long_name": n}) for n, g in zip(names, grids, strict=True)
        }
        return xr.DataArray(
            energy,
            dims=names,
            coords=coords,
            attrs={
                "long_name": f"exact free energy of {self.long_name}",
                "units": "kJ/mol",
                "beta": self.beta,
            },
        )

    def probability(self, cv="x1", grid=None):
        """Exact normalised probability density along ``cv`` (same arguments as :meth:`free_energy`).

        Returns
        -------
        xarray.DataArray
            Density in 1/nm (1/nm² for two coordinates), integrating to 1 over the grid.
        """
        free = self.free_energy(cv, grid)
        weight = np.exp(-self.beta * free.values)
        norm = weight
        for d in reversed(free.dims):
            norm = trapezoid(norm, free[d].values, axis=-1)
        units = "1/nm" if free.ndim == 1 else "1/nm^2"
        return free.copy(data=weight / norm).assign_attrs(long_name="exact probability density", units=units)


class EntropicSwitch(ToySystem):
    """FEBILAE's two-dimensional entropic switch (Park et al. 2003), ``beta = 4``.

    ``V = 3 e^{-x1²} (e^{-(x2-1/3)²} - e^{-(x2-5/3)²}) - 5 e^{-x2²} (e^{-(x1-1)²} + e^{-(x1+1)²})
    + 0.2 x1⁴ + 0.2 (x2-1/3)⁴`` in kJ/mol, wells near ``x1 = ±1``, ``x2 = 0`` joined by
    an upper and a lower channel whose relative weight switches with temperature.

    Parameters
    ----------
    beta : float, default 4
        Inverse temperature in mol/kJ (reduced units).
    timestep : float, default 1e-3
        Brownian time step in ps (reduced time).
    restraint : float, default 100
        Force constant on the unused coordinate z, kJ/mol/nm².

    References
    ----------
    S. Park, M. K. Sener, D. Lu, K. Schulten, J. Chem. Phys. 119, 1313 (2003).
    Z. Belkacemi, P. Gkeka, T. Lelièvre, G. Stoltz, J. Chem. Theory Comput. 18, 59 (2022).
    """

    n_dim = 2
    expression = (
        "3*exp(-x^2)*(exp(-(y-1/3)^2) - exp(-(y-5/3)^2)) - 5*exp(-y^2)*(exp(-(x-1)^2) + exp(-(x+1)^2))"
        " + 0.2*x^4 + 0.2*(y-1/3)^4"
    )
    bounds = ((-2.5, 2.5), (-2.0, 3.0))
    start = (-1.0, 0.0)
    default_beta = 4.0
    long_name = "entropic switch"

    def _energy(self, x1, x2, xp):
        return (
            3 * xp.exp(-(x1**2)) * (xp.exp(-((x2 - 1 / 3) ** 2)) - xp.exp(-((x2 - 5 / 3) ** 2)))
            - 5 * xp.exp(-(x2**2)) * (xp.exp(-((x1 - 1) ** 2)) + xp.exp(-((x1 + 1) ** 2)))
            + 0.2 * x1**4
            + 0.2 * (x2 - 1 / 3) ** 4
        )


class DoubleWell2D(ToySystem):
    """Bistable in ``x1``, harmonic in ``x2`` (after Schöberl et al. 2019), ``beta = 4``.

    ``V = barrier (x1² - 1)² + stiffness/2 x2²`` in kJ/mol: wells at ``x1 = ±1`` separated
    by ``barrier`` (default 1 kJ/mol = 4 kT). The exact free energy along x1 is
    ``barrier (x1² - 1)²`` up to a constant.

    Parameters
    ----------
    barrier : float, default 1.0
        Barrier height in kJ/mol.
    stiffness : float, default 2.0
        Harmonic constant along x2 in kJ/mol/nm².
    beta, timestep, restraint
        As in :class:`EntropicSwitch`.

    References
    ----------
    M. Schöberl, N. Zabaras, P.-S. Koutsourelakis, J. Chem. Phys. 150, 024109 (2019).
    """

    n_dim = 2
    bounds = ((-2.0, 2.0), (-3.0, 3.0))
    start = (-1.0, 0.0)
    default_beta = 4.0
    long_name = "2-D double well"

    def __init__(self, *, barrier=1.0, stiffness=2.0, beta=None, timestep=None, restraint=100.0):
        for name, value in (("barrier", barrier), ("stiffness", stiffness)):
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive number (kJ/mol units); pass e.g. 1.0")
        self.barrier = float(barrier)
        self.stiffness = float(stiffness)
        self.expression = f"{self.barrier!r}*(x^2-1)^2 + 0.5*{self.stiffness!r}*y^2"
        super().__init__(beta=beta, timestep=timestep, restraint=restraint)

    def _energy(self, x1, x2, xp):
        return self.barrier * (x1**2 - 1) ** 2 + 0.5 * self.stiffness * x2**2


class TiltedDoubleWell2D(ToySystem):
    """The bistable toy of Schöberl et al. (2020) with one less pronounced mode, ``beta = 1``.

    ``V = a/4 x1⁴ - b/2 x1² + c x1 + d/2 x2²`` in kJ/mol. The tilt ``c > 0`` lifts the well at
    positive ``x1``: with the defaults (a, b, c, d) = (1, 3, 0.4, 50) the wells lie near
    ``x1 = -1.8`` and ``+1.6``, the saddle at ``x1 = 0.134`` (:attr:`saddle`) and the minor
    mode ``x1 > saddle`` holds 22.4 % of the probability (:meth:`mode_weights`, by quadrature).

    Parameters
    ----------
    a, b, c, d : float, default 1, 3, 0.4, 50
        Coefficients in kJ/mol per power of nm (reduced units); ``a``, ``b`` and ``d`` positive.
        The stiff ``x2`` (``d = 50``) keeps ``x1`` the widest direction at every temperature, so
        that a one-dimensional latent space follows ``x1`` (see ``docs/findings/physics.md``).
    beta, timestep, restraint
        As in :class:`EntropicSwitch`.

    Examples
    --------
    >>> toy = TiltedDoubleWell2D()
    >>> round(float(toy.mode_weights()[1]), 3)
    0.224

    References
    ----------
    M. Schöberl, N. Zabaras, P.-S. Koutsourelakis, "Embedded-physics machine learning for
    coarse-graining and collective variable discovery without data", arXiv:2002.10148 (2020).
    """

    n_dim = 2
    bounds = ((-4.0, 4.0), (-6.0, 6.0))
    start = (-1.8, 0.0)
    default_beta = 1.0
    long_name = "tilted 2-D double well"

    def __init__(self, *, a=1.0, b=3.0, c=0.4, d=50.0, beta=None, timestep=None, restraint=100.0):
        for name, value in (("a", a), ("b", b), ("d", d)):
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive number (kJ/mol units); pass e.g. 1.0")
        if not np.isfinite(c):
            raise ValueError(f"c={c!r} must be a finite number (kJ/mol/nm); pass e.g. 0.4")
        self.a, self.b, self.c, self.d = float(a), float(b), float(c), float(d)
        self.expression = f"{self.a!r}/4*x^4 - {self.b!r}/2*x^2 + {self.c!r}*x + 0.5*{self.d!r}*y^2"
        super().__init__(beta=beta, timestep=timestep, restraint=restraint)

    def _energy(self, x1, x2, xp):
        return self.a / 4 * x1**4 - self.b / 2 * x1**2 + self.c * x1 + 0.5 * self.d * x2**2

    @property
    def saddle(self):
        """``x1`` of the barrier top between the wells (nm), the middle root of ``dV/dx1 = 0``."""
        roots = np.roots([self.a, 0.0, -self.b, self.c])
        return float(np.sort(roots.real)[1])

    def mode_weights(self, n_integration=4001):
        """Exact probabilities of ``x1 < saddle`` and ``x1 > saddle``, by quadrature over :attr:`bounds`.

        Returns
        -------
        numpy.ndarray, shape (2,)
        """
        density = self.probability("x1", grid=np.linspace(*self.bounds[0], n_integration))
        x1 = density["x1"].values
        left = trapezoid(np.where(x1 < self.saddle, density.values, 0.0), x1)
        return np.array([left, 1.0 - left])


class FourWell1D(ToySystem):
    """Prinz's one-dimensional four-well potential, ``beta = 1``.

    ``V = 4 (x1⁸ + 0.8 e^{-80 x1²} + 0.2 e^{-80 (x1-0.5)²} + 0.5 e^{-40 (x1+0.5)²})`` in kJ/mol,
    four wells in ``-1 < x1 < 1``; y and z are restrained harmonically.

    Parameters
    ----------
    beta : float, default 1
    timestep : float, default 1e-4
        The potential is stiff (curvature up to ~700 kJ/mol/nm²), hence the short step (ps).
    restraint : float, default 100

    References
    ----------
    J.-H. Prinz et al., J. Chem. Phys. 134, 174105 (2011).
    """

    n_dim = 1
    expression = "4*(x^8 + 0.8*exp(-80*x^2) + 0.2*exp(-80*(x-0.5)^2) + 0.5*exp(-40*(x+0.5)^2))"
    bounds = ((-1.2, 1.2),)
    start = (-0.75,)
    default_beta = 1.0
    default_timestep = 1e-4
    long_name = "four-well potential"

    def _energy(self, x1, x2, xp):
        return 4 * (
            x1**8
            + 0.8 * xp.exp(-80 * x1**2)
            + 0.2 * xp.exp(-80 * (x1 - 0.5) ** 2)
            + 0.5 * xp.exp(-40 * (x1 + 0.5) ** 2)
        )


#: the toys by name
TOYS = {"EntropicSwitch": EntropicSwitch, "DoubleWell2D": DoubleWell2D, "TiltedDoubleWell2D": TiltedDoubleWell2D,
        "FourWell1D": FourWell1D}
