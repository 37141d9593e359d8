"""CVs built from descriptors OpenMM and PLUMED can compute themselves.

A :class:`DescriptorCV` is a CV module (positions in Å -> CV) made of simple
descriptors (:class:`Distance` in Å, :class:`Torsion` in rad, optionally as
sin/cos, :class:`Position` in Å), a mean/std normalisation and an optional
feed-forward network (``nn.Sequential`` of ``nn.Linear`` and element-wise
activations). Because every piece has a closed form, the whole CV compiles
into an OpenMM :class:`~openmm.CustomCVForce` expression (no Python per
step: :meth:`DescriptorCV.openmm_expression`) and into a PLUMED input whose
descriptors feed the traced network (:mod:`mdcvkit.biasing.plumed`).

Atom indices given to descriptors are positions in the CV's own input
(``positions[:, index]``); the map to system particles is supplied when the
force is built.
"""

import numpy as np
import openmm
import torch
from torch import nn

from ..features import frame_coordinates

__all__ = ["Descriptor", "Distance", "Torsion", "Position", "FramePosition", "DescriptorCV", "ACTIVATIONS"]

#: collective variables a compiled CV may use: OpenMM's CustomCVForce holds 32, eABF adds up to two λ
MAX_COLLECTIVE_VARIABLES = 30

_AXIS_NAMES = ("x", "y", "z")


class Descriptor(nn.Module):
    """Base class: positions ``(n_frames, n_atoms, 3)`` in Å -> one value per frame, ``(n_frames,)``."""

    #: number of features the descriptor contributes to the network input
    n_features = 1
    units = ""

    def feature_expressions(self, name):
        """OpenMM expressions of the features in terms of the raw descriptor variable ``name``."""
        return [name]

    def features(self, value):
        """Features from raw values ``(n_frames,)`` -> ``(n_frames, n_features)``."""
        return value[:, None]

    @property
    def linear_key(self):
        """Descriptors with equal keys share one force in :meth:`linear_force`."""
        return type(self).__name__

    @staticmethod
    def linear_force(terms, particles):
        """One OpenMM force whose energy is ``Σ c · features(descriptor)`` over ``terms``.

        Parameters
        ----------
        terms : list of (Descriptor, numpy.ndarray of shape (n_features,))
            Descriptors of one :attr:`linear_key` and the coefficient of each of their features.
        particles : sequence of int
            System particle index of each CV input atom.
        """
        raise NotImplementedError


def _check_atoms(atoms, n, argument):
    atoms = tuple(int(a) for a in atoms)
    if len(atoms) != n or any(a < 0 for a in atoms) or len(set(atoms)) != n:
        raise ValueError(f"{argument}={atoms!r} must be {n} distinct non-negative atom indices")
    return atoms


class Distance(Descriptor):
    """Distance between two atoms, in Å.

    Parameters
    ----------
    i, j : int
        Indices of the atoms in the CV's input positions.
    """

    units = "Å"

    def __init__(self, i, j):
        super().__init__()
        self.atoms = _check_atoms((i, j), 2, "(i, j)")

    def forward(self, positions):
        i, j = self.atoms
        return torch.linalg.vector_norm(positions[:, j] - positions[:, i], dim=-1)

    def openmm_force(self, particles):
        """A force whose energy equals the distance in Å (``10 r``, r in nm)."""
        force = openmm.CustomBondForce("10*r")
        force.addBond(*(int(particles[a]) for a in self.atoms), [])
        return force

    @staticmethod
    def linear_force(terms, particles):
        force = openmm.CustomBondForce("c0*10*r")
        force.addPerBondParameter("c0")
        for descriptor, coefficients in terms:
            force.addBond(*(int(particles[a]) for a in descriptor.atoms), [float(coefficients[0])])
        return force

    def plumed(self, label, particles):
        """PLUMED action computing the distance (``UNITS LENGTH=A`` assumed)."""
        a, b = (int(particles[k]) + 1 for k in self.atoms)
        return f"{label}: DISTANCE ATOMS={a},{b}"


class Torsion(Descriptor):
    """Dihedral angle of four atoms, in rad, in (-π, π]; with ``trig=True`` fed as (sin, cos).

    Parameters
    ----------
    i, j, k, l : int
        Indices of the atoms in the CV's input positions.
    trig : bool, default True
        Give the network sin and cos of the angle (continuous across ±π).
    """

    units = "rad"

    def __init__(self, i, j, k, l, *, trig=True):  # noqa: E741
        super().__init__()
        self.atoms = _check_atoms((i, j, k, l), 4, "(i, j, k, l)")
        self.trig = bool(trig)
        self.n_features = 2 if self.trig else 1

    def forward(self, positions):
        p0, p1, p2, p3 = (positions[:, a] for a in self.atoms)
        b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
        n1 = torch.linalg.cross(b0, b1)
        n2 = torch.linalg.cross(b1, b2)
        m1 = torch.linalg.cross(n1, b1 / torch.linalg.vector_norm(b1, dim=-1, keepdim=True))
        return torch.atan2(-(m1 * n2).sum(-1), (n1 * n2).sum(-1))

    def features(self, value):
        if self.trig:
            return torch.stack([torch.sin(value), torch.cos(value)], dim=-1)
        return value[:, None]

    def feature_expressions(self, name):
        return [f"sin({name})", f"cos({name})"] if self.trig else [name]

    @property
    def linear_key(self):
        return ("Torsion", self.trig)

    @staticmethod
    def linear_force(terms, particles):
        trig = terms[0][0].trig
        force = openmm.CustomTorsionForce("c0*sin(theta)+c1*cos(theta)" if trig else "c0*theta")
        for name in ("c0", "c1") if trig else ("c0",):
            force.addPerTorsionParameter(name)
        for descriptor, coefficients in terms:
            force.addTorsion(*(int(particles[a]) for a in descriptor.atoms), [float(c) for c in coefficients])
        return force

    def openmm_force(self, particles):
        """A force whose energy equals the dihedral in rad (OpenMM's and IUPAC's sign convention)."""
        force = openmm.CustomTorsionForce("theta")
        force.addTorsion(*(int(particles[a]) for a in self.atoms), [])
        return force

    def plumed(self, label, particles):
        """PLUMED ``TORSION`` action (rad)."""
        return f"{label}: TORSION ATOMS={','.join(str(int(particles[a]) + 1) for a in self.atoms)}"


class Position(Descriptor):
    """One Cartesian coordinate of one atom, in Å (not rotation invariant: toys, restrained systems).

    Parameters
    ----------
    atom : int
        Index of the atom in the CV's input positions.
    axis : int, 0, 1 or 2
        x, y or z.
    """

    units = "Å"

    def __init__(self, atom, axis=0):
        super().__init__()
        if axis not in (0, 1, 2):
            raise ValueError(f"axis={axis!r} must be 0, 1 or 2 (x, y, z)")
        self.atoms = _check_atoms((atom,), 1, "atom")
        self.axis = int(axis)

    def forward(self, positions):
        return positions[:, self.atoms[0], self.axis]

    def openmm_force(self, particles):
        """A force whose energy equals the coordinate in Å (``10 x``, x in nm)."""
        force = openmm.CustomExternalForce(f"10*{_AXIS_NAMES[self.axis]}")
        force.addParticle(int(particles[self.atoms[0]]), [])
        return force

    @staticmethod
    def linear_force(terms, particles):
        force = openmm.CustomExternalForce("10*(c0*x+c1*y+c2*z)")
        for name in ("c0", "c1", "c2"):
            force.addPerParticleParameter(name)
        for descriptor, coefficients in terms:
            per_axis = [0.0, 0.0, 0.0]
            per_axis[descriptor.axis] = float(coefficients[0])
            force.addParticle(int(particles[descriptor.atoms[0]]), per_axis)
        return force

    def plumed(self, label, particles):
        """PLUMED ``POSITION`` action; the component is ``label.x`` (``.y``, ``.z``)."""
        return f"{label}: POSITION ATOM={int(particles[self.atoms[0]]) + 1} NOPBC"

    def plumed_component(self, label):
        return f"{label}.{_AXIS_NAMES[self.axis]}"


#: OpenMM definitions of the body-frame coordinates X, Y, Z (Å) of particle p4 in the frame of p1, p2, p3 (nm).
#: With u = r2 - r1, v = r3 - r1, d = r4 - r1 and n = u × v: X = d·u/|u|, Y = d·(n × u)/(|n||u|) with
#: n × u = v (u·u) - u (u·v), Z = d·n/|n|, and |n|² = (u·u)(v·v) - (u·v)²: dot products only, which
#: OpenMM differentiates quickly (normalised axes nested in a cross product took seconds per force).
_FRAME_DEFINITIONS = "; ".join(
    [
        "X=10*du/sqrt(uu)",
        "Y=10*(dv*uu-du*uv)/sqrt(nn*uu)",
        "Z=10*(dx*(uy*vz-uz*vy)+dy*(uz*vx-ux*vz)+dz*(ux*vy-uy*vx))/sqrt(nn)",
        "nn=uu*vv-uv^2",
    ]
    + [
        f"{name}={p}x*{q}x+{p}y*{q}y+{p}z*{q}z"
        for name, p, q in (("du", "d", "u"), ("dv", "d", "v"), ("uv", "u", "v"), ("uu", "u", "u"), ("vv", "v", "v"))
    ]  # fmt: skip
    + [f"{p}{a}={a}{k}-{a}1" for p, k in (("u", 2), ("v", 3), ("d", 4)) for a in "xyz"]
)


class FramePosition(Descriptor):
    """One coordinate of an atom in the body frame of three atoms, in Å.

    The frame is that of :func:`mdcvkit.features.frame_coordinates` (origin on ``o``, x towards
    ``a``, y in the plane of ``b``); :class:`mdcvkit.features.FramePositions` is the featurizer.

    Parameters
    ----------
    atom : int
        Index of the atom in the CV's input positions.
    frame : sequence of 3 int
        Indices ``(o, a, b)`` of the frame's origin, x-axis and xy-plane atoms.
    axis : int, 0, 1 or 2
        x, y or z of the frame.
    """

    units = "Å"

    def __init__(self, atom, frame, axis=0):
        super().__init__()
        if axis not in (0, 1, 2):
            raise ValueError(f"axis={axis!r} must be 0, 1 or 2 (x, y, z of the frame)")
        self.frame = _check_atoms(frame, 3, "frame")
        self.atoms = _check_atoms((*self.frame, atom), 4, "(frame..., atom)")
        self.axis = int(axis)

    def forward(self, positions):
        return frame_coordinates(positions, self.frame, self.atoms[3:])[:, 0, self.axis]

    @property
    def linear_key(self):
        return ("FramePosition", self.frame)

    def openmm_force(self, particles):
        """A force whose energy equals the frame coordinate in Å."""
        force = openmm.CustomCompoundBondForce(4, f"{'XYZ'[self.axis]}; {_FRAME_DEFINITIONS}")
        force.addBond([int(particles[a]) for a in self.atoms], [])
        return force

    @staticmethod
    def linear_force(terms, particles):
        force = openmm.CustomCompoundBondForce(4, f"c0*X+c1*Y+c2*Z; {_FRAME_DEFINITIONS}")
        for name in ("c0", "c1", "c2"):
            force.addPerBondParameter(name)
        per_atom = {}
        for descriptor, coefficients in terms:  # one bond per atom, its three axes together
            per_atom.setdefault(descriptor.atoms, [0.0, 0.0, 0.0])[descriptor.axis] += float(coefficients[0])
        for atoms, coefficients in per_atom.items():
            force.addBond([int(particles[a]) for a in atoms], coefficients)
        return force

    def plumed(self, label, particles):
        """Not available: raises ValueError (PLUMED export covers distances, torsions, aligned positions)."""
        raise ValueError(
            "a DescriptorCV of body-frame coordinates has no PLUMED form; export the fitted CV on "
            "FramePositions (results.model), which PLUMED feeds with the POSITION of each atom"
        )


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


class _Head(nn.Module):
    """Raw descriptor values -> CV: features, normalisation, network (what PLUMED's model sees)."""

    def __init__(self, descriptors, model, mean, std):
        super().__init__()
        self.descriptors = descriptors
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, values):
        parts = [d.features(values[:, k]) for k, d in enumerate(self.descriptors)]
        features = (torch.cat(parts, dim=-1) - self.mean.to(values.dtype)) / self.std.to(values.dtype)
        return features if self.model is None else self.model(features)


class DescriptorCV(nn.Module):
    """A CV made of descriptors, normalisation and an optional network.

    ``forward(positions)`` maps ``(n_frames, n_atoms, 3)`` positions in Å to
    ``(n_frames, n_cv)``. Without a network the normalised features are the CVs.

    Parameters
    ----------
    descriptors : sequence of Descriptor
        :class:`Distance`, :class:`Torsion`, :class:`Position`, :class:`FramePosition`.
    model : torch.nn.Module, optional
        ``nn.Sequential`` (nesting allowed) of ``nn.Linear`` and activations in
        :data:`ACTIVATIONS`, from the ``n_features`` normalised features to the CVs.
        Any module works in torch; only those compile to an OpenMM expression.
    mean, std : array_like, shape (n_features,), optional
        Normalisation ``(feature - mean) / std``; defaults 0 and 1.
    names : sequence of str, optional
        Names of the CV components; default ``cv0``, ``cv1``, ...
    """

    def __init__(self, descriptors, model=None, mean=None, std=None, names=None):
        super().__init__()
        descriptors = list(descriptors)
        if not descriptors or not all(isinstance(d, Descriptor) for d in descriptors):
            raise ValueError(
                f"descriptors={descriptors!r} must be a non-empty list of Distance, Torsion or Position "
                "(or FramePosition)"
            )
        n_features = sum(d.n_features for d in descriptors)
        mean = torch.zeros(n_features) if mean is None else torch.as_tensor(np.asarray(mean, dtype=float))
        std = torch.ones(n_features) if std is None else torch.as_tensor(np.asarray(std, dtype=float))
        for label, value in (("mean", mean), ("std", std)):
            if value.shape != (n_features,):
                raise ValueError(
                    f"{label} has shape {tuple(value.shape)}, but the descriptors give "
                    f"n_features={n_features}; "
                    f"pass one value per feature (torsions with trig=True count twice)"
                )
        if not torch.all(std > 0):
            raise ValueError(f"std={std.tolist()} must be positive; pass 1 for features left unscaled")
        self.head = _Head(nn.ModuleList(descriptors), model, mean.double(), std.double())
        self.n_features = n_features
        self.n_atoms = 1 + max(max(d.atoms) for d in descriptors)
        with torch.no_grad():
            n_cv = self.head(torch.zeros(1, len(descriptors), dtype=self._dtype())).shape[-1]
        self.names = [f"cv{k}" for k in range(n_cv)] if names is None else [str(n) for n in names]
        if len(self.names) != n_cv:
            raise ValueError(f"names={names!r} has {len(self.names)} entries but the CV has n_cv={n_cv}")
        self.n_cv = n_cv

    @classmethod
    def from_collective_variable(cls, fitted, positions=None, *, rtol=1e-5):
        """Rebuild a fitted ``featurizer -> normalisation -> encoder`` CV from descriptors.

        Works for the CV module of :class:`mdcvkit.AutoencoderCV` (``results.model``) when its
        features are rotation invariant: ``Dihedrals`` (sin/cos) and non-periodic
        ``PairwiseDistances``, alone or concatenated, and its ``encode`` is
        ``encoder(normalization(x))``. The result compiles into an OpenMM expression
        (no Python per step) and exports to PLUMED.

        Parameters
        ----------
        fitted : torch.nn.Module
            With ``featurizer`` and ``model`` (``model.normalization.mean``/``.scale``,
            ``model.encoder`` an ``nn.Sequential``).
        positions : array_like, shape (n_frames, n_atoms, 3), optional
            Positions in Å on which both CVs must agree; default 8 random frames.
        rtol : float, default 1e-5
            Relative tolerance of that check (float64).

        Returns
        -------
        DescriptorCV

        Raises
        ------
        ValueError
            If a featurizer has no descriptor form (aligned or raw positions, periodic
            distances) or the rebuilt CV does not reproduce ``fitted``; use the python route.
        """
        import copy

        featurizer = getattr(fitted, "featurizer", None)
        model = getattr(fitted, "model", None)
        normalization = getattr(model, "normalization", None)
        encoder = getattr(model, "encoder", None)
        if featurizer is None or normalization is None or not isinstance(encoder, nn.Sequential):
            raise ValueError(
                f"{type(fitted).__name__} is not a featurizer -> normalization -> encoder CV; "
                f"bias it through route='python'"
            )
        descriptors = _descriptors_of(featurizer)
        built = cls(
            descriptors,
            model=copy.deepcopy(encoder).double(),
            mean=normalization.mean.detach().double().numpy(),
            std=normalization.scale.detach().double().numpy(),
        )
        n_atoms = int(getattr(featurizer, "n_atoms", built.n_atoms))
        if positions is None:
            generator = torch.Generator().manual_seed(0)
            positions = 4.0 * torch.randn(8, n_atoms, 3, generator=generator, dtype=torch.float64)
        positions = torch.as_tensor(np.asarray(positions, dtype=float))
        with torch.no_grad():
            expected = copy.deepcopy(fitted).double()(positions).numpy()
            got = built(positions).numpy()
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=rtol, atol=rtol):
            raise ValueError(
                f"the descriptor form of {type(fitted).__name__} does not reproduce it (largest difference "
                f"{np.abs(got - expected).max() if got.shape == expected.shape else 'shape'}); its encode() "
                f"is not encoder(normalization(x)): bias it through route='python'"
            )
        return built

    @property
    def descriptors(self):
        """The descriptor modules, in input order."""
        return list(self.head.descriptors)

    def _dtype(self):
        for p in self.head.parameters():
            return p.dtype
        return torch.float64

    def descriptor_values(self, positions):
        """Raw descriptors ``(n_frames, n_descriptors)`` (Å, rad) of positions in Å."""
        return torch.stack([d(positions) for d in self.head.descriptors], dim=-1)

    def forward(self, positions):
        return self.head(self.descriptor_values(positions).to(self._dtype()))

    # --- OpenMM expression -----------------------------------------------------------------------------
    def openmm_expression(self, particles, prefix="cv"):
        """Compile the CV into CustomCVForce pieces.

        Parameters
        ----------
        particles : sequence of int
            System particle index of each CV input atom.
        prefix : str, default "cv"
            CV component ``k`` is defined as the variable ``{prefix}{k}``.

        Returns
        -------
        forces : dict of str -> openmm.Force
            Collective variables to add to a CustomCVForce: the descriptor values (Å or rad), or,
            when the network starts with a Linear layer narrower than the number of descriptors
            (per kind of descriptor), that layer's pre-activations, one force per unit and kind.
        definitions : list of str
            Expression definitions, the last ones defining ``{prefix}0`` ... (append to the
            energy expression after ``;``, in this order, reversed as OpenMM requires).

        Raises
        ------
        ValueError
            If the network holds a layer the compiler does not know, or the CV needs more than
            :data:`MAX_COLLECTIVE_VARIABLES` collective variables.
        """
        layers = [] if self.head.model is None else _flatten(self.head.model)
        n_descriptors = len(self.head.descriptors)
        n_kinds = len({d.linear_key for d in self.head.descriptors})
        if layers and isinstance(layers[0], nn.Linear) and layers[0].out_features * n_kinds < n_descriptors:
            forces, definitions, current = self._packed_first_layer(layers[0], particles, prefix)
            layers, first_depth = layers[1:], 2
        else:
            forces, definitions, current = self._descriptor_variables(particles, prefix)
            first_depth = 1
        if len(forces) > MAX_COLLECTIVE_VARIABLES:
            raise ValueError(
                f"the compiled CV needs {len(forces)} OpenMM collective variables, more than "
                f"{MAX_COLLECTIVE_VARIABLES} (a CustomCVForce holds at most 32, and eABF adds its λ); use fewer "
                f"descriptors or a first layer of at most {MAX_COLLECTIVE_VARIABLES // n_kinds} units, "
                f"or route='python'"
            )
        for depth, layer in enumerate(layers, start=first_depth):
            if isinstance(layer, nn.Linear):
                weight = layer.weight.detach().double().numpy()
                bias = np.zeros(weight.shape[0]) if layer.bias is None else layer.bias.detach().double().numpy()
                new = []
                for row in range(weight.shape[0]):
                    terms = [f"({float(w)!r})*{v}" for w, v in zip(weight[row], current, strict=True) if w != 0.0]
                    var = f"{prefix}_n{depth}_{row}"
                    definitions.append(f"{var}={'+'.join(terms + [repr(float(bias[row]))])}")
                    new.append(var)
                current = new
            elif type(layer) in ACTIVATIONS:
                template = ACTIVATIONS[type(layer)]
                if isinstance(layer, nn.Softplus) and (layer.beta != 1 or layer.threshold < 20):
                    raise ValueError("nn.Softplus compiles only with beta=1; use the python route")
                if isinstance(layer, nn.ELU) and layer.alpha != 1.0:
                    raise ValueError(f"nn.ELU(alpha={layer.alpha}) compiles only with alpha=1; use the python route")
                new = []
                for k, var in enumerate(current):
                    name = f"{prefix}_n{depth}_{k}"
                    definitions.append(f"{name}={template.format(var)}")
                    new.append(name)
                current = new
            else:
                valid = ["Linear"] + [t.__name__ for t in ACTIVATIONS]
                raise ValueError(
                    f"layer {layer!r} cannot be compiled into an OpenMM expression; "
                    f"the compiler knows {valid}. "
                    f"Use route='python' for this CV"
                )
        for k, var in enumerate(current):
            definitions.append(f"{prefix}{k}={var}")
        return forces, definitions

    def _descriptor_variables(self, particles, prefix):
        """One collective variable per descriptor, normalised features as definitions."""
        forces, features = {}, []
        for k, descriptor in enumerate(self.head.descriptors):
            name = f"{prefix}_d{k}"
            forces[name] = descriptor.openmm_force(particles)
            features.extend(descriptor.feature_expressions(name))
        mean, std = self.head.mean.tolist(), self.head.std.tolist()
        definitions, current = [], []
        for k, expr in enumerate(features):
            var = f"{prefix}_n0_{k}"
            definitions.append(f"{var}=({expr}-({mean[k]!r}))/{std[k]!r}")
            current.append(var)
        return forces, definitions, current

    def _packed_first_layer(self, linear, particles, prefix):
        """Normalisation and first Linear layer folded into one linear force per unit and descriptor kind.

        Unit j's pre-activation ``Σ_f W_jf (x_f - mean_f) / std_f + b_j`` is linear in the features,
        so one force per kind of descriptor (distances, torsions, positions) computes its sum over
        all descriptors of that kind: ``n_units × n_kinds`` collective variables instead of one per
        descriptor, which keeps wide inputs (e.g. all heavy-atom distances) within OpenMM's limit.
        """
        descriptors = list(self.head.descriptors)
        weight = linear.weight.detach().double().numpy() / self.head.std.double().numpy()
        bias = -weight @ self.head.mean.double().numpy()
        if linear.bias is not None:
            bias = bias + linear.bias.detach().double().numpy()
        offsets = np.cumsum([0] + [d.n_features for d in descriptors])
        groups = {}
        for k, descriptor in enumerate(descriptors):
            groups.setdefault(descriptor.linear_key, []).append(k)
        forces, definitions, current = {}, [], []
        for row in range(weight.shape[0]):
            names = []
            for g, members in enumerate(groups.values()):
                terms = [(descriptors[k], weight[row, offsets[k] : offsets[k + 1]]) for k in members]
                if not any(np.any(c != 0.0) for _, c in terms):
                    continue
                name = f"{prefix}_h{row}_{g}"
                forces[name] = type(descriptors[members[0]]).linear_force(terms, particles)
                names.append(name)
            var = f"{prefix}_n1_{row}"
            definitions.append(f"{var}={'+'.join(names + [repr(float(bias[row]))])}")
            current.append(var)
        return forces, definitions, current


def _descriptors_of(featurizer):
    """Descriptors equivalent to an mdcvkit.features featurizer (duck-typed on its buffers)."""
    kind = type(featurizer).__name__
    if hasattr(featurizer, "parts"):
        return [d for part in featurizer.parts for d in _descriptors_of(part)]
    if kind == "Dihedrals" and hasattr(featurizer, "quadruplets"):
        return [Torsion(*q, trig=True) for q in featurizer.quadruplets.tolist()]
    if kind == "FramePositions" and hasattr(featurizer, "frame"):
        return [FramePosition(atom, featurizer.frame, axis) for atom in featurizer.atoms for axis in range(3)]
    if kind == "PairwiseDistances" and hasattr(featurizer, "pairs") and not getattr(featurizer, "uses_box", False):
        return [Distance(*pair) for pair in featurizer.pairs.tolist()]
    raise ValueError(
        f"featurizer {kind} has no descriptor form (only Dihedrals, FramePositions and non-periodic PairwiseDistances, "
        f"alone or concatenated, do); bias this CV through route='python'"
    )


def _flatten(module):
    if isinstance(module, nn.Sequential):
        out = []
        for child in module:
            out.extend(_flatten(child))
        return out
    return [module]
