"""A CV module as an OpenMM force: the nm <-> Å boundary and the bias routes.

A CV is any ``torch.nn.Module`` or torch function mapping positions
``(n_frames, n_atoms, 3)`` in Å to ``(n_frames, n_cv)``. Here it becomes the
collective variables of an :class:`openmm.CustomCVForce`, whose energy
expression (kJ/mol) turns them into a bias ``U(cv0, cv1, ...)``. Four
routes give the same physics:

``"python"``
    One :class:`openmm.PythonForce` per CV component (OpenMM >= 8.6): each
    step OpenMM hands Python the positions, the torch module computes the CV
    and autograd its Jacobian (one batched forward and one backward pass per
    step, shared between the components), or, for a learned CV on aligned or
    raw positions, its NumPy twin (:mod:`mdcvkit.biasing.numpy_cv`) does.
``"expression"``
    A :class:`~mdcvkit.biasing.DescriptorCV` (distances, torsions, positions,
    a small MLP) compiled into the CustomCVForce expression: no Python per step.
``"torch"``
    openmm-torch's ``TorchForce`` (a traced module per CV component), when
    ``openmmtorch`` is importable (GPU installs).
``"external"``
    For OpenMM < 8.6 (no PythonForce): one :class:`openmm.CustomExternalForce` per
    component, ``∇ξ · x + c``, whose per-particle parameters Python sets before every step
    from the torch module's autograd gradient (:class:`ExternalUpdater`); the simulation
    must then be advanced with :func:`step`, one step at a time.

Units change only at the boundary (:mod:`mdcvkit.biasing.boundary`): positions
reach the CV in Å (``10 x`` with x in nm), and the gradient ``dξ/dx`` returned
to OpenMM is per nm (``10 dξ/dr`` with r in Å); energies are in kJ/mol
throughout. The compiled descriptors do the same conversion inside OpenMM
(``10 r``).

Measured on vacuum alanine dipeptide (22 atoms, Reference platform, two busy
cores; ``benchmarks/bench_bias.py``): the expression route costs about 1.05-1.5x
the unbiased step for a few torsions and about 3x for an autoencoder on all 45
heavy-atom distances (16 first-layer units, each one OpenMM force); the
Python route about 11x for an autoencoder on aligned coordinates evaluated by
its NumPy twin, and 35-100x where torch evaluates the CV (its per-call overhead
dominates); the Reference platform is 10-20x faster than CPU at this size.
"""

import time

import numpy as np
import openmm

from .boundary import NM_TO_ANGSTROM, _positions_nm, evaluate_cv
from .descriptors import DescriptorCV
from .routes import ROUTES, _resolve_route

__all__ = ["cv_collective_variables", "add_cv_bias", "cv_force", "fastest_platform"]


def cv_collective_variables(cv, particles, n_cv, n_particles, *, route="auto", prefix="cv"):
    """The OpenMM collective variables that define ``{prefix}0 ... {prefix}{n_cv-1}``.

    Parameters
    ----------
    cv : torch.nn.Module or callable
        Positions (Å) -> CV.
    particles : sequence of int
        System particle index of each CV input atom.
    n_cv : int
        Number of CV components.
    n_particles : int
        Number of particles in the System.
    route : {"auto", "python", "expression", "torch", "external"}, default "auto"
    prefix : str, default "cv"

    Returns
    -------
    forces : dict of str -> openmm.Force
        Collective variables for a CustomCVForce.
    definitions : list of str
        Expression definitions (in dependency order: the ones used first come last).
    route : str
        The route taken.
    updater : ExternalUpdater or None
        For the "external" route, the object to :meth:`~ExternalUpdater.update` before each step.
    """
    route = _resolve_route(route, cv)
    built = ROUTES[route](cv, particles, n_cv, n_particles, prefix)
    forces, definitions = built[:2]
    updater = built[2] if len(built) > 2 else None
    return forces, definitions, route, updater


def _check_particles(system, cv, particles, positions):
    n_particles = system.getNumParticles()
    if len(positions) != n_particles:
        raise ValueError(
            f"positions has {len(positions)} rows but the system has {n_particles} particles; pass the "
            f"positions of every particle of this system"
        )
    if particles is None:
        particles = np.arange(n_particles)
    particles = np.asarray(particles, dtype=np.int64)
    if particles.ndim != 1 or particles.size == 0 or particles.min() < 0 or particles.max() >= n_particles:
        raise ValueError(
            f"particles={particles.tolist()!r} must be indices of system particles (0 to {n_particles - 1})"
        )
    n_atoms = getattr(cv, "n_atoms", None)
    if n_atoms is None:  # mdcvkit.analysis' fitted CV: featurizer -> model
        n_atoms = getattr(getattr(cv, "featurizer", None), "n_atoms", None)
    if n_atoms is not None and not isinstance(cv, DescriptorCV) and int(n_atoms) != particles.size:
        raise ValueError(
            f"the CV was built for n_atoms={n_atoms} atoms but {particles.size} particles are given; pass "
            f"particles= with the system index of each of the CV's atoms"
        )
    if isinstance(cv, DescriptorCV) and cv.n_atoms > particles.size:
        raise ValueError(
            f"the CV reads atom {cv.n_atoms - 1} but only {particles.size} particles are given; pass "
            f"particles= with the system index of each of the CV's atoms"
        )
    return particles


def add_cv_bias(
    system,
    cv,
    energy,
    positions,
    *,
    particles=None,
    route="auto",
    parameters=None,
    force_group=None,
    name=None,
):
    """Add a bias ``U(ξ)`` on a CV module to an OpenMM System (in place).

    Parameters
    ----------
    system : openmm.System
        Modified in place (copy it first to keep the original).
    cv : torch.nn.Module or callable
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``.
    energy : str
        OpenMM expression of the bias in kJ/mol, in the variables ``cv0, cv1, ...`` (CV units)
        and ``parameters``; e.g. ``"0.5*kappa*(cv0-center)^2"``.
    positions : array_like or openmm.unit.Quantity, shape (n_particles, 3)
        Current positions (nm if bare numbers): the CV is checked there (shape, finite values).
    particles : sequence of int, optional
        System particle index of each CV input atom; default all particles in order.
    route : {"auto", "python", "expression", "torch", "external"}, default "auto"
        How the CV reaches OpenMM (see the module docstring). "auto" takes "expression" for a
        compilable :class:`DescriptorCV`, else "torch" when openmm-torch is installed, else
        "python" (OpenMM >= 8.6), else "external" (advance the simulation with :func:`step`).
    parameters : dict of str -> float, optional
        Global parameters of the expression and their default values (OpenMM units).
    force_group : int, optional
        Force group of the bias (0-31), to read its energy and forces apart.
    name : str, optional
        Name of the force; default "mdcvkit CV bias".

    Returns
    -------
    openmm.CustomCVForce
        The added force; ``force.route`` and ``force.n_cv`` tell what was built, and
        ``force.updater`` is the :class:`ExternalUpdater` of the "external" route (else None).

    Raises
    ------
    ValueError
        Wrong positions or particles, a CV with a wrong output or non-finite at ``positions``,
        an unknown route.
    """
    positions = _positions_nm(positions)
    particles = _check_particles(system, cv, particles, positions)
    n_cv = evaluate_cv(cv, positions[particles] * NM_TO_ANGSTROM).shape[1]
    forces, definitions, route, updater = cv_collective_variables(
        cv, particles, n_cv, system.getNumParticles(), route=route
    )
    expression = ";".join([energy, *reversed(definitions)])
    bias = openmm.CustomCVForce(expression)
    for key, value in (parameters or {}).items():
        bias.addGlobalParameter(key, float(value))
    for key, force in forces.items():
        bias.addCollectiveVariable(key, force)
    bias.setName(name or "mdcvkit CV bias")
    if force_group is not None:
        if not 0 <= int(force_group) <= 31:
            raise ValueError(f"force_group={force_group!r} must be an integer from 0 to 31")
        bias.setForceGroup(int(force_group))
    system.addForce(bias)
    bias.route = route
    bias.n_cv = n_cv
    bias.updater = updater
    if updater is not None:
        updater.bias = bias
        updater.set_parameters(positions[particles])
    return bias


def cv_force(cv, particles, n_particles, *, component=0, route="auto"):
    """A force whose energy (kJ/mol, numerically) is one component of the CV, in CV units.

    For OpenMM tools that take a CV as a force, such as a ``BiasVariable`` of
    :class:`openmm.app.Metadynamics`; add it to a System only inside such a tool.

    Parameters
    ----------
    cv : torch.nn.Module or callable
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``.
    particles : sequence of int
        System particle index of each CV input atom.
    n_particles : int
        Number of particles of the System.
    component : int, default 0
        Which CV component.
    route : {"auto", "python", "expression", "torch"}, default "auto"
        As in :func:`add_cv_bias`; the "external" route needs a per-step driver and is refused.

    Returns
    -------
    openmm.CustomCVForce
    """
    n_cv = getattr(cv, "n_cv", None)
    if n_cv is None:
        raise ValueError(f"{type(cv).__name__} has no n_cv attribute; wrap it so that cv.n_cv is its component count")
    if not 0 <= int(component) < int(n_cv):
        raise ValueError(f"component={component!r} must be an integer from 0 to {int(n_cv) - 1}")
    forces, definitions, route, updater = cv_collective_variables(cv, particles, int(n_cv), n_particles, route=route)
    if updater is not None:
        raise ValueError(f"route={route!r} needs a per-step driver; use route='expression' or 'python'")
    force = openmm.CustomCVForce(";".join([f"cv{int(component)}", *reversed(definitions)]))
    for key, variable in forces.items():
        force.addCollectiveVariable(key, variable)
    return force


def fastest_platform(make_simulation, candidates=("Reference", "CPU"), n_steps=200):
    """Measure which OpenMM platform runs a simulation fastest.

    Parameters
    ----------
    make_simulation : callable
        ``make_simulation(platform_name) -> openmm.app.Simulation``, positions set.
    candidates : sequence of str, default ("Reference", "CPU")
        Platform names; those not installed are skipped.
    n_steps : int, default 200
        Steps timed per platform (after 10 warm-up steps).

    Returns
    -------
    name : str
        The fastest platform.
    seconds_per_step : dict of str -> float
        Measured wall-clock time per step (s).
    """
    installed = {openmm.Platform.getPlatform(k).getName() for k in range(openmm.Platform.getNumPlatforms())}
    timings = {}
    for name in candidates:
        if name not in installed:
            continue
        simulation = make_simulation(name)
        simulation.step(10)
        start = time.perf_counter()
        simulation.step(n_steps)
        timings[name] = (time.perf_counter() - start) / n_steps
    if not timings:
        raise ValueError(
            f"candidates={list(candidates)!r} holds no installed platform; installed: {sorted(installed)}"
        )
    return min(timings, key=timings.get), timings
