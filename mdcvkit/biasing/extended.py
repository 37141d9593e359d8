"""The extended system of eABF in OpenMM: the λ particle, its coupling force and the ABF table.

Up to two extended variables λ_d are the x (and y) coordinates of one dummy
particle added to a copy of the System (zero charge and Lennard-Jones depth
in a NonbondedForce; zero charge and a 1e-3 descreening scale in OBC implicit
solvent, ``GBSAOBCForce``); its unused coordinates are held near 0, and z near
:data:`PARKING` nm where implicit solvent would otherwise let the dummy's
Born radius, and with it a surface-area energy, depend on where λ is. One
:class:`openmm.CustomCVForce` holds the CV components ``cv{d}`` (from any bias
route), the λ coordinates ``lam{d}``, the coupling ``κ_d/2 (cv_d - λ_d)²``
(minimum image along periodic components), harmonic walls of constant κ_d on
λ outside a non-periodic grid, and ``-abf(λ)``, a tabulated function on the
bin edges of the grid that :class:`~mdcvkit.biasing.ExtendedABF` refreshes.
"""

import numpy as np
import openmm

__all__ = ["extended_system", "coupling_force", "lambda_restraint", "abf_table", "table_arguments"]

_AXIS = "xyz"
#: forces that need an entry for every particle, and how the λ particle is added to them
_PER_PARTICLE = {
    "NonbondedForce": lambda force: force.addParticle(0.0, 0.1, 0.0),  # charge, sigma (nm), epsilon
    "GBSAOBCForce": lambda force: force.addParticle(0.0, 0.1, 1e-3),  # charge, radius (nm), descreening scale
}
#: per-particle forces whose λ entry must sit far from the molecule (non-periodic implicit solvent)
_PARKED = ("GBSAOBCForce",)
#: z (nm) of the λ particle in systems with a force of ``_PARKED``: its descreening by the molecule
#: (~ (radius / distance)^4) and so any energy or force through it are then below 1e-20 of their scale
PARKING = 1.0e4
_UNSUPPORTED = (
    "CustomGBForce",
    "CustomNonbondedForce",
    "AmoebaMultipoleForce",
    "AmoebaVdwForce",
)


def extended_system(system, mass):
    """A copy of ``system`` with the λ particle (mass in amu) appended as its last particle.

    Parameters
    ----------
    system : openmm.System
        Left unchanged.
    mass : float
        Mass of the λ particle, amu (x (nm / CV unit)²).

    Returns
    -------
    openmm.System
    float
        z (nm) at which the λ particle must be held: :data:`PARKING` for OBC implicit
        solvent, else 0.

    Raises
    ------
    ValueError
        If the system holds a per-particle force the λ particle cannot join harmlessly
        (custom GB or non-bonded forces, AMOEBA).
    """
    system = openmm.XmlSerializer.clone(system)
    for force in system.getForces():
        kind = type(force).__name__
        if kind in _UNSUPPORTED:
            raise ValueError(
                f"the system holds a {kind}, to which ExtendedABF cannot add its λ particle; "
                f"use a system with only {sorted(_PER_PARTICLE)} among per-particle forces "
                f"(e.g. vacuum or explicit solvent)"
            )
    system.addParticle(float(mass))
    park = 0.0
    for force in system.getForces():
        add = _PER_PARTICLE.get(type(force).__name__)
        if add is not None:
            add(force)
        if type(force).__name__ in _PARKED:
            if force.getNonbondedMethod() not in (force.NoCutoff, force.CutoffNonPeriodic):
                raise ValueError("ExtendedABF supports OBC implicit solvent only without periodic boundaries; "
                                 "build the system with nonbondedMethod=NoCutoff or CutoffNonPeriodic")
            park = PARKING
    return system, park


def coupling_force(grid, kappa, forces, definitions, lambda_index):
    """The CustomCVForce ``Σ_d κ_d/2 (cv_d - λ_d)² + walls - abf(λ)`` (kJ/mol).

    Parameters
    ----------
    grid : Grid
        Bins of λ (CV units); periodic components use the minimum image, the others get
        walls of constant ``kappa`` outside ``[lower, upper]``.
    kappa : sequence of float
        Coupling constants, kJ/mol/(CV unit)²; global parameters ``kappa0``, ``kappa1``.
    forces, definitions
        The CV components from :func:`mdcvkit.biasing.cv_collective_variables`.
    lambda_index : int
        Index of the λ particle.

    Returns
    -------
    openmm.CustomCVForce
        Its first collective variables are those of ``forces``, then ``lam0`` (``lam1``);
        its tabulated function 0 is ``abf``, zero to start with.
    """
    n_cv = grid.n_dim
    terms, extra = [], []
    for d in range(n_cv):
        terms.append(f"0.5*kappa{d}*dl{d}^2")
        lower, upper, period = float(grid.lower[d]), float(grid.upper[d]), float(grid.period[d])
        if grid.periodic[d]:
            extra += [f"dl{d}=r{d}-{period!r}*floor(r{d}/{period!r}+0.5)", f"r{d}=cv{d}-lam{d}"]
        else:
            extra.append(f"dl{d}=cv{d}-lam{d}")
            terms.append(f"0.5*kappa{d}*(max(0,lam{d}-({upper!r}))^2+max(0,({lower!r})-lam{d})^2)")
    lams = ",".join(f"lam{d}" for d in range(n_cv))
    expression = ";".join(["+".join(terms) + f"-abf({lams})", *extra, *reversed(definitions)])
    coupling = openmm.CustomCVForce(expression)
    for d in range(n_cv):
        coupling.addGlobalParameter(f"kappa{d}", float(kappa[d]))
    for key, force in forces.items():
        coupling.addCollectiveVariable(key, force)
    for d in range(n_cv):
        lam = openmm.CustomExternalForce(_AXIS[d])
        lam.addParticle(int(lambda_index), [])
        coupling.addCollectiveVariable(f"lam{d}", lam)
    coupling.addTabulatedFunction("abf", abf_table(grid, np.zeros([n + 1 for n in grid.shape])))
    coupling.setName("mdcvkit eABF coupling")
    return coupling


def lambda_restraint(n_cv, stiffness, lambda_index, park=0.0):
    """Harmonic restraint ``stiffness/2 (coordinate)²`` on the λ particle's unused coordinates, z about ``park``."""
    unused = "+".join(f"({a}-{float(park)!r})^2" if a == "z" and park else f"{a}^2" for a in _AXIS[n_cv:])
    restraint = openmm.CustomExternalForce(f"0.5*{float(stiffness)!r}*({unused})")
    restraint.addParticle(int(lambda_index), [])
    restraint.setName("mdcvkit eABF lambda restraint")
    return restraint


def table_arguments(grid, values):
    """Arguments of ``setFunctionParameters`` for values on the bin edges, ``[n + 1 for n in grid.shape]``."""
    values = np.asarray(values, dtype=float)
    if grid.n_dim == 1:
        return values.ravel(), float(grid.lower[0]), float(grid.upper[0])
    nx, ny = values.shape
    return (
        nx,
        ny,
        values.T.ravel(),
        float(grid.lower[0]),
        float(grid.upper[0]),
        float(grid.lower[1]),
        float(grid.upper[1]),
    )


def abf_table(grid, values):
    """Natural-spline table of ``values`` on the bin edges (periodic where the grid is)."""
    if grid.n_dim == 1:
        return openmm.Continuous1DFunction(*table_arguments(grid, values), bool(grid.periodic[0]))
    return openmm.Continuous2DFunction(*table_arguments(grid, values), bool(np.all(grid.periodic)))
