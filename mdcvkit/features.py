"""Featurizers: differentiable maps from atomic positions (Å) to input features.

Every featurizer is a :class:`torch.nn.Module` whose ``forward(positions, box=None)``
takes positions of shape ``(n_frames, n_atoms, 3)`` in Å and returns features of
shape ``(n_frames, n_features)``. They are written once, in torch, so that the
same module builds the training set, transforms new trajectories and, through
autograd, gives bias forces (the Kabsch alignment included).

``n_atoms`` counts the atoms of the AtomGroup the featurizer was built for;
index arguments (pairs, dihedral quadruplets) refer to positions in that
AtomGroup, not to global atom indices.

:class:`FeatureCollector` reads a trajectory through MDAnalysis in chunks and
fills the feature matrix, so memory is bounded by the features, never by all
positions at once; it supports MDAnalysis's ``serial``, ``multiprocessing`` and
``dask`` backends, and a ``dask.distributed`` cluster through
:class:`mdcvkit.frames.DaskClientBackend`.
"""

import operator
import os
import tempfile
import weakref
from pathlib import Path

import numpy as np
import openmm
import torch
from MDAnalysis.analysis.base import AnalysisBase, ResultsGroup
from MDAnalysis.exceptions import NoDataError
from MDAnalysis.lib.mdamath import triclinic_vectors
from torch import nn
from torch.autograd.function import once_differentiable

from .frames import DaskClientBackend

__all__ = [
    "Featurizer",
    "AlignedPositions",
    "FramePositions",
    "frame_coordinates",
    "Positions",
    "PairwiseDistances",
    "separated_pairs",
    "Dihedrals",
    "Concatenate",
    "FEATURIZERS",
    "make_featurizer",
    "backbone_dihedral_indices",
    "atom_names",
    "kabsch_align",
    "FeatureCollector",
    "release_features",
]


class Featurizer(nn.Module):
    """Base class: positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_features)``.

    Subclasses set ``n_atoms``, ``labels`` (one string per feature) and
    ``feature_atoms`` (for each feature, the tuple of atom positions within
    the AtomGroup it depends on), implement ``forward`` and ``get_config``.
    ``uses_box`` is True when the features depend on the periodic box.
    ``scale_groups`` gives, per feature, the group of features that share one
    normalisation scale (features in the same units: all coordinates of an
    aligned structure, all distances, all sin/cos), see
    :class:`mdcvkit.models.Normalization`.
    """

    uses_box = False

    @property
    def scale_groups(self):
        """Normalisation scale group of each feature, shape (n_features,); one group by default."""
        return np.zeros(self.n_features, dtype=np.int64)

    @property
    def n_features(self):
        """Number of features produced per frame."""
        return len(self.labels)

    def get_config(self):
        """Keyword arguments that rebuild this featurizer (buffers are restored from the state dict)."""
        raise NotImplementedError

    def to_openmm(self, particles):
        """The features as OpenMM forces, for the collective variables of a ``CustomCVForce``.

        Parameters
        ----------
        particles : sequence of int
            System particle index of each of the featurizer's ``n_atoms`` atoms.

        Returns
        -------
        list of (openmm.Force, list of str)
            One force per raw value (a distance or a coordinate in Å, a dihedral in rad), whose
            energy is that value, and the features it gives, in order, as OpenMM expressions of
            the value written ``{}`` (``"sin({})"``, ``"cos({})"`` for a dihedral).

        Raises
        ------
        ValueError
            If the features have no closed form in OpenMM (a least-squares fit); such CVs reach
            OpenMM through ``route="python"`` or ``"torch"``.
        """
        raise ValueError(
            f"{type(self).__name__} has no OpenMM expression form (only Dihedrals, PairwiseDistances, Positions, "
            f"FramePositions and their Concatenate have one); bias a CV on it through route='python' or 'torch'"
        )

    def to_numpy(self):
        """The features and their pull-back in NumPy, for per-step evaluation (the "python" route).

        Returns
        -------
        callable
            ``f(positions)`` with ``positions`` one frame ``(n_atoms, 3)`` in Å (float64) returns
            ``(features, pullback)``: the features ``(n_features,)`` as :meth:`forward` gives them,
            and a function taking gradients ``(n_rows, n_features)`` with respect to the features to
            gradients ``(n_rows, n_atoms, 3)`` (per Å) with respect to the positions.

        Raises
        ------
        ValueError
            If the featurizer has no NumPy form; the "python" route then evaluates it in torch.
        """
        raise ValueError(
            f"{type(self).__name__} has no NumPy form (AlignedPositions, Positions and their Concatenate have "
            f"one); it is evaluated through torch"
        )

    def to_openmm_linear(self, particles, weights):
        """Forces whose energies sum to ``Σ_f weights[f] · feature_f``: one first-layer unit of a network.

        Parameters
        ----------
        particles : sequence of int
            System particle index of each of the featurizer's atoms.
        weights : array_like, shape (n_features,)
            Coefficient of each feature (per feature unit); zero coefficients add nothing.

        Returns
        -------
        list of openmm.Force
            Empty when every coefficient is zero.

        Raises
        ------
        ValueError
            As :meth:`to_openmm`.
        """
        self.to_openmm(particles)  # raises for featurizers without an OpenMM form
        raise NotImplementedError(f"{type(self).__name__} gives its OpenMM form but no linear form")

    def to_plumed(self, label, particles):
        """The PLUMED actions that compute the inputs of the features (``UNITS LENGTH=A``).

        Parameters
        ----------
        label : str
            Prefix of the action labels.
        particles : sequence of int
            System (0-based) index of each of the featurizer's atoms; PLUMED numbers are these + 1.

        Returns
        -------
        lines : list of str
            PLUMED actions.
        arguments : list of str
            The values those actions give, in the order the model reads them.
        inputs : torch.nn.Module
            Maps the values ``(n_frames, len(arguments))`` (Å, rad) to the features
            ``(n_frames, n_features)``, in torch, so that the model PLUMED runs is this module
            followed by the network.
        """
        return _positions_to_plumed(self, label, particles)

    def check_positions(self, positions):
        """Raise TypeError unless ``positions`` is a tensor, ValueError unless of shape ``(n_frames, n_atoms, 3)``."""
        if torch.jit.is_tracing():
            return  # shapes are fixed by the example input of the trace
        if not isinstance(positions, torch.Tensor):
            raise TypeError(
                f"positions is a {type(positions).__name__}; {type(self).__name__} takes a torch.Tensor "
                "(n_frames, n_atoms, 3) in Å: convert with torch.as_tensor(positions, dtype=torch.float32), or "
                "evaluate arrays with cv.transform(atomgroup) or mdcvkit.biasing.evaluate_cv(cv, positions)"
            )
        if positions.ndim != 3 or positions.shape[1:] != (self.n_atoms, 3):
            raise ValueError(
                f"positions have shape {tuple(positions.shape)}, but {type(self).__name__} expects "
                f"(n_frames, {self.n_atoms}, 3); pass the positions of the atoms it was built for"
            )


def _namespace(array):
    """``torch`` for a tensor, ``numpy`` for an array: the Kabsch fit below runs on either, one code."""
    return torch if isinstance(array, torch.Tensor) else np


def _kabsch_centre(positions, reference, weights):
    """Normalised weights ``(1, n_atoms, 1)``, the centred reference and the centred frames."""
    w, ref = _kabsch_reference(reference, weights)
    return w, ref, _centred(positions, w)


def _kabsch_reference(reference, weights):
    """Normalised weights ``(1, n_atoms, 1)`` and the reference centred on its weighted centroid."""
    w = (weights / weights.sum())[None, :, None]
    return w, reference - (w[0] * reference).sum(0)


def _centred(positions, w):
    """Frames ``(n_frames, n_atoms, 3)`` minus their centroids under the normalised weights ``w``."""
    return positions - (w * positions).sum(1, keepdims=True)


def _kabsch_rotation(centred, ref, w):
    """Covariance ``M = Σ w x rᵀ`` (per frame) and the proper rotation ``Q`` with ``centred @ Q`` fitted to ``ref``."""
    xp = _namespace(centred)
    covariance = (w * centred).mT @ ref  # (n_frames, 3, 3)
    u, _, vt = xp.linalg.svd(covariance)
    # a reflection is never allowed: flip the axis of the smallest singular value
    flip = xp.ones_like(covariance[:, 0])
    flip[:, 2] = xp.sign(xp.linalg.det(u @ vt))
    return covariance, (u * flip[:, None, :]) @ vt


def _kabsch_backward(grad, aligned, ref, w, covariance, rotation):
    """Gradient on the positions of a Kabsch fit from the gradient ``grad`` on its fitted positions.

    ``grad`` has shape ``(n_frames, n_atoms, 3)``, or ``(n_rows, n_atoms, 3)`` for one frame: the rows
    of a Jacobian pulled back at once. See :class:`_KabschFit` for the closed form.
    """
    xp = _namespace(grad)
    a = rotation.mT @ covariance  # R M with R = Qᵀ: symmetric at the optimum
    k = -0.5 * (a + a.mT)
    trace = -(k[..., 0, 0] + k[..., 1, 1] + k[..., 2, 2])
    for axis in range(3):
        k[..., axis, axis] += trace
    m = aligned.mT @ grad  # Σ_j y_j G_jᵀ, whose axial vector is the torque Σ_j y_j × G_j
    torque = xp.stack([m[:, 1, 2] - m[:, 2, 1], m[:, 2, 0] - m[:, 0, 2], m[:, 0, 1] - m[:, 1, 0]], 1)
    v = xp.linalg.solve(k, torque[:, :, None])[:, :, 0]
    cross = xp.zeros_like(m)  # r × v = r @ cross for every reference position r
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    cross = cross - cross.mT
    back = (grad + w * (ref @ cross)) @ rotation.mT
    return back - w * back.sum(1, keepdims=True)


class _KabschFit(torch.autograd.Function):
    """Kabsch fit whose backward pass is the closed-form derivative of the optimal rotation.

    The fitted rotation ``R`` maximises ``tr(R M)`` over proper rotations, so ``A = R M`` is
    symmetric. A change ``δM`` turns ``R`` by the small angle vector
    ``δω = -2 K⁻¹ axial(R δM)`` with ``K = tr(A) I - A``. For an upstream gradient ``G_i`` on
    the fitted positions ``y_i`` this gives ``∂L/∂x_i = Rᵀ (G_i + w_i r_i × K⁻¹ Σ_j y_j × G_j)``,
    centred. Equal to differentiating through the SVD, in about a quarter of the time for one
    frame. Differentiable once: the backward pass is not itself differentiated.
    """

    @staticmethod
    def forward(ctx, positions, reference, weights):
        w, ref, centred = _kabsch_centre(positions, reference, weights)
        covariance, rotation = _kabsch_rotation(centred, ref, w)
        aligned = centred @ rotation
        ctx.save_for_backward(aligned, ref, w, covariance, rotation)
        return aligned

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return _kabsch_backward(grad, *ctx.saved_tensors), None, None


def kabsch_align(positions, reference, weights=None):
    """Rotate and translate each frame onto ``reference`` (differentiable Kabsch fit).

    Parameters
    ----------
    positions : torch.Tensor, shape (n_frames, n_atoms, 3)
        Coordinates in Å.
    reference : torch.Tensor, shape (n_atoms, 3)
        Reference structure in Å; it is centred internally.
    weights : torch.Tensor, shape (n_atoms,), optional
        Per-atom fitting weights (e.g. masses); uniform when None.

    Returns
    -------
    torch.Tensor, shape (n_frames, n_atoms, 3)
        Each frame centred on its (weighted) centroid and rotated to minimise
        the RMSD to the centred reference (proper rotations only).

    Notes
    -----
    The gradient with respect to ``positions`` is the closed form of the rotation's derivative
    (about 4 times faster than autograd through the SVD for one frame, forward and backward), and
    it can be taken once (no second derivatives). When the call is traced for TorchScript, or
    ``reference`` or ``weights`` require gradients, autograd goes through the SVD instead (same
    values, any order). Both are undefined where the two smallest singular values of the
    covariance are equal in magnitude (planar or degenerate fits).

    References
    ----------
    W. Kabsch, Acta Cryst. A 32, 922 (1976).
    """
    if weights is None:
        weights = torch.ones(positions.shape[1], dtype=positions.dtype, device=positions.device)
    weights = weights.to(positions.dtype)
    if not (torch.jit.is_tracing() or reference.requires_grad or weights.requires_grad):
        return _KabschFit.apply(positions, reference, weights)
    w, ref, centred = _kabsch_centre(positions, reference, weights)
    return centred @ _kabsch_rotation(centred, ref, w)[1]


class AlignedPositions(Featurizer):
    """Cartesian positions after a Kabsch fit to a reference structure, as in FEBILAE.

    Parameters
    ----------
    reference : array_like, shape (n_atoms, 3)
        Reference structure in Å (the first frame or the mean structure of
        the training data).
    weights : array_like, shape (n_atoms,), optional
        Per-atom fitting weights; uniform when None.
    names : sequence of str, optional
        Atom names, used in the feature labels.
    atoms : sequence of int, optional
        Indices of the atoms whose aligned coordinates are the features (``3 len(atoms)`` of them);
        default all. The fit still uses every atom with its weight, so atoms can steady or orient
        the fit without being inputs of the model.

    Notes
    -----
    The fit is a proper rotation. Where the best one is not unique (the two smallest singular
    values of the fit's covariance coincide while a reflection would fit better, as happens far
    from the reference in near mirror images of it), the aligned positions jump and their
    gradient is unbounded. A bias that pushes a simulation there makes it blow up. On vacuum
    alanine dipeptide, both FEBILAE loops run on the 8 backbone atoms (which have no chirality
    without Cβ) blew up within 15 ns, at the largest values of their CV, with 4 fs steps (one of
    them again with 2 fs). Fitting on backbone and Cβ (``atoms`` keeps Cβ out of the features)
    makes this rarer but does not rule it out: with Cβ one atom of nine, the best proper fit of
    C7ax frames still needs the reflected axis (98 % of them in one 15 ns eABF run), and one seed
    of three blew up twice, in 15 ns iterations with κ 100 and κ 60 (4 fs steps). Replayed to the
    blow-up, its last frames sat near φ = ±180°, ψ = −110°, the fit needed the reflected axis, the
    gap between the two smallest singular values had fallen to 0.2 Å² (median 1.3 Å² in C7eq), and
    the largest atomic gradient of the CV was 40-60 nm⁻¹, 3-4 times its largest on the frames it
    was trained on. Body-frame coordinates (:class:`FramePositions`) avoid the fit and are defined
    wherever the three frame atoms are not collinear.

    References
    ----------
    Z. Belkacemi, P. Gkeka, T. Lelièvre, G. Stoltz, J. Chem. Theory Comput. 18, 59 (2022).
    """

    def __init__(self, reference, weights=None, names=None, atoms=None):
        super().__init__()
        reference = torch.as_tensor(np.asarray(reference, dtype=np.float32))
        if reference.ndim != 2 or reference.shape[1] != 3 or reference.shape[0] < 3:
            raise ValueError(
                f"reference has shape {tuple(reference.shape)}; an aligned featurizer needs (n_atoms, 3) "
                "with at least 3 atoms (a fit of fewer atoms is not unique): select more atoms or use "
                "features='positions'"
            )
        self.n_atoms = reference.shape[0]
        fit = torch.ones(self.n_atoms) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.register_buffer("reference", reference)
        self.register_buffer("weights", fit)
        self.names = list(names) if names is not None else [str(i) for i in range(self.n_atoms)]
        self.atoms = list(range(self.n_atoms)) if atoms is None else _atom_subset(atoms, self.n_atoms)
        self._selects = self.atoms != list(range(self.n_atoms))  # a subset or another order of the fitted atoms
        self.labels = [f"{self.names[k]}:{ax}" for k in self.atoms for ax in "xyz"]
        self.feature_atoms = [(k,) for k in self.atoms for _ in range(3)]

    def get_config(self):
        config = {"reference": self.reference.tolist(), "weights": self.weights.tolist(), "names": self.names}
        if self._selects:
            config["atoms"] = self.atoms
        return config

    def forward(self, positions, box=None):
        self.check_positions(positions)
        aligned = kabsch_align(positions, self.reference.to(positions.dtype), self.weights)
        if self._selects:
            aligned = aligned[:, self.atoms]
        return aligned.flatten(1)

    def to_numpy(self):
        atoms = self.atoms
        w, ref = _kabsch_reference(self.reference.double().numpy(), self.weights.double().numpy())

        def features(positions):
            centred = _centred(positions[None], w)
            covariance, rotation = _kabsch_rotation(centred, ref, w)
            aligned = centred @ rotation

            def pullback(grad):
                full = np.zeros((len(grad), self.n_atoms, 3))
                full[:, atoms] = grad.reshape(len(grad), len(atoms), 3)
                return _kabsch_backward(full, aligned, ref, w, covariance, rotation)

            return aligned[0, atoms].ravel(), pullback

        return features


def _atom_subset(atoms, n_atoms):
    """``atoms`` as a non-empty list of distinct indices in ``[0, n_atoms)``, or a ValueError."""
    try:
        subset = [operator.index(k) for k in atoms]
    except TypeError:  # not iterable, or not integers
        subset = None
    if not subset or len(set(subset)) != len(subset) or not all(0 <= k < n_atoms for k in subset):
        raise ValueError(
            f"atoms={atoms!r} must be distinct atom indices in [0, {n_atoms}) of the fitted atoms, e.g. "
            f"[0, 1, 2] for the first three"
        )
    return subset


def frame_coordinates(positions, frame, atoms):
    """Coordinates of ``atoms`` in the body frame of three atoms (rotation- and translation-free).

    The frame of atoms ``(o, a, b)`` has its origin on ``o``, its x axis towards ``a``, its y axis
    in the plane of ``o``, ``a`` and ``b`` (towards ``b``), and z = x × y, so that mirror images
    (e.g. the C7eq and C7ax conformers of alanine dipeptide) get coordinates of opposite sign.

    Parameters
    ----------
    positions : torch.Tensor, shape (n_frames, n_atoms, 3)
        Coordinates in Å.
    frame : sequence of 3 int
        Indices ``(o, a, b)`` of the frame atoms in ``positions``; they must not be collinear.
    atoms : sequence of int
        Indices of the atoms whose coordinates are returned.

    Returns
    -------
    torch.Tensor, shape (n_frames, len(atoms), 3)
        Coordinates in Å along the frame axes.
    """
    o, a, b = (positions[:, k] for k in frame)
    e1 = a - o
    e1 = e1 / torch.linalg.vector_norm(e1, dim=-1, keepdim=True)
    v = b - o
    e2 = v - (v * e1).sum(-1, keepdim=True) * e1
    e2 = e2 / torch.linalg.vector_norm(e2, dim=-1, keepdim=True)
    e3 = torch.linalg.cross(e1, e2)
    axes = torch.stack([e1, e2, e3], dim=-1)  # (n_frames, 3, 3), columns are the axes
    return (positions[:, list(atoms)] - o[:, None]) @ axes


class FramePositions(Featurizer):
    """Cartesian positions in the body frame of three atoms: aligned coordinates that compile.

    Like :class:`AlignedPositions` the features do not change under rigid motions and do change
    under reflection, but the frame is fixed by three atoms instead of a least-squares fit, so a
    CV built on them has a closed form that OpenMM evaluates without Python
    (:meth:`FramePositions.to_openmm`). Choose frame atoms that stay rigid
    relative to each other, e.g. N, CA and C of one residue.

    Parameters
    ----------
    n_atoms : int
        Number of atoms of the AtomGroup.
    frame : sequence of 3 int
        Indices ``(o, a, b)`` of the origin, x-axis and xy-plane atoms (see :func:`frame_coordinates`).
    names : sequence of str, optional
        Atom names, used in the feature labels.

    Notes
    -----
    The frame atoms themselves are left out of the features (their frame coordinates are bond
    lengths and an angle): ``3 (n_atoms - 3)`` features.
    """

    def __init__(self, n_atoms, frame, names=None):
        super().__init__()
        self.n_atoms = int(n_atoms)
        frame = tuple(int(k) for k in frame)
        if len(frame) != 3 or len(set(frame)) != 3 or not all(0 <= k < self.n_atoms for k in frame):
            raise ValueError(
                f"frame={frame!r} must be 3 distinct atom indices in [0, {self.n_atoms}), e.g. the N, CA "
                "and C of one residue"
            )
        if self.n_atoms < 4:
            raise ValueError(f"n_atoms={self.n_atoms}: FramePositions needs at least one atom besides the frame")
        self.frame = frame
        self.atoms = [k for k in range(self.n_atoms) if k not in frame]
        self.names = list(names) if names is not None else [str(i) for i in range(self.n_atoms)]
        self.labels = [f"{self.names[k]}:{ax}" for k in self.atoms for ax in "xyz"]
        self.feature_atoms = [(k, *frame) for k in self.atoms for _ in range(3)]

    def get_config(self):
        return {"n_atoms": self.n_atoms, "frame": list(self.frame), "names": self.names}

    def forward(self, positions, box=None):
        self.check_positions(positions)
        return frame_coordinates(positions, self.frame, self.atoms).flatten(1)

    def _bonds(self, particles):
        particles = _system_atoms(particles, self.n_atoms)
        frame = [particles[k] for k in self.frame]
        return [[*frame, particles[k]] for k in self.atoms]

    def to_openmm(self, particles):
        forms = []
        for bond in self._bonds(particles):
            for axis in "XYZ":
                force = openmm.CustomCompoundBondForce(4, f"{axis}; {_FRAME_DEFINITIONS}")
                force.addBond(bond, [])
                forms.append((force, ["{}"]))
        return forms

    def to_openmm_linear(self, particles, weights):
        weights = np.asarray(weights, dtype=float).reshape(len(self.atoms), 3)
        force = openmm.CustomCompoundBondForce(4, f"cx*X+cy*Y+cz*Z; {_FRAME_DEFINITIONS}")
        for name in ("cx", "cy", "cz"):
            force.addPerBondParameter(name)
        for bond, row in zip(self._bonds(particles), weights, strict=True):
            if np.any(row != 0.0):
                force.addBond(bond, [float(w) for w in row])
        return [force] if force.getNumBonds() else []


class Positions(Featurizer):
    """Raw Cartesian positions (no fit): for toy systems, restrained or pre-aligned data.

    Parameters
    ----------
    n_atoms : int
        Number of atoms.
    names : sequence of str, optional
        Atom names, used in the feature labels.
    axes : sequence of int, default (0, 1, 2)
        Which coordinates of each atom are features (0, 1, 2 for x, y, z), e.g. ``(0,)`` for the
        x coordinate of a particle on a toy surface.
    """

    def __init__(self, n_atoms, names=None, axes=(0, 1, 2)):
        super().__init__()
        self.n_atoms = int(n_atoms)
        axes = list(axes) if np.iterable(axes) else [axes]
        if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
            raise ValueError(f"axes={axes!r} must be distinct coordinates among 0, 1, 2 (x, y, z), e.g. (0,)")
        self.axes = [int(a) for a in axes]
        self.names = list(names) if names is not None else [str(i) for i in range(self.n_atoms)]
        self.labels = [f"{n}:{'xyz'[a]}" for n in self.names for a in self.axes]
        self.feature_atoms = [(i,) for i in range(self.n_atoms) for _ in self.axes]

    def get_config(self):
        return {"n_atoms": self.n_atoms, "names": self.names, "axes": self.axes}

    def forward(self, positions, box=None):
        self.check_positions(positions)
        return positions[:, :, self.axes].flatten(1)

    def to_numpy(self):
        def features(positions):
            def pullback(grad):
                full = np.zeros((len(grad), self.n_atoms, 3))
                full[:, :, self.axes] = grad.reshape(len(grad), self.n_atoms, len(self.axes))
                return full

            return positions[:, self.axes].ravel(), pullback

        return features

    def to_openmm(self, particles):
        particles = _system_atoms(particles, self.n_atoms)
        forms = []
        for p in particles:
            for a in self.axes:
                force = openmm.CustomExternalForce(f"10*{'xyz'[a]}")  # nm -> Å
                force.addParticle(p, [])
                forms.append((force, ["{}"]))
        return forms

    def to_openmm_linear(self, particles, weights):
        particles = _system_atoms(particles, self.n_atoms)
        weights = np.asarray(weights, dtype=float).reshape(self.n_atoms, len(self.axes))
        force = openmm.CustomExternalForce("10*(cx*x+cy*y+cz*z)")
        for name in ("cx", "cy", "cz"):
            force.addPerParticleParameter(name)
        for p, row in zip(particles, weights, strict=True):
            if np.any(row != 0.0):
                per_axis = [0.0, 0.0, 0.0]
                for a, w in zip(self.axes, row, strict=True):
                    per_axis[a] = float(w)
                force.addParticle(p, per_axis)
        return [force] if force.getNumParticles() else []


def _minimum_image(delta, box):
    """Minimum-image difference vectors for boxes given as row vectors (n_frames, 3, 3).

    Orthorhombic boxes are wrapped exactly in fractional coordinates. For
    triclinic boxes the wrapped vector is compared with its 26 neighbouring
    images and the shortest is kept, which is exact for any box that
    MDAnalysis accepts.
    """
    inverse = torch.linalg.inv(box)
    fractional = delta @ inverse
    wrapped = (fractional - torch.round(fractional)) @ box
    off_diagonal = box - torch.diag_embed(torch.diagonal(box, dim1=1, dim2=2))
    if not bool(off_diagonal.abs().max() > 0):
        return wrapped
    shifts = torch.stack(
        torch.meshgrid(*(torch.arange(-1, 2, dtype=delta.dtype, device=delta.device),) * 3, indexing="ij"), -1
    ).reshape(-1, 3)
    images = wrapped[:, :, None, :] + (shifts @ box)[:, None, :, :]  # (f, p, 27, 3)
    best = (images**2).sum(-1).argmin(-1)
    return torch.gather(images, 2, best[:, :, None, None].expand(-1, -1, 1, 3))[:, :, 0]


class PairwiseDistances(Featurizer):
    """Distances between pairs of atoms in Å, minimum image when a box is given.

    Parameters
    ----------
    n_atoms : int
        Number of atoms of the AtomGroup.
    pairs : array_like of int, shape (n_pairs, 2), optional
        Positions within the AtomGroup; all pairs ``i < j`` when None.
    periodic : bool, default False
        Apply the minimum-image convention with the box passed to ``forward``
        (orthorhombic or triclinic, row vectors in Å).
    names : sequence of str, optional
        Atom names, used in the feature labels.
    """

    def __init__(self, n_atoms, pairs=None, periodic=False, names=None):
        super().__init__()
        self.n_atoms = int(n_atoms)
        if pairs is None:
            pairs = np.stack(np.triu_indices(self.n_atoms, k=1), axis=1)
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if len(pairs) == 0 or pairs.min() < 0 or pairs.max() >= self.n_atoms:
            raise ValueError(
                f"pairs must index atoms 0..{self.n_atoms - 1} of the AtomGroup and hold at least one "
                f"pair (got {len(pairs)} pairs); select at least two atoms"
            )
        self.register_buffer("pairs", torch.as_tensor(pairs))
        self.uses_box = bool(periodic)
        self.names = list(names) if names is not None else [str(i) for i in range(self.n_atoms)]
        self.labels = [f"d({self.names[i]},{self.names[j]})" for i, j in pairs]
        self.feature_atoms = [(int(i), int(j)) for i, j in pairs]

    def get_config(self):
        return {"n_atoms": self.n_atoms, "pairs": self.pairs.tolist(), "periodic": self.uses_box, "names": self.names}

    def forward(self, positions, box=None):
        self.check_positions(positions)
        delta = positions[:, self.pairs[:, 1]] - positions[:, self.pairs[:, 0]]
        if self.uses_box and box is not None:
            delta = _minimum_image(delta, box.to(positions.dtype))
        return torch.sqrt((delta**2).sum(-1))

    def _bond_force(self, expression):
        force = openmm.CustomBondForce(expression)
        force.setUsesPeriodicBoundaryConditions(self.uses_box)
        return force

    def to_openmm(self, particles):
        particles = _system_atoms(particles, self.n_atoms)
        forms = []
        for i, j in self.pairs.tolist():
            force = self._bond_force("10*r")  # nm -> Å
            force.addBond(particles[i], particles[j], [])
            forms.append((force, ["{}"]))
        return forms

    def to_openmm_linear(self, particles, weights):
        particles = _system_atoms(particles, self.n_atoms)
        force = self._bond_force("c*10*r")
        force.addPerBondParameter("c")
        for (i, j), w in zip(self.pairs.tolist(), np.asarray(weights, dtype=float), strict=True):
            if w != 0.0:
                force.addBond(particles[i], particles[j], [float(w)])
        return [force] if force.getNumBonds() else []

    def to_plumed(self, label, particles):
        particles = _system_atoms(particles, self.n_atoms)
        pbc = "" if self.uses_box else " NOPBC"
        lines, arguments = [], []
        for k, (i, j) in enumerate(self.pairs.tolist()):
            lines.append(f"{label}{k}: DISTANCE ATOMS={particles[i] + 1},{particles[j] + 1}{pbc}")
            arguments.append(f"{label}{k}")
        return lines, arguments, nn.Identity()


def dihedral_angles(positions, quadruplets):
    """Dihedral angles (radians, in (-π, π]) of atom quadruplets, IUPAC sign convention.

    Parameters
    ----------
    positions : torch.Tensor, shape (n_frames, n_atoms, 3)
    quadruplets : torch.Tensor of int, shape (n_dihedrals, 4)

    Returns
    -------
    torch.Tensor, shape (n_frames, n_dihedrals)
    """
    p0, p1, p2, p3 = (positions[:, quadruplets[:, k]] for k in range(4))
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1 = torch.cross(b0, b1, dim=-1)
    n2 = torch.cross(b1, b2, dim=-1)
    m1 = torch.cross(n1, b1 / torch.linalg.norm(b1, dim=-1, keepdim=True), dim=-1)
    return -torch.atan2((m1 * n2).sum(-1), (n1 * n2).sum(-1))


class Dihedrals(Featurizer):
    """Dihedral angles as (sin, cos) pairs, e.g. the backbone φ/ψ.

    Parameters
    ----------
    n_atoms : int
        Number of atoms of the AtomGroup.
    quadruplets : array_like of int, shape (n_dihedrals, 4)
        Positions within the AtomGroup of the four atoms of each dihedral.
    dihedral_names : sequence of str, optional
        One name per dihedral (e.g. ``"phi2"``), used in the feature labels.
    trig : bool, default True
        Give ``sin θ, cos θ`` (continuous across ±π: network inputs); False gives the angles
        themselves in rad, in (-π, π] (a CV such as φ to bias along a periodic grid).

    Notes
    -----
    With ``trig=True`` features are ordered ``sin θ₀, cos θ₀, sin θ₁, cos θ₁, …``; the angle of
    each dihedral is recovered as ``atan2(sin, cos)``.
    """

    def __init__(self, n_atoms, quadruplets, dihedral_names=None, trig=True):
        super().__init__()
        self.n_atoms = int(n_atoms)
        quadruplets = np.asarray(quadruplets, dtype=np.int64).reshape(-1, 4)
        if len(quadruplets) == 0 or quadruplets.min() < 0 or quadruplets.max() >= self.n_atoms:
            raise ValueError(
                f"quadruplets must index atoms 0..{self.n_atoms - 1} of the AtomGroup and hold at least "
                f"one dihedral (got {len(quadruplets)}); include the backbone atoms N, CA, C in the selection"
            )
        self.register_buffer("quadruplets", torch.as_tensor(quadruplets))
        if dihedral_names is None:
            dihedral_names = [f"dihedral{k}" for k in range(len(quadruplets))]
        self.dihedral_names = list(dihedral_names)
        self.trig = bool(trig)
        functions = ("sin", "cos") if self.trig else ("",)
        self.labels = [f"{f}({n})" if f else n for n in self.dihedral_names for f in functions]
        self.feature_atoms = [tuple(int(i) for i in q) for q in quadruplets for _ in functions]

    def get_config(self):
        return {
            "n_atoms": self.n_atoms,
            "quadruplets": self.quadruplets.tolist(),
            "dihedral_names": self.dihedral_names,
            "trig": self.trig,
        }

    def forward(self, positions, box=None):
        self.check_positions(positions)
        angles = dihedral_angles(positions, self.quadruplets)
        return _SinCos()(angles) if self.trig else angles

    def to_openmm(self, particles):
        particles = _system_atoms(particles, self.n_atoms)
        forms = []
        for quadruplet in self.quadruplets.tolist():
            force = openmm.CustomTorsionForce("theta")  # OpenMM's theta has the IUPAC sign, as here
            force.addTorsion(*(particles[k] for k in quadruplet), [])
            forms.append((force, ["sin({})", "cos({})"] if self.trig else ["{}"]))
        return forms

    def to_openmm_linear(self, particles, weights):
        particles = _system_atoms(particles, self.n_atoms)
        force = openmm.CustomTorsionForce("s*sin(theta)+c*cos(theta)" if self.trig else "s*theta")
        for name in ("s", "c") if self.trig else ("s",):
            force.addPerTorsionParameter(name)
        weights = np.asarray(weights, dtype=float).reshape(-1, 2 if self.trig else 1)
        for quadruplet, row in zip(self.quadruplets.tolist(), weights, strict=True):
            if np.any(row != 0.0):
                force.addTorsion(*(particles[k] for k in quadruplet), [float(w) for w in row])
        return [force] if force.getNumTorsions() else []

    def to_plumed(self, label, particles):
        particles = _system_atoms(particles, self.n_atoms)
        lines, arguments = [], []
        for k, quadruplet in enumerate(self.quadruplets.tolist()):
            lines.append(f"{label}{k}: TORSION ATOMS={','.join(str(particles[a] + 1) for a in quadruplet)}")
            arguments.append(f"{label}{k}")
        return lines, arguments, _SinCos() if self.trig else nn.Identity()


class Concatenate(Featurizer):
    """Concatenation of several featurizers over the same atoms.

    Parameters
    ----------
    featurizers : sequence of Featurizer
        Each built for the same AtomGroup.
    """

    def __init__(self, featurizers):
        super().__init__()
        featurizers = list(featurizers)
        if not featurizers or len({f.n_atoms for f in featurizers}) != 1:
            raise ValueError(
                "featurizers must be a non-empty list of featurizers built for the same atoms "
                f"(got n_atoms {[f.n_atoms for f in featurizers]})"
            )
        self.parts = nn.ModuleList(featurizers)
        self.n_atoms = featurizers[0].n_atoms
        self.uses_box = any(f.uses_box for f in featurizers)
        self.labels = [label for f in featurizers for label in f.labels]
        self.feature_atoms = [atoms for f in featurizers for atoms in f.feature_atoms]

    @property
    def scale_groups(self):
        """Scale groups of the parts, numbered so that no two parts share a group."""
        groups, offset = [], 0
        for part in self.parts:
            groups.append(part.scale_groups + offset)
            offset = int(groups[-1].max()) + 1
        return np.concatenate(groups)

    def get_config(self):
        return {"featurizers": [featurizer_config(f) for f in self.parts]}

    def forward(self, positions, box=None):
        return torch.cat([f(positions, box) for f in self.parts], dim=1)

    def to_numpy(self):
        parts = [part.to_numpy() for part in self.parts]
        ends = np.cumsum([part.n_features for part in self.parts])[:-1]

        def features(positions):
            values, pullbacks = zip(*(part(positions) for part in parts), strict=True)

            def pullback(grad):
                return sum(back(g) for back, g in zip(pullbacks, np.split(grad, ends, axis=1), strict=True))

            return np.concatenate(values), pullback

        return features

    def to_openmm(self, particles):
        return [form for part in self.parts for form in part.to_openmm(particles)]

    def to_openmm_linear(self, particles, weights):
        weights = np.asarray(weights, dtype=float)
        offsets = np.cumsum([0] + [part.n_features for part in self.parts])
        return [
            force
            for k, part in enumerate(self.parts)
            for force in part.to_openmm_linear(particles, weights[offsets[k] : offsets[k + 1]])
        ]

    def to_plumed(self, label, particles):
        lines, arguments, inputs = [], [], []
        for k, part in enumerate(self.parts):
            part_lines, part_arguments, part_inputs = part.to_plumed(f"{label}p{k}_", particles)
            lines += part_lines
            arguments += part_arguments
            inputs.append((len(part_arguments), part_inputs))
        return lines, arguments, _ConcatenatedInputs(inputs)


def _system_atoms(particles, n_atoms):
    """System index (int) of each of a featurizer's ``n_atoms`` atoms, or a ValueError."""
    particles = np.asarray(particles, dtype=np.int64).reshape(-1)
    if particles.size != n_atoms or (particles.size and particles.min() < 0):
        raise ValueError(
            f"particles has {particles.size} entries (min {particles.min() if particles.size else None}) but the "
            f"featurizer reads n_atoms={n_atoms} atoms; pass one non-negative system index per featurizer atom"
        )
    return particles.tolist()


#: OpenMM definitions of the body-frame coordinates X, Y, Z (Å) of particle p4 in the frame of p1, p2, p3 (nm),
#: as in :func:`frame_coordinates`. With u = r2 - r1, v = r3 - r1, d = r4 - r1 and n = u × v: X = d·u/|u|,
#: Y = d·(n × u)/(|n||u|) with n × u = v (u·u) - u (u·v), Z = d·n/|n|, and |n|² = (u·u)(v·v) - (u·v)²: dot
#: products only, which OpenMM differentiates quickly (normalised axes nested in cross products took seconds).
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


class _SinCos(nn.Module):
    """Dihedral angles ``(n, n_dihedrals)`` in rad -> ``sin θ₀, cos θ₀, sin θ₁, …`` as :class:`Dihedrals`."""

    def forward(self, angles):
        return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1)


class _PositionsInput(nn.Module):
    """PLUMED's ``POSITION`` components ``(n, 3 n_atoms)`` in Å -> the featurizer's features."""

    def __init__(self, featurizer):
        super().__init__()
        self.featurizer = featurizer

    def forward(self, values):
        return self.featurizer(values.reshape(values.shape[0], -1, 3))


class _ConcatenatedInputs(nn.Module):
    """Each part's inputs applied to its columns of the PLUMED values, concatenated."""

    def __init__(self, parts):
        super().__init__()
        self.widths = [width for width, _ in parts]
        self.parts = nn.ModuleList([module for _, module in parts])

    def forward(self, values):
        chunks = torch.split(values, self.widths, dim=1)
        return torch.cat([module(chunk) for module, chunk in zip(self.parts, chunks, strict=True)], dim=1)


def _positions_to_plumed(featurizer, label, particles):
    """``POSITION`` of every atom (Å, no periodic wrapping); the model computes the features itself."""
    particles = _system_atoms(particles, featurizer.n_atoms)
    lines = [f"{label}{k}: POSITION ATOM={p + 1} NOPBC" for k, p in enumerate(particles)]
    arguments = [f"{label}{k}.{axis}" for k in range(len(particles)) for axis in "xyz"]
    return lines, arguments, _PositionsInput(featurizer)


def featurizer_config(featurizer):
    """Serialisable description ``{"class": name, "kwargs": ...}`` of a featurizer."""
    return {"class": type(featurizer).__name__, "kwargs": featurizer.get_config()}


def featurizer_from_config(config):
    """Rebuild a featurizer from :func:`featurizer_config` output."""
    classes = {
        c.__name__: c for c in (AlignedPositions, FramePositions, Positions, PairwiseDistances, Dihedrals, Concatenate)
    }
    kwargs = dict(config["kwargs"])
    if config["class"] == "Concatenate":
        kwargs["featurizers"] = [featurizer_from_config(c) for c in kwargs["featurizers"]]
    return classes[config["class"]](**kwargs)


def backbone_dihedral_indices(atomgroup):
    """Backbone φ and ψ quadruplets that lie entirely inside ``atomgroup``.

    Parameters
    ----------
    atomgroup : MDAnalysis.core.groups.AtomGroup

    Returns
    -------
    quadruplets : numpy.ndarray of int, shape (n_dihedrals, 4)
        Positions within ``atomgroup``.
    names : list of str
        ``"phi<resid>"`` / ``"psi<resid>"`` for each quadruplet.
    """
    position = {index: k for k, index in enumerate(atomgroup.indices)}
    quadruplets, names = [], []
    for residue in atomgroup.residues:
        for kind, select in (("phi", residue.phi_selection), ("psi", residue.psi_selection)):
            selection = select()
            if selection is None or not all(i in position for i in selection.indices):
                continue
            quadruplets.append([position[i] for i in selection.indices])
            names.append(f"{kind}{residue.resid}")
    return np.asarray(quadruplets, dtype=np.int64).reshape(-1, 4), names


def separated_pairs(atomgroup, min_bonds=3):
    """Pairs of atoms of ``atomgroup`` at least ``min_bonds`` bonds apart, for :class:`PairwiseDistances`.

    Distances between bonded atoms (1–2) and across one angle (1–3) hardly
    change; leaving them out keeps the distances that conformations change,
    e.g. 1–4 pairs across a torsion. Separations are counted along the bond
    graph of the whole Universe, so paths may pass through atoms outside the
    group; atoms in different molecules are infinitely far apart.

    Parameters
    ----------
    atomgroup : AtomGroup
        Atoms whose pairs are returned; its Universe must have bonds.
    min_bonds : int, default 3
        Smallest number of bonds between the two atoms of a pair (3: 1–4 pairs and beyond).

    Returns
    -------
    numpy.ndarray of int, shape (n_pairs, 2)
        Positions ``i < j`` within ``atomgroup``.

    Examples
    --------
    >>> heavy = u.select_atoms("not name H*")                                  # doctest: +SKIP
    >>> featurizer = PairwiseDistances(heavy.n_atoms, separated_pairs(heavy))  # doctest: +SKIP
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path

    if not isinstance(min_bonds, (int, np.integer)) or isinstance(min_bonds, bool) or min_bonds < 1:
        raise ValueError(f"min_bonds={min_bonds!r} must be a positive integer, e.g. 3")
    universe = atomgroup.universe
    try:
        bonds = universe.bonds.indices
    except (AttributeError, NoDataError) as err:
        raise ValueError(
            "the Universe of atomgroup has no bonds; load a topology with bonds or call u.atoms.guess_bonds()"
        ) from err
    n = universe.atoms.n_atoms
    graph = coo_matrix((np.ones(len(bonds)), (bonds[:, 0], bonds[:, 1])), shape=(n, n))
    hops = shortest_path(graph, directed=False, unweighted=True, indices=atomgroup.indices)[:, atomgroup.indices]
    i, j = np.triu_indices(atomgroup.n_atoms, k=1)
    keep = hops[i, j] >= min_bonds
    return np.stack([i[keep], j[keep]], axis=1)


def atom_names(atomgroup):
    """Atom names of ``atomgroup``, or their indices as strings when the topology has no names."""
    try:
        return [str(name) for name in atomgroup.names]
    except NoDataError:
        return [str(index) for index in atomgroup.indices]


def _aligned(atomgroup, reference, periodic):
    return AlignedPositions(reference, names=atom_names(atomgroup))


def _positions(atomgroup, reference, periodic):
    return Positions(atomgroup.n_atoms, names=atom_names(atomgroup))


def _distances(atomgroup, reference, periodic):
    if atomgroup.n_atoms < 2:
        raise ValueError(
            f"features='distances' needs at least 2 atoms, but the AtomGroup has {atomgroup.n_atoms}; select more atoms"
        )
    return PairwiseDistances(atomgroup.n_atoms, periodic=periodic, names=atom_names(atomgroup))


def _dihedrals(atomgroup, reference, periodic):
    quadruplets, names = backbone_dihedral_indices(atomgroup)
    if len(quadruplets) == 0:
        raise ValueError(
            f"features='dihedrals' found no backbone phi/psi dihedral whose four atoms are all in the "
            f"AtomGroup of {atomgroup.n_atoms} atoms (names {sorted(set(atom_names(atomgroup)))[:8]}...); select "
            "the backbone atoms N, CA, C of consecutive residues, e.g. 'backbone' or 'not name H*'"
        )
    return Dihedrals(atomgroup.n_atoms, quadruplets, names)


def _frame(atomgroup, reference, periodic):
    residues = []
    for residue in atomgroup.residues:
        found = [np.flatnonzero((atomgroup.resindices == residue.resindex) & (atomgroup.names == name))
                 for name in ("CA", "N", "C")]  # fmt: skip
        if all(len(k) == 1 for k in found):
            residues.append([int(k[0]) for k in found])
    if not residues or atomgroup.n_atoms < 4:
        raise ValueError(
            f"features='frame' needs the N, CA and C of one residue in the AtomGroup of {atomgroup.n_atoms} "
            "atoms, plus at least one other atom; select the backbone, or build "
            "FramePositions(n_atoms, frame=(origin, x_atom, plane_atom)) with atoms of your choice"
        )
    return FramePositions(atomgroup.n_atoms, residues[len(residues) // 2], names=atom_names(atomgroup))


#: Featurizer builders by name: ``builder(atomgroup, reference_positions, periodic) -> Featurizer``.
FEATURIZERS = {
    "aligned": _aligned,
    "frame": _frame,
    "positions": _positions,
    "distances": _distances,
    "dihedrals": _dihedrals,
}


def make_featurizer(features, atomgroup, reference=None, periodic=False):
    """Build a featurizer from a name, a list of names, or return a given featurizer.

    Parameters
    ----------
    features : str, list of str, or Featurizer
        One of ``FEATURIZERS`` (``"aligned"``, ``"frame"`` (body frame of N, CA, C of the middle
        residue), ``"positions"``, ``"distances"``, ``"dihedrals"``), a list of them
        (concatenated), or a ready featurizer.
    atomgroup : MDAnalysis.core.groups.AtomGroup
        The atoms the features are computed from.
    reference : array_like, shape (n_atoms, 3), optional
        Reference structure in Å for ``"aligned"``; default: current positions.
    periodic : bool, default False
        Whether distances use the minimum-image convention.

    Returns
    -------
    Featurizer
    """
    if isinstance(features, Featurizer):
        if features.n_atoms != atomgroup.n_atoms:
            raise ValueError(
                f"the featurizer was built for {features.n_atoms} atoms but the AtomGroup has "
                f"{atomgroup.n_atoms}; build it for the same selection"
            )
        return features
    names = [features] if isinstance(features, str) else list(features)
    unknown = [n for n in names if n not in FEATURIZERS]
    if not names or unknown:
        raise ValueError(
            f"features={features!r} is not known; use one of {sorted(FEATURIZERS)}, a list of them, "
            "or a Featurizer instance"
        )
    if reference is None:
        reference = atomgroup.positions
    parts = [FEATURIZERS[n](atomgroup, reference, periodic) for n in names]
    return parts[0] if len(parts) == 1 else Concatenate(parts)


def _box_matrices(dimensions):
    """Row-vector box matrices (n, 3, 3) in Å from MDAnalysis dimensions (n, 6)."""
    return np.stack([triclinic_vectors(d) for d in dimensions]).astype(np.float32)


class FeatureCollector(AnalysisBase):
    """Compute the features of every analysed frame, reading positions in chunks.

    Positions are buffered ``chunk_size`` frames at a time and passed through
    the featurizer in one batched call, so memory holds the feature matrix and
    one chunk of positions, never the whole trajectory.

    Parameters
    ----------
    atomgroup : MDAnalysis.core.groups.AtomGroup
        Atoms the featurizer acts on.
    featurizer : Featurizer
        Built for ``atomgroup``.
    chunk_size : int, default 1000
        Frames per batched featurizer call.
    memory_budget : float, default 2e9
        Bytes; when the feature matrix would exceed it (serial backend), it is
        written to a memory-mapped temporary file instead of RAM.

    Attributes
    ----------
    results.features : numpy.ndarray, shape (n_frames, n_features), float32
    frames, times : numpy.ndarray, shape (n_frames,)
        Frame indices and times (ps) of the analysed frames.
    """

    _analysis_algorithm_is_parallelizable = True

    @classmethod
    def get_supported_backends(cls):
        return ("serial", "multiprocessing", "dask")

    def __init__(self, atomgroup, featurizer, *, chunk_size=1000, memory_budget=2e9, **kwargs):
        super().__init__(atomgroup.universe.trajectory, **kwargs)
        self._ag = atomgroup
        self.featurizer = featurizer
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer number of frames, e.g. 1000")
        if not isinstance(memory_budget, (int, float, np.number)) or not 0 < memory_budget < np.inf:
            raise ValueError(f"memory_budget={memory_budget!r} must be a positive number of bytes, e.g. 2e9")
        self.chunk_size = int(chunk_size)
        self.memory_budget = float(memory_budget)
        self._periodic = featurizer.uses_box and atomgroup.dimensions is not None
        self._parent_pid = os.getpid()

    def _prepare(self):
        # runs in each worker for parallel backends: it allocates only this worker's rows
        if os.getpid() != self._parent_pid:
            # torch's OpenMP pool does not survive fork(); one thread per worker process
            torch.set_num_threads(1)
        shape = (self.n_frames, self.featurizer.n_features)
        if shape[0] * shape[1] * 4 > self.memory_budget:
            handle, path = tempfile.mkstemp(prefix="mdcvkit-features-", suffix=".dat")
            os.close(handle)
            self.results.features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
            release_features(self.results.features)  # the mapping stays; the file goes, even if a worker dies
        else:
            self.results.features = np.empty(shape, dtype=np.float32)
        size = min(self.chunk_size, max(self.n_frames, 1))
        self._positions = np.empty((size, self._ag.n_atoms, 3), dtype=np.float32)
        self._boxes = np.empty((size, 6), dtype=np.float32) if self._periodic else None
        self._chunk_start = 0

    def _single_frame(self):
        row = self._frame_index - self._chunk_start
        self._positions[row] = self._ag.positions
        if self._boxes is not None:
            self._boxes[row] = self._ts.dimensions
        # flush when the buffer is full or at this worker's last frame (no hook runs after the loop)
        if row + 1 == len(self._positions) or self._frame_index + 1 == self.n_frames:
            self._flush(row + 1)

    def _flush(self, n):
        positions = self._positions[:n]
        if not np.all(np.isfinite(positions)):
            bad = self.frames[self._chunk_start + np.flatnonzero(~np.isfinite(positions).all(axis=(1, 2)))[0]]
            raise ValueError(
                f"frame {bad} of the trajectory has NaN or infinite coordinates; remove it with "
                "run(frames=...) or repair the trajectory"
            )
        box = None if self._boxes is None else torch.from_numpy(_box_matrices(self._boxes[:n]))
        with torch.no_grad():
            values = self.featurizer(torch.from_numpy(positions), box).numpy()
        self.results.features[self._chunk_start : self._chunk_start + n] = values
        self._chunk_start += n

    def run(self, *args, backend=None, unsupported_backend=False, **kwargs):
        """As :meth:`MDAnalysis.analysis.base.AnalysisBase.run`; ``backend`` may also be a
        :class:`mdcvkit.frames.DaskClientBackend` (tested with this class, so MDAnalysis's
        ``unsupported_backend=True`` is not needed for it)."""
        unsupported_backend = unsupported_backend or isinstance(backend, DaskClientBackend)
        return super().run(*args, backend=backend, unsupported_backend=unsupported_backend, **kwargs)

    def _get_aggregator(self):
        return ResultsGroup(lookup={"features": ResultsGroup.ndarray_vstack})


def release_features(features):
    """Remove the temporary file behind memory-mapped ``features`` (``mdcvkit-features-*``).

    On POSIX systems the mapping stays readable until the array is freed; where a mapped file cannot
    be removed (Windows) it is removed when the array is garbage-collected.
    """
    filename = getattr(features, "filename", None)
    if (
        not isinstance(features, np.memmap)
        or filename is None
        or not Path(filename).name.startswith("mdcvkit-features-")
    ):
        return
    try:
        os.unlink(filename)
    except FileNotFoundError:
        pass
    except OSError:
        weakref.finalize(features, _remove_file, filename)


def _remove_file(filename):
    try:
        os.unlink(filename)
    except OSError:
        pass
