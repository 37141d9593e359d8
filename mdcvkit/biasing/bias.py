"""A bias on a CV in an OpenMM System, evaluated every step or every few steps (multiple time stepping).

:func:`add_cv_bias` adds ``U(ξ)`` as an :class:`openmm.CustomCVForce` whose collective variables
come from :mod:`mdcvkit.export.openmm` (routes "expression", "python", "torch").
:func:`bias_integrator` evaluates that force only every ``bias_stride`` steps with OpenMM's
:class:`openmm.MTSLangevinIntegrator` (r-RESPA: the bias is the slow force, applied with the
stride's outer step, so its impulse is scaled by the stride). For the "python" and "torch"
routes a call costs a fixed overhead (about 240 µs and 90 µs on this machine's Reference platform,
against 8 µs for an unbiased step of vacuum alanine dipeptide), so the stride divides the cost of
the bias; ``benchmarks/bench_bias.py`` measures it per route and stride.

Stability: r-RESPA is stable while the outer step ``bias_stride × timestep`` stays well below
the period of the fastest motion the bias drives. Measured on vacuum alanine dipeptide with eABF
along φ (κ = kT / (0.1 rad)², λ period 200 fs): outer steps of 8 fs (stride 2 with 4 fs steps,
stride 4 with 2 fs steps) run and give the free energy of stride 1; 16 fs blows up at once,
whatever the inner step. The smooth toys take stride 8. ``bias_stride`` therefore defaults to 1.
:func:`default_platform` is the package's one choice of OpenMM platform.
"""

import functools

import numpy as np
import openmm
import openmm.unit as unit

from ..export.openmm import NM_TO_ANGSTROM, collective_variables, evaluate_cv, positions_nm

__all__ = ["add_cv_bias", "bias_integrator", "cv_force", "default_platform", "check_particles"]

#: particle count up to which the Reference platform is the default on a CPU (it beats the CPU platform
#: about 18 times on vacuum alanine dipeptide, 22 atoms; OBC implicit solvent 5,000 against 280 ns/day)
REFERENCE_PLATFORM_MAX_PARTICLES = 200


def default_platform(n_particles):
    """The OpenMM platform mdcvkit uses: CUDA where present, else Reference for small systems, else CPU.

    Parameters
    ----------
    n_particles : int
        Number of particles of the System.

    Returns
    -------
    openmm.Platform
    """
    names = _platform_names()
    if "CUDA" in names:
        return openmm.Platform.getPlatformByName("CUDA")
    name = "Reference" if int(n_particles) <= REFERENCE_PLATFORM_MAX_PARTICLES or "CPU" not in names else "CPU"
    return openmm.Platform.getPlatformByName(name)


@functools.cache
def _platform_names():
    """Names of the platforms that can create a Context here (CUDA only with a device)."""
    names = {openmm.Platform.getPlatform(k).getName() for k in range(openmm.Platform.getNumPlatforms())}
    if "CUDA" in names:
        system = openmm.System()
        system.addParticle(1.0)
        try:
            openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CUDA"))
        except openmm.OpenMMException:
            names.discard("CUDA")
    return names


def check_particles(system, cv, particles, positions):
    """System index of each CV atom as an int array, checked against the System and the CV.

    Parameters
    ----------
    system : openmm.System
    cv : torch.nn.Module or callable
        With ``featurizer.n_atoms`` or ``n_atoms`` when known.
    particles : sequence of int or None
        None for all particles in order.
    positions : numpy.ndarray, shape (n_particles, 3)
        Positions in nm.

    Returns
    -------
    numpy.ndarray of int64

    Raises
    ------
    ValueError
        If the positions or indices do not fit the System or the CV.
    """
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
    n_atoms = getattr(getattr(cv, "featurizer", None), "n_atoms", getattr(cv, "n_atoms", None))
    if n_atoms is not None and int(n_atoms) != particles.size:
        raise ValueError(
            f"the CV was built for n_atoms={n_atoms} atoms but {particles.size} particles are given; pass "
            f"particles= with the system index of each of the CV's atoms"
        )
    return particles


def _free_group(system, exclude=None):
    """A force group no force of ``system`` (other than ``exclude``) uses."""
    used = {f.getForceGroup() for f in system.getForces() if f is not exclude}
    for group in range(31, -1, -1):
        if group not in used:
            return group
    raise ValueError("all 32 force groups of the system are in use; free one for the bias")


def add_cv_bias(system, cv, energy, positions, *, particles=None, route="auto", parameters=None,
                force_group=None, name=None):  # fmt: skip
    """Add a bias ``U(ξ)`` on a CV module to an OpenMM System (in place).

    Parameters
    ----------
    system : openmm.System
        Modified in place (copy it first to keep the original).
    cv : mdcvkit.analysis.CollectiveVariable, torch.nn.Module or callable
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``.
    energy : str
        OpenMM expression of the bias in kJ/mol, in the variables ``cv0, cv1, ...`` (CV units)
        and ``parameters``; e.g. ``"0.5*kappa*(cv0-center)^2"``.
    positions : array_like or openmm.unit.Quantity, shape (n_particles, 3)
        Current positions (nm if bare numbers): the CV is checked there (shape, finite values).
    particles : sequence of int, optional
        System particle index of each CV input atom; default all particles in order.
    route : {"auto", "expression", "python", "torch"}, default "auto"
        How the CV reaches OpenMM (:mod:`mdcvkit.export.openmm`); "auto" compiles the CV where
        its featurizer and network allow, else takes "torch" where openmm-torch is installed,
        else "python".
    parameters : dict of str -> float, optional
        Global parameters of the expression and their default values (OpenMM units).
    force_group : int, optional
        Force group of the bias (0-31); default a group no other force uses, so that
        :func:`bias_integrator` can evaluate it apart.
    name : str, optional
        Name of the force; default "mdcvkit CV bias".

    Returns
    -------
    openmm.CustomCVForce
        The added force; ``force.route`` and ``force.n_cv`` tell what was built.

    Raises
    ------
    ValueError
        Wrong positions or particles, a CV with a wrong output or non-finite at ``positions``,
        an unknown route or one that cannot take this CV.

    Examples
    --------
    >>> bias = add_cv_bias(system, cv, "0.5*k*(cv0-s)^2", positions, parameters={"k": 500, "s": 0.2})  # doctest: +SKIP
    >>> integrator = bias_integrator(system, bias, temperature=300, bias_stride=4)  # doctest: +SKIP
    """
    positions = positions_nm(positions)
    particles = check_particles(system, cv, particles, positions)
    n_cv = evaluate_cv(cv, positions[particles] * NM_TO_ANGSTROM).shape[1]
    forces, definitions, route = collective_variables(cv, particles, n_cv, system.getNumParticles(), route=route)
    bias = openmm.CustomCVForce(";".join([energy, *reversed(definitions)]))
    for key, value in (parameters or {}).items():
        bias.addGlobalParameter(key, float(value))
    for key, force in forces.items():
        bias.addCollectiveVariable(key, force)
    bias.setName(name or "mdcvkit CV bias")
    if force_group is None:
        force_group = _free_group(system)
    if isinstance(force_group, bool) or not isinstance(force_group, (int, np.integer)) or not 0 <= force_group <= 31:
        raise ValueError(f"force_group={force_group!r} must be an integer from 0 to 31")
    bias.setForceGroup(int(force_group))
    system.addForce(bias)
    bias.route = route
    bias.n_cv = n_cv
    return bias


def bias_integrator(system, bias, temperature, *, timestep=0.002, friction=1.0, bias_stride=1):
    """A Langevin integrator that evaluates ``bias`` every ``bias_stride`` steps (r-RESPA).

    Parameters
    ----------
    system : openmm.System
        The System holding ``bias``.
    bias : openmm.Force or sequence of openmm.Force
        The slow force(s), e.g. what :func:`add_cv_bias` returned; each must be alone in its
        force group (moved to a free group when it is not).
    temperature : float or openmm.unit.Quantity
        K.
    timestep : float or openmm.unit.Quantity, default 0.002
        Step of the fast forces, ps.
    friction : float or openmm.unit.Quantity, default 1.0
        1/ps.
    bias_stride : int, default 1
        Steps between evaluations of the bias. 1 gives a :class:`openmm.LangevinMiddleIntegrator`;
        larger values an :class:`openmm.MTSLangevinIntegrator` whose outer step is
        ``bias_stride × timestep``: one ``integrator.step(1)`` advances ``bias_stride`` steps.

    Returns
    -------
    openmm.Integrator
        With ``integrator.bias_stride`` set.

    Raises
    ------
    ValueError
        For a stride below 1, or a force that is not in ``system``.
    """
    if isinstance(bias_stride, bool) or not isinstance(bias_stride, (int, np.integer)) or bias_stride < 1:
        raise ValueError(f"bias_stride={bias_stride!r} must be a positive integer (steps between bias evaluations)")
    values = []
    for value, units in ((temperature, unit.kelvin), (timestep, unit.picosecond), (friction, unit.picosecond**-1)):
        values.append(float(value.value_in_unit(units) if unit.is_quantity(value) else value))
    temperature, timestep, friction = values
    if bias_stride == 1:
        integrator = openmm.LangevinMiddleIntegrator(temperature, friction, timestep)
    else:
        biases = list(bias) if isinstance(bias, (list, tuple)) else [bias]
        forces = system.getForces()
        for force in biases:
            if not any(f.this == force.this for f in forces):
                raise ValueError(
                    f"bias {force.getName()!r} is not a force of this system; pass the force add_cv_bias returned"
                )
            if any(f.getForceGroup() == force.getForceGroup() and f.this != force.this for f in forces):
                force.setForceGroup(_free_group(system, exclude=force))
        slow = {force.getForceGroup() for force in biases}
        fast = {f.getForceGroup() for f in forces} - slow
        groups = [(g, 1) for g in sorted(slow)] + [(g, int(bias_stride)) for g in sorted(fast)]
        integrator = openmm.MTSLangevinIntegrator(temperature, friction, timestep * bias_stride, groups)
    integrator.bias_stride = int(bias_stride)
    return integrator


def cv_force(cv, particles, n_particles, *, component=0, route="auto"):
    """A force whose energy (kJ/mol, numerically) is one component of the CV, in CV units.

    For OpenMM tools that take a CV as a force, such as a ``BiasVariable`` of
    :class:`openmm.app.Metadynamics`; add it to a System only inside such a tool.

    Parameters
    ----------
    cv : torch.nn.Module
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``, with an ``n_cv`` attribute.
    particles : sequence of int
        System particle index of each CV input atom.
    n_particles : int
        Number of particles of the System.
    component : int, default 0
        Which CV component.
    route : {"auto", "expression", "python", "torch"}, default "auto"
        As in :func:`add_cv_bias`.

    Returns
    -------
    openmm.CustomCVForce
    """
    n_cv = getattr(cv, "n_cv", None)
    if n_cv is None:
        raise ValueError(f"{type(cv).__name__} has no n_cv attribute; wrap it so that cv.n_cv is its component count")
    if isinstance(component, bool) or not isinstance(component, (int, np.integer)) or not 0 <= component < int(n_cv):
        raise ValueError(f"component={component!r} must be an integer from 0 to {int(n_cv) - 1}")
    forces, definitions, _ = collective_variables(cv, particles, int(n_cv), n_particles, route=route)
    force = openmm.CustomCVForce(";".join([f"cv{int(component)}", *reversed(definitions)]))
    for key, variable in forces.items():
        force.addCollectiveVariable(key, variable)
    return force
