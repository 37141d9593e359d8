"""A CV module as OpenMM collective variables: the nm <-> Å boundary and the three routes.

A CV is a :class:`mdcvkit.analysis.CollectiveVariable` (featurizer -> normalisation ->
encoder) or any torch module or function mapping positions ``(n_frames, n_atoms, 3)`` in Å to
``(n_frames, n_cv)``. Here it becomes the collective variables ``cv0, cv1, ...`` of an
:class:`openmm.CustomCVForce`, by one of three routes that give the same values and forces:

``"expression"``
    The whole ``CollectiveVariable`` compiled into OpenMM forces and expression definitions:
    each featurizer gives its OpenMM form (:meth:`mdcvkit.features.Featurizer.to_openmm`), the
    normalisation and the network become definitions. No Python per step. For featurizers with a
    closed form (dihedrals, distances, positions, body-frame positions, and their concatenation)
    and encoders of ``nn.Linear`` layers and the activations in :data:`ACTIVATIONS`.
``"python"``
    One :class:`openmm.PythonForce` per CV component: OpenMM hands Python the positions, and the
    CV and its Jacobian come from the module's NumPy form (:mod:`mdcvkit.export.numpy`, derived
    layer by layer from the module) where it has one, or from torch and autograd otherwise (one
    evaluation per step, shared between components). Any torch CV, e.g. on Kabsch-aligned positions.
``"torch"``
    openmm-torch's ``TorchForce`` running a traced copy of the module (the GPU path), where
    ``openmmtorch`` is importable.

Units change at this boundary only: positions reach the CV in Å (``10 x``, x in nm) and the
gradient handed to OpenMM is per nm (``10 dξ/dr``, r in Å); energies are in kJ/mol.
Per-call overhead, not arithmetic, is what the "python" and "torch" routes cost; evaluate them
less often with multiple time stepping (:func:`mdcvkit.biasing.add_cv_bias`, ``bias_stride``).
"""

import copy
import uuid
import warnings
import weakref

import numpy as np
import openmm
import openmm.unit as unit
import torch
from torch import nn

from .._io import trace_torchscript
from .numpy import NumpyCV, network_layers

__all__ = [
    "NM_TO_ANGSTROM",
    "ACTIVATIONS",
    "ROUTES",
    "MAX_COLLECTIVE_VARIABLES",
    "NumpyCVEvaluator",
    "TorchCVEvaluator",
    "available_routes",
    "cv_evaluator",
    "check_route",
    "collective_variables",
    "compile_expression",
    "evaluate_cv",
]

#: Å per nm: the one conversion factor of the OpenMM boundary
NM_TO_ANGSTROM = 10.0

#: collective variables a compiled CV may use: a CustomCVForce holds 32, and eABF adds up to two λ
MAX_COLLECTIVE_VARIABLES = 30

#: element-wise activations the expression compiler knows: module type -> OpenMM expression of ``{}``
ACTIVATIONS = {
    nn.Tanh: "tanh({})",
    nn.ReLU: "max(0,{})",
    nn.Sigmoid: "1/(1+exp(-({})))",
    nn.SiLU: "({0})/(1+exp(-({0})))",
    nn.Softplus: "log(1+exp({}))",
    nn.ELU: "step({0})*({0})+(1-step({0}))*(exp({0})-1)",
    nn.Identity: "{}",
    nn.Dropout: "{}",
}


# --- the boundary -----------------------------------------------------------------------------------------
def positions_nm(positions, argument="positions"):
    """Bare ``(n, 3)`` float64 array in nm from an ``openmm.unit`` Quantity or numbers in nm."""
    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    array = np.asarray(positions, dtype=float)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(
            f"{argument} has shape {array.shape}; pass one (x, y, z) row per particle, in nm or as an "
            f"openmm.unit Quantity"
        )
    return array


def module_dtype(cv):
    """The dtype of a module's first parameter or buffer (float64 for functions and empty modules)."""
    if isinstance(cv, nn.Module):
        for tensor in (*cv.parameters(), *cv.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float64


def _float64(cv):
    """A float64 copy of a torch module, or the CV as it is (functions; modules that cannot be copied)."""
    if isinstance(cv, nn.Module) and module_dtype(cv) != torch.float64:
        try:
            return copy.deepcopy(cv).double()
        except Exception as err:  # a module that cannot be copied keeps its own precision
            warnings.warn(f"could not convert a copy of the CV to float64 ({err}); using it as it is", stacklevel=3)
    return cv


def evaluate_cv(cv, positions, n_cv=None):
    """Evaluate a CV on positions in Å and check its output.

    Parameters
    ----------
    cv : torch.nn.Module or callable
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``.
    positions : array_like, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
        Positions in Å.
    n_cv : int, optional
        Expected number of CV components.

    Returns
    -------
    numpy.ndarray, shape (n_frames, n_cv)
        CV values (float64).

    Raises
    ------
    ValueError
        If the CV fails on the positions, or its output does not have shape ``(n_frames, n_cv)``
        or is not finite.
    """
    x = torch.as_tensor(np.asarray(positions, dtype=float))
    if x.ndim == 2:
        x = x[None]
    with torch.no_grad():
        try:
            out = cv(x.to(module_dtype(cv)))
        except Exception as err:
            raise ValueError(
                f"the CV failed on positions of shape {tuple(x.shape)} (Å): {err}; check that the system's "
                f"particles (or `particles=`) match the atoms the CV was built for"
            ) from err
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the CV returned {shape} for {x.shape[0]} frame(s); it must return a tensor of shape "
            f"(n_frames, n_cv), e.g. add [:, None] for a single component"
        )
    if n_cv is not None and out.shape[1] != n_cv:
        raise ValueError(f"the CV returned n_cv={out.shape[1]} components; expected n_cv={n_cv}")
    values = out.detach().double().numpy()
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"the CV is not finite at the given positions (values {values.tolist()}); check the positions "
            f"(Å on the CV side) and the CV's normalisation"
        )
    return values


class TorchCVEvaluator:
    """Values and gradients of a torch CV at one configuration given in nm (the "python" route).

    Parameters
    ----------
    cv : torch.nn.Module or callable
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``. A module is evaluated
        through a float64 copy (the caller's module is left as it is), so that forces are as
        precise as OpenMM's double-precision platforms and constant-energy runs conserve energy.
    n_cv : int
        Number of CV components.

    Notes
    -----
    The last evaluation is kept, keyed by the positions, so that the ``n_cv`` PythonForces of one
    step share one evaluation. :func:`cv_evaluator` picks this or :class:`NumpyCVEvaluator`.
    """

    def __init__(self, cv, n_cv):
        self.cv = _float64(cv)
        self.dtype = module_dtype(self.cv)
        self.n_cv = int(n_cv)
        self._last = (None, None)
        self._token = uuid.uuid4().hex  # OpenMM pickles PythonForce functions: they find us by this token

    def __call__(self, positions_nm):
        """CV and gradient at one configuration.

        Parameters
        ----------
        positions_nm : numpy.ndarray, shape (n_atoms, 3)
            Positions of the CV atoms in nm.

        Returns
        -------
        values : numpy.ndarray, shape (n_cv,)
            CV values, in the CV's units.
        gradients : numpy.ndarray, shape (n_cv, n_atoms, 3)
            ``dξ_k/dx`` in CV units per nm.

        Raises
        ------
        FloatingPointError
            If the positions are not finite (the simulation blew up), or the CV has no gradient there
            (a linear solve of the Kabsch fit's derivative failed: its best rotation is not unique).
        """
        positions_nm = np.ascontiguousarray(positions_nm, dtype=float)
        key = positions_nm.tobytes()
        if self._last[0] == key:
            return self._last[1]
        if not np.all(np.isfinite(positions_nm)):
            raise FloatingPointError(
                "the positions are not finite: the simulation blew up before the CV was evaluated; lower the "
                "time step, the bias stride or the force constant of the bias"
            )
        try:
            values, jacobian = self._evaluate(positions_nm * NM_TO_ANGSTROM)
        except (np.linalg.LinAlgError, torch.linalg.LinAlgError) as err:  # e.g. a Kabsch fit with no unique rotation
            raise FloatingPointError(
                f"the CV has no gradient at these positions ({err}): where the best rotation of a Kabsch fit is not "
                f"unique, a CV on aligned coordinates is undefined (mdcvkit.features.AlignedPositions) and the bias "
                f"pushed the system there; lower kappa, fit on more atoms, or use body-frame coordinates"
            ) from err
        result = values, jacobian * NM_TO_ANGSTROM
        self._last = (key, result)
        return result

    def _evaluate(self, positions):
        """Values ``(n_cv,)`` and Jacobian ``(n_cv, n_atoms, 3)`` per Å at one frame in Å."""
        # one copy of the frame per component: one backward pass of the diagonal gives the Jacobian
        x = torch.tensor(positions, dtype=self.dtype)
        x = x.unsqueeze(0).expand(self.n_cv, -1, -1).clone().requires_grad_(True)
        with torch.enable_grad():
            out = self.cv(x)
            (grad,) = torch.autograd.grad(out.diagonal().sum(), x)
        return out[0].detach().double().numpy(), grad.double().numpy()


class NumpyCVEvaluator(TorchCVEvaluator):
    """:class:`TorchCVEvaluator` evaluating the CV through :class:`~mdcvkit.export.numpy.NumpyCV`.

    Parameters
    ----------
    cv : mdcvkit.analysis.CollectiveVariable
        A CV with a NumPy form.
    n_cv : int
        Number of CV components.

    Raises
    ------
    ValueError
        If the CV has no NumPy form (see :class:`~mdcvkit.export.numpy.NumpyCV`).
    """

    def __init__(self, cv, n_cv):
        super().__init__(cv, n_cv)
        self.numpy_cv = NumpyCV(self.cv)

    def _evaluate(self, positions):
        return self.numpy_cv(positions)


def cv_evaluator(cv, n_cv):
    """The evaluator of the "python" route: NumPy where the CV has a NumPy form, torch otherwise.

    Parameters
    ----------
    cv : torch.nn.Module or callable
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``.
    n_cv : int
        Number of CV components.

    Returns
    -------
    NumpyCVEvaluator or TorchCVEvaluator
        Same values and gradients; the NumPy one costs a fraction per call for one frame
        (:doc:`/findings/bias_routes`).
    """
    try:
        return NumpyCVEvaluator(cv, n_cv)
    except ValueError:
        return TorchCVEvaluator(cv, n_cv)


# --- route "expression" --------------------------------------------------------------------------------------
def _layer_definitions(layer, current, depth, prefix):
    """Definitions of one layer's outputs from the variables ``current``; returns (definitions, new)."""
    definitions, new = [], []
    if isinstance(layer, nn.Linear):
        weight = layer.weight.detach().numpy()
        bias = np.zeros(len(weight)) if layer.bias is None else layer.bias.detach().numpy()
        for row in range(len(weight)):
            terms = [f"({float(w)!r})*{v}" for w, v in zip(weight[row], current, strict=True) if w != 0.0]
            new.append(f"{prefix}_n{depth}_{row}")
            definitions.append(f"{new[-1]}={'+'.join(terms + [repr(float(bias[row]))])}")
        return definitions, new
    if type(layer) not in ACTIVATIONS:
        valid = ["Linear"] + [t.__name__ for t in ACTIVATIONS]
        raise ValueError(
            f"layer {layer!r} cannot be compiled into an OpenMM expression; the compiler knows {valid}. "
            f"Use route='python' for this CV"
        )
    if isinstance(layer, nn.Softplus) and (layer.beta != 1 or layer.threshold < 20):
        raise ValueError("nn.Softplus compiles only with beta=1; use route='python'")
    if isinstance(layer, nn.ELU) and layer.alpha != 1.0:
        raise ValueError(f"nn.ELU(alpha={layer.alpha}) compiles only with alpha=1; use route='python'")
    for k, var in enumerate(current):
        new.append(f"{prefix}_n{depth}_{k}")
        definitions.append(f"{new[-1]}={ACTIVATIONS[type(layer)].format(var)}")
    return definitions, new


def compile_expression(cv, particles, prefix="cv"):
    """Compile a CollectiveVariable into the collective variables and definitions of a CustomCVForce.

    The featurizer gives OpenMM forces (:meth:`~mdcvkit.features.Featurizer.to_openmm`), the
    normalisation and each layer become expression definitions. When the encoder starts with a
    Linear layer whose units need fewer forces than the raw features, normalisation and that layer
    are folded into one linear force per unit and kind of feature
    (:meth:`~mdcvkit.features.Featurizer.to_openmm_linear`), which keeps wide inputs (all
    heavy-atom distances) within OpenMM's limit of collective variables.

    Parameters
    ----------
    cv : mdcvkit.analysis.CollectiveVariable
        Featurizer -> normalisation -> encoder of ``nn.Linear`` and :data:`ACTIVATIONS` layers.
    particles : sequence of int
        System particle index of each of the featurizer's atoms.
    prefix : str, default "cv"
        CV component ``k`` is defined as the variable ``{prefix}{k}``.

    Returns
    -------
    forces : dict of str -> openmm.Force
        Collective variables to add to a CustomCVForce.
    definitions : list of str
        Expression definitions in the order they are computed; join them reversed after the energy
        expression (``";".join([energy, *reversed(definitions)])``).

    Raises
    ------
    ValueError
        If the featurizer or a layer has no OpenMM form, or the CV needs more than
        :data:`MAX_COLLECTIVE_VARIABLES` collective variables.
    """
    featurizer, mean, std, layers = network_layers(cv)
    raw = featurizer.to_openmm(particles)
    packed = None
    if layers and isinstance(layers[0], nn.Linear):
        weight = layers[0].weight.detach().numpy() / std
        bias = -weight @ mean + (0.0 if layers[0].bias is None else layers[0].bias.detach().numpy())
        packed = [featurizer.to_openmm_linear(particles, row) for row in weight]
        if sum(map(len, packed)) >= len(raw):
            packed = None
    forces, definitions = {}, []
    if packed is None:
        current = []
        for k, (force, expressions) in enumerate(raw):
            forces[f"{prefix}_f{k}"] = force
            for expression in expressions:
                current.append(f"{prefix}_n0_{len(current)}")
                value = expression.format(f"{prefix}_f{k}")
                f = len(current) - 1
                definitions.append(f"{current[-1]}=({value}-({float(mean[f])!r}))/{float(std[f])!r}")
        depth = 1
    else:
        current = []
        for row, unit_forces in enumerate(packed):
            names = []
            for g, force in enumerate(unit_forces):
                names.append(f"{prefix}_h{row}_{g}")
                forces[names[-1]] = force
            current.append(f"{prefix}_n1_{row}")
            definitions.append(f"{current[-1]}={'+'.join(names + [repr(float(bias[row]))])}")
        layers, depth = layers[1:], 2
    if len(forces) > MAX_COLLECTIVE_VARIABLES:
        raise ValueError(
            f"the compiled CV needs {len(forces)} OpenMM collective variables, more than "
            f"{MAX_COLLECTIVE_VARIABLES} (a CustomCVForce holds 32, and eABF adds its λ); use fewer features or "
            f"a narrower first layer, or route='python'"
        )
    for layer in layers:
        new_definitions, current = _layer_definitions(layer, current, depth, prefix)
        definitions += new_definitions
        depth += 1
    definitions += [f"{prefix}{k}={var}" for k, var in enumerate(current)]
    return forces, definitions


def _expression_route(cv, particles, n_cv, n_particles, prefix):
    return compile_expression(cv, particles, prefix)


# --- route "python" -------------------------------------------------------------------------------------------
#: live evaluators by token: OpenMM pickles a PythonForce's function when it builds a Context
_EVALUATORS = weakref.WeakValueDictionary()


class _PythonCVComponent:
    """PythonForce computation: energy = ξ_k (CV units), force = -dξ_k/dx (per nm).

    Pickling keeps only a token of the evaluator, so any CV (a lambda, a closure, a module that
    cannot be pickled) works and the copies OpenMM makes share one evaluator. A copy unpickled in
    another process has no evaluator and says so when called.
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
        values, gradients = self.evaluator(_state_positions(state))
        return float(values[self.index]), -gradients[self.index]


def _state_positions(state):
    """The positions of a State as a bare array in nm.

    ``State.getPositions(asNumpy=True)`` costs about 12 µs more per call (a ``dir()`` lookup and a
    Quantity), twice per step for a 2-D CV; the State's own array copy is taken where it exists.
    """
    try:
        positions = np.empty((state._getNumParticles(), 3))
        state._getVectorAsNumpy(openmm.State.Positions, positions)
    except AttributeError:  # an OpenMM without these internals
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return positions


def _python_route(cv, particles, n_cv, n_particles, prefix):
    evaluator = cv_evaluator(cv, n_cv)
    forces = {}
    for k in range(n_cv):
        force = openmm.PythonForce(_PythonCVComponent(evaluator, k))
        force.setParticles([int(p) for p in particles])
        forces[f"{prefix}{k}"] = force
    return forces, []


# --- route "torch" --------------------------------------------------------------------------------------------
class TorchComponent(nn.Module):
    """All system positions ``(n_particles, 3)`` in nm -> CV component ``index`` (what TorchForce runs).

    Parameters
    ----------
    cv : torch.nn.Module
        Positions (Å) -> CV.
    particles : sequence of int
        System index of each CV atom.
    index : int
        The CV component.
    """

    def __init__(self, cv, particles, index):
        super().__init__()
        self.cv = cv
        self.register_buffer("particles", torch.as_tensor(np.asarray(particles, dtype=np.int64)))
        self.index = int(index)
        self.dtype = module_dtype(cv)

    def forward(self, positions):
        x = positions.index_select(0, self.particles).to(self.dtype) * NM_TO_ANGSTROM
        return self.cv(x.unsqueeze(0))[0, self.index].to(positions.dtype)


def _import_openmmtorch():
    try:
        import openmmtorch
    except ImportError as err:
        raise ImportError(
            "route='torch' needs openmm-torch: `conda install -c conda-forge openmm-torch` or "
            "`pip install 'mdcvkit[gpu]'` (CUDA builds), or use route='python'"
        ) from err
    return openmmtorch


def _torch_route(cv, particles, n_cv, n_particles, prefix):
    openmmtorch = _import_openmmtorch()
    example = torch.zeros(n_particles, 3)
    forces = {}
    for k in range(n_cv):
        traced = trace_torchscript(TorchComponent(cv, particles, k), example, free_first=False)
        forces[f"{prefix}{k}"] = openmmtorch.TorchForce(traced)
    return forces, []


#: bias routes: name -> builder(cv, particles, n_cv, n_particles, prefix) -> (forces, definitions)
ROUTES = {"expression": _expression_route, "python": _python_route, "torch": _torch_route}


def available_routes(cv=None, particles=None):
    """Routes usable here for ``cv``, fastest first.

    Parameters
    ----------
    cv : torch.nn.Module, optional
        The CV; "expression" is listed only when it compiles.
    particles : sequence of int, optional
        System index of each CV atom (for the compile check); default the identity.

    Returns
    -------
    list of str
    """
    routes = []
    if cv is not None:
        n_atoms = getattr(getattr(cv, "featurizer", None), "n_atoms", 0)
        try:
            compile_expression(cv, np.arange(n_atoms) if particles is None else particles)
            routes.append("expression")
        except ValueError:
            pass
    try:
        _import_openmmtorch()
        routes.append("torch")
    except ImportError:
        pass
    return routes + ["python"]


def check_route(route):
    """Raise a ValueError naming the choices unless ``route`` is "auto" or one of :data:`ROUTES`."""
    if route != "auto" and route not in ROUTES:
        raise ValueError(f"route={route!r} is not a bias route; use one of {['auto', *ROUTES]}")


def collective_variables(cv, particles, n_cv, n_particles, *, route="auto", prefix="cv"):
    """The OpenMM collective variables named ``{prefix}0`` to ``{prefix}{n_cv-1}``, one per CV component.

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
    route : {"auto", "expression", "python", "torch"}, default "auto"
        "auto" takes the first of :func:`available_routes`.
    prefix : str, default "cv"

    Returns
    -------
    forces : dict of str -> openmm.Force
        Collective variables for a CustomCVForce.
    definitions : list of str
        Expression definitions, in computing order (append them reversed to the energy).
    route : str
        The route taken.
    """
    check_route(route)
    if route == "auto":
        route = available_routes(cv, particles)[0]
    forces, definitions = ROUTES[route](cv, particles, int(n_cv), int(n_particles), prefix)
    return forces, definitions, route
