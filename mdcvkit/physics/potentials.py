"""Potential energies as differentiable torch functions of the generative model's coordinates.

A potential maps a batch of coordinates ``x`` of shape ``(n, n_features)`` to energies in
kJ/mol, shape ``(n,)``, differentiable so that autograd gives the forces at samples of the
model. :class:`TorchPotential` wraps an analytic torch energy (the toys of
:mod:`mdcvkit.systems`); :class:`OpenMMPotential` wraps any OpenMM ``System`` through a
:class:`torch.autograd.Function` whose backward returns OpenMM's forces, with one Context per
worker process. Positions are in Å on the mdcvkit side and in nm inside OpenMM; the conversion
uses :data:`mdcvkit.export.openmm.NM_TO_ANGSTROM` at this one boundary.
"""

import multiprocessing

import numpy as np
import torch

from .._checks import check_int
from ..export.openmm import NM_TO_ANGSTROM
from ..features import frame_coordinates

__all__ = ["Potential", "TorchPotential", "OpenMMPotential"]


class Potential:
    """Base of the potentials: ``energy(x)`` in kJ/mol of model coordinates ``x``.

    Subclasses set ``n_features`` and implement :meth:`energy`; those whose coordinates are not
    Cartesian override :meth:`log_jacobian` (the log-density of Cartesian volume per volume of
    ``x``, so that ``exp(-beta U(x) + log_jacobian(x))`` is the Boltzmann density of ``x``).
    """

    n_features = 0

    def energy(self, x):
        """Potential energy in kJ/mol of coordinates ``x`` (n, n_features) -> (n,), differentiable."""
        raise NotImplementedError

    def log_jacobian(self, x):
        """Log-Jacobian of the coordinates ``x`` (n, n_features) -> (n,); zero for Cartesian ones."""
        return x.new_zeros(len(x))

    def __call__(self, x):
        return self.energy(x)


class TorchPotential(Potential):
    """An analytic potential: any differentiable torch function of the coordinates.

    Parameters
    ----------
    function : callable
        Maps a tensor (n, n_features) to energies (n,) in kJ/mol with torch operations.
    n_features : int
        Number of coordinates.

    Examples
    --------
    >>> from mdcvkit.systems import TiltedDoubleWell2D
    >>> potential = TorchPotential.from_toy(TiltedDoubleWell2D())
    >>> float(potential.energy(torch.tensor([[0.0, 1.0]]))[0])
    0.5
    """

    def __init__(self, function, n_features):
        if not callable(function):
            raise TypeError(f"function={function!r} must be callable: a torch energy of x (n, n_features)")
        check_int(n_features, "n_features", fix="pass the number of coordinates, e.g. n_features=2")
        self.function = function
        self.n_features = int(n_features)

    @classmethod
    def from_toy(cls, toy):
        """The potential of a toy of :mod:`mdcvkit.systems`, in its reduced coordinates (nm, kJ/mol).

        Parameters
        ----------
        toy : mdcvkit.systems.ToySystem

        Returns
        -------
        TorchPotential
        """
        return cls(toy.potential, toy.n_dim)

    def energy(self, x):
        return self.function(x)


# --- OpenMM ------------------------------------------------------------------------------------------------
_WORKER = {}


def _make_context(system_xml, platform):
    import openmm

    system = openmm.XmlSerializer.deserialize(system_xml)
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))


def _worker_start(system_xml, platform):
    _WORKER["context"] = _make_context(system_xml, platform)


def _evaluate(context, positions_nm):
    """Energies (kJ/mol) and forces (kJ/mol/nm) of configurations (n, n_atoms, 3) in nm, one Context."""
    energies = np.empty(len(positions_nm))
    forces = np.empty_like(positions_nm)
    for k, frame in enumerate(positions_nm):
        context.setPositions(frame)
        state = context.getState(getEnergy=True, getForces=True)
        # a State holds kJ/mol and kJ/mol/nm; value_in_unit would cost a fifth of this loop
        energies[k] = state.getPotentialEnergy()._value
        forces[k] = state.getForces(asNumpy=True)._value
    return energies, forces


def _worker_evaluate(positions_nm):
    return _evaluate(_WORKER["context"], positions_nm)


class _OpenMMEnergy(torch.autograd.Function):
    """Energies of positions in Å through OpenMM; the backward pass returns OpenMM's forces."""

    @staticmethod
    def forward(ctx, positions, potential):
        nm = positions.detach().cpu().double().numpy() / NM_TO_ANGSTROM
        energies, forces = potential.evaluate_nm(nm)
        # dU/dx in kJ/mol/Å = -F (kJ/mol/nm) / (Å per nm)
        ctx.save_for_backward(torch.as_tensor(-forces / NM_TO_ANGSTROM, dtype=positions.dtype,
                                              device=positions.device))
        return torch.as_tensor(energies, dtype=positions.dtype, device=positions.device)

    @staticmethod
    def backward(ctx, grad_output):
        (gradient,) = ctx.saved_tensors
        return grad_output[:, None, None] * gradient, None


class OpenMMPotential(Potential):
    """The potential energy of an OpenMM ``System`` as a differentiable torch function.

    The coordinates ``x`` are Cartesian positions in Å, flattened to ``(n, 3 n_atoms)``, or, with
    ``frame``, the positions in the body frame of three atoms (:func:`mdcvkit.features.frame_coordinates`)
    without the six that the frame fixes, ``(n, 3 n_atoms - 6)``: translations and rotations, which
    leave the energy unchanged and make ``exp(-beta U)`` unnormalisable in Cartesian coordinates,
    are removed. Each configuration is one ``setPositions``/``getState`` call of a Context; with
    ``n_workers > 1`` a pool of processes, each holding its own Context, shares the batch.

    Parameters
    ----------
    system : openmm.System
        Serialised once; later changes to it are not seen. Constraints are ignored (the energy of
        the given positions is returned), so build the System without them.
    frame : sequence of 3 int, optional
        Atoms ``(o, a, b)`` of the body frame; Cartesian coordinates when None.
    platform : str, optional
        OpenMM platform name; default :func:`mdcvkit.biasing.default_platform` for the System's size
        (Reference for a small molecule on a CPU).
    n_workers : int, default 1
        Processes evaluating energies; 1 evaluates in this process.

    Examples
    --------
    >>> setup = mk.datasets.alanine_dipeptide_system("vacuum", constraints=False)   # doctest: +SKIP
    >>> potential = OpenMMPotential(setup.system, frame=(4, 6, 8))                 # doctest: +SKIP
    >>> x = potential.features(torch.tensor(setup.positions[None] * 10.0))        # doctest: +SKIP
    >>> potential.energy(x)                                                        # kJ/mol; doctest: +SKIP
    """

    def __init__(self, system, *, frame=None, platform=None, n_workers=1):
        import openmm

        from ..biasing import default_platform

        if not isinstance(system, openmm.System):
            raise TypeError(f"system must be an openmm.System, not {type(system).__name__}")
        self.system = system
        self.n_atoms = system.getNumParticles()
        if frame is not None:
            frame = tuple(int(k) for k in frame)
            if len(frame) != 3 or len(set(frame)) != 3 or not all(0 <= k < self.n_atoms for k in frame):
                raise ValueError(f"frame={frame!r} must be 3 distinct atom indices in [0, {self.n_atoms}), e.g. "
                                 "the N, CA and C of one residue")
        self.frame = frame
        # atoms in the order of the coordinates (o, a, b, the others), and the permutation back to atom order
        self._others = [] if frame is None else [k for k in range(self.n_atoms) if k not in frame]
        self._atom_order = None if frame is None else torch.as_tensor(np.argsort([*frame, *self._others]))
        self.platform = default_platform(self.n_atoms).getName() if platform is None else str(platform)
        check_int(n_workers, "n_workers", fix="pass e.g. n_workers=1")
        self.n_workers = int(n_workers)
        self.n_features = 3 * self.n_atoms - (6 if frame is not None else 0)
        self._xml = openmm.XmlSerializer.serialize(system)
        self._context = _make_context(self._xml, self.platform)  # a bad platform name fails here
        self._pool = None
        self.n_evaluations = 0

    def evaluate_nm(self, positions_nm):
        """Energies (n,) in kJ/mol and forces (n, n_atoms, 3) in kJ/mol/nm of positions (n, n_atoms, 3) in nm."""
        self.n_evaluations += len(positions_nm)
        if self.n_workers == 1 or len(positions_nm) < 2 * self.n_workers:
            return _evaluate(self._context, positions_nm)
        if self._pool is None:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"  # workers use no torch
            self._pool = multiprocessing.get_context(method).Pool(
                self.n_workers, initializer=_worker_start, initargs=(self._xml, self.platform))
        parts = self._pool.map(_worker_evaluate, np.array_split(positions_nm, self.n_workers))
        return np.concatenate([e for e, _ in parts]), np.concatenate([f for _, f in parts])

    def close(self):
        """Stop the worker processes (they start again on the next batch)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_context"], state["_pool"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._context = _make_context(self._xml, self.platform)

    def positions(self, x):
        """Cartesian positions (n, n_atoms, 3) in Å of coordinates ``x`` (n, n_features); differentiable."""
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x has shape {tuple(x.shape)}; pass coordinates of shape (n, {self.n_features})")
        if self.frame is None:
            return x.reshape(len(x), self.n_atoms, 3)
        zero = x.new_zeros(len(x))  # o at the origin, a on the x axis, b in the xy plane
        frame = torch.stack([zero, zero, zero, x[:, 0], zero, zero, x[:, 1], x[:, 2], zero], -1)
        body = torch.cat([frame.reshape(len(x), 3, 3), x[:, 3:].reshape(len(x), self.n_atoms - 3, 3)], 1)
        return body[:, self._atom_order]

    def features(self, positions):
        """Coordinates ``x`` (n, n_features) of positions (n, n_atoms, 3) in Å; the inverse of :meth:`positions`."""
        positions = torch.as_tensor(positions)
        if positions.ndim != 3 or positions.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"positions have shape {tuple(positions.shape)}; pass (n, {self.n_atoms}, 3) in Å")
        if self.frame is None:
            return positions.flatten(1)
        body = frame_coordinates(positions, self.frame, [*self.frame[1:], *self._others])
        return torch.cat([body[:, 0, :1], body[:, 1, :2], body[:, 2:].flatten(1)], dim=1)

    def log_jacobian(self, x):
        # volume of rotations at fixed body coordinates: |oa|² (directions of oa) × distance of b from the oa axis
        if self.frame is None:
            return x.new_zeros(len(x))
        return 2 * torch.log(x[:, 0].abs()) + torch.log(x[:, 2].abs())

    def energy(self, x):
        return _OpenMMEnergy.apply(self.positions(x), self)
