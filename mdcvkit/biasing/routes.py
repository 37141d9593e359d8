"""How a CV reaches OpenMM: the bias routes and the per-step driver of the "external" one.

Each route builder returns the OpenMM collective variables (and expression
definitions) that define ``cv0 ... cv{n_cv-1}`` inside a CustomCVForce; see
:mod:`mdcvkit.biasing.force` for the routes and what they cost.
"""

import weakref

import numpy as np
import openmm
import torch

from .._io import trace_torchscript
from .boundary import NM_TO_ANGSTROM, TorchCVEvaluator, _module_dtype
from .descriptors import DescriptorCV

__all__ = ["ROUTES", "ExternalUpdater", "available_routes", "check_route", "step"]


#: live evaluators by token: OpenMM pickles a PythonForce's function when it builds a Context
_EVALUATORS = weakref.WeakValueDictionary()


class _PythonCVComponent:
    """PythonForce computation: energy = ξ_k (CV units), force = -dξ_k/dx (per nm).

    Pickling keeps only a token of the evaluator, so any CV (a lambda, a closure, a module
    that cannot be pickled) works, and the copies OpenMM makes share one evaluator. A copy
    unpickled in another process has no evaluator and says so when called.
    """

    def __init__(self, evaluator, index):
        self.evaluator = evaluator
        self.index = index
        self.token = evaluator._token
        _EVALUATORS[self.token] = evaluator

    def __getstate__(self):
        return {"token": self.token, "index": self.index}

    def __setstate__(self, state):
        self.token, self.index = state["token"], state["index"]
        self.evaluator = _EVALUATORS.get(self.token)

    def __call__(self, state):
        if self.evaluator is None:
            raise RuntimeError(
                "this PythonForce was restored without its CV (serialized to another process); "
                "add the bias again with mdcvkit.biasing.add_cv_bias"
            )
        positions = state.getPositions(asNumpy=True)._value  # a State holds nm; skip the unit machinery
        values, gradients = self.evaluator(positions)
        return float(values[self.index]), -gradients[self.index]


def _python_route(cv, particles, n_cv, n_particles, prefix):
    if not hasattr(openmm, "PythonForce"):
        raise ValueError(
            f"route='python' needs openmm.PythonForce (OpenMM >= 8.6), this is OpenMM {openmm.__version__}; "
            f"use route='expression' with a DescriptorCV, or upgrade OpenMM"
        )
    evaluator = TorchCVEvaluator(cv, n_cv)
    forces = {}
    for k in range(n_cv):
        force = openmm.PythonForce(_PythonCVComponent(evaluator, k))
        force.setParticles([int(p) for p in particles])
        forces[f"{prefix}{k}"] = force
    return forces, []


def _expression_route(cv, particles, n_cv, n_particles, prefix):
    if not isinstance(cv, DescriptorCV):
        raise ValueError(
            f"route='expression' needs a mdcvkit.biasing.DescriptorCV, not {type(cv).__name__}; "
            f"use route='python' for other CV modules"
        )
    return cv.openmm_expression(particles, prefix=prefix)


class _TorchComponent(torch.nn.Module):
    """All system positions (nm, float32) -> CV component k (the module TorchForce runs)."""

    def __init__(self, cv, particles, index):
        super().__init__()
        self.cv = cv
        self.register_buffer("particles", torch.as_tensor(np.asarray(particles, dtype=np.int64)))
        self.index = index
        self.dtype = _module_dtype(cv)

    def forward(self, positions):
        x = positions.index_select(0, self.particles).to(self.dtype) * NM_TO_ANGSTROM
        return self.cv(x.unsqueeze(0))[0, self.index].to(positions.dtype)


class ExternalUpdater:
    """Driver of the ``"external"`` route: re-linearises the CV around the current positions.

    Each CV component is a :class:`openmm.CustomExternalForce` ``gx*x + gy*y + gz*z + c``
    whose per-particle parameters hold ``∇ξ`` (per nm) and the offset that makes its value
    ``ξ`` at the positions of the last :meth:`update`: value and gradient are exact there.
    Call :meth:`update` before every force evaluation, i.e. step one step at a time with
    :func:`step`.
    """

    def __init__(self, evaluator, forces, particles):  # forces: dict CV name -> CustomExternalForce
        self.evaluator = evaluator
        self.names = list(forces)
        self.forces = list(forces.values())
        self.particles = np.asarray(particles, dtype=np.int64)
        self.bias = None  # the CustomCVForce holding the forces, set once it is built

    def set_parameters(self, positions_nm, forces=None):
        """Write ∇ξ and the offsets for CV-atom positions ``(n_atoms, 3)`` in nm into ``forces``.

        ``forces`` defaults to the forces as built (before a Context exists); a Context holds
        copies of them, which :meth:`update` reaches through the CustomCVForce's inner Context.
        """
        values, gradients = self.evaluator(positions_nm)
        n_atoms = len(positions_nm)
        for k, force in enumerate(self.forces if forces is None else forces):
            g = gradients[k]
            offset = (values[k] - float((g * positions_nm).sum())) / n_atoms
            for i in range(n_atoms):
                force.setParticleParameters(i, int(self.particles[i]), [*g[i].tolist(), offset])
        return values

    def update(self, context):
        """Re-linearise at the context's current positions (one CV evaluation, forward + backward)."""
        positions = context.getState(getPositions=True).getPositions(asNumpy=True)._value  # nm
        inner = self.bias.getInnerContext(context)
        system = inner.getSystem()
        names = [self.bias.getCollectiveVariableName(i) for i in range(self.bias.getNumCollectiveVariables())]
        forces = [system.getForce(names.index(name)) for name in self.names]
        self.set_parameters(positions[self.particles], forces)
        for force in forces:
            force.updateParametersInContext(inner)


def _external_route(cv, particles, n_cv, n_particles, prefix):
    evaluator = TorchCVEvaluator(cv, n_cv)
    forces = {}
    for k in range(n_cv):
        force = openmm.CustomExternalForce("gx*x+gy*y+gz*z+c")
        for name in ("gx", "gy", "gz", "c"):
            force.addPerParticleParameter(name)
        for p in particles:
            force.addParticle(int(p), [0.0, 0.0, 0.0, 0.0])
        forces[f"{prefix}{k}"] = force
    updater = ExternalUpdater(evaluator, forces, particles)
    return forces, [], updater


def step(simulation, n_steps, biases=()):
    """Advance a simulation by ``n_steps``, refreshing ``"external"``-route biases before each step.

    Parameters
    ----------
    simulation : openmm.app.Simulation or openmm.Context
    n_steps : int
    biases : sequence of openmm.CustomCVForce
        Forces returned by :func:`add_cv_bias`; those of other routes need no refresh, and
        without any the integrator takes all steps at once.
    """
    context = simulation.context if hasattr(simulation, "context") else simulation
    integrator = context.getIntegrator()
    updaters = [b.updater for b in biases if getattr(b, "updater", None) is not None]
    if not updaters:
        integrator.step(int(n_steps))
        return
    for _ in range(int(n_steps)):
        for updater in updaters:
            updater.update(context)
        integrator.step(1)


def _torch_route(cv, particles, n_cv, n_particles, prefix):
    try:
        import openmmtorch
    except ImportError as err:
        raise ImportError(
            "route='torch' needs openmm-torch; install it with `conda install -c conda-forge openmm-torch` "
            "(or pip install 'mdcvkit[gpu]'), or use route='python'"
        ) from err
    example = torch.zeros(n_particles, 3)
    forces = {}
    for k in range(n_cv):
        traced = trace_torchscript(_TorchComponent(cv, particles, k), example, free_first=False)
        forces[f"{prefix}{k}"] = openmmtorch.TorchForce(traced)
    return forces, []


#: bias routes: name -> builder(cv, particles, n_cv, n_particles, prefix) -> (forces, definitions)
ROUTES = {
    "python": _python_route,
    "expression": _expression_route,
    "torch": _torch_route,
    "external": _external_route,
}


def available_routes(cv=None):
    """Routes usable here for ``cv``, fastest first.

    Parameters
    ----------
    cv : torch.nn.Module, optional
        The CV; "expression" is listed only for a :class:`DescriptorCV`.

    Returns
    -------
    list of str
    """
    routes = []
    if cv is None or isinstance(cv, DescriptorCV):
        routes.append("expression")
    try:
        import openmmtorch  # noqa: F401

        routes.append("torch")
    except ImportError:
        pass
    if hasattr(openmm, "PythonForce"):
        routes.append("python")
    routes.append("external")
    return routes


def _resolve_route(route, cv):
    if route == "auto":
        for candidate in available_routes(cv):
            if candidate == "expression":
                try:
                    cv.openmm_expression(list(range(cv.n_atoms)))
                except ValueError:
                    continue
            return candidate
        raise ValueError("no bias route is available: install OpenMM >= 8.6 or openmm-torch")
    check_route(route)
    return route


def check_route(route):
    """Raise a ValueError naming the choices unless ``route`` is "auto" or one of :data:`ROUTES`."""
    if route != "auto" and route not in ROUTES:
        raise ValueError(f"route={route!r} is not a bias route; use one of {['auto', *ROUTES]}")
