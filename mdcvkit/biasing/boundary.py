"""The OpenMM boundary of a torch CV: nm <-> Å, float64 evaluation, values and gradients.

A CV is any ``torch.nn.Module`` or torch function mapping positions
``(n_frames, n_atoms, 3)`` in Å to ``(n_frames, n_cv)``. This module is the only
place where units change on the Python side: positions reach the CV in Å
(``10 x`` with x in nm) and the gradient ``dξ/dx`` handed to OpenMM is per nm
(``10 dξ/dr`` with r in Å); energies are in kJ/mol throughout.
"""

import copy
import uuid
import warnings

import numpy as np
import openmm.unit as unit
import torch

from .descriptors import DescriptorCV
from .numpy_cv import numpy_twin

__all__ = ["NM_TO_ANGSTROM", "TorchCVEvaluator", "evaluate_cv"]


#: Å per nm: the one conversion factor of the OpenMM boundary
NM_TO_ANGSTROM = 10.0


def _positions_nm(positions, argument="positions"):
    """Bare (n, 3) float64 array in nm from an openmm Quantity or numbers in nm."""
    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    array = np.asarray(positions, dtype=float)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(
            f"{argument} has shape {array.shape}; pass one (x, y, z) row per particle, in nm or as an "
            f"openmm.unit Quantity"
        )
    return array


def _module_dtype(cv):
    if isinstance(cv, DescriptorCV):
        return cv._dtype()
    if isinstance(cv, torch.nn.Module):
        for p in cv.parameters():
            return p.dtype
    return torch.float64


def _with_dtype(cv, dtype):
    """``(module, dtype)``: a copy of a torch module converted to ``dtype``, or a function as it is."""
    if isinstance(cv, torch.nn.Module) and dtype is not None and _module_dtype(cv) != dtype:
        try:
            return copy.deepcopy(cv).to(dtype), dtype
        except Exception as err:  # a module that cannot be copied keeps its own precision
            warnings.warn(
                f"could not convert a copy of the CV to {dtype} ({err}); using it as it is", stacklevel=3
            )
            return cv, _module_dtype(cv)
    return cv, dtype if dtype is not None else _module_dtype(cv)


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
        If the output does not have shape ``(n_frames, n_cv)`` or is not finite.
    """
    x = torch.as_tensor(np.asarray(positions, dtype=float))
    if x.ndim == 2:
        x = x[None]
    with torch.no_grad():
        try:
            out = cv(x.to(_module_dtype(cv)))
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


#: token of a TorchCVEvaluator -> (positions bytes, (values, gradients)) of its last evaluation
_LAST_EVALUATION = {}


class TorchCVEvaluator:
    """The OpenMM boundary for a torch CV: values and gradients from positions in nm.

    Parameters
    ----------
    cv : torch.nn.Module or callable
        Positions ``(n_frames, n_atoms, 3)`` in Å -> ``(n_frames, n_cv)``.
    n_cv : int
        Number of CV components.
    dtype : torch.dtype, default torch.float64
        Precision of the evaluation. A module is evaluated through a copy converted to this
        dtype (the caller's module is left as it is), so that forces are as precise as
        OpenMM's double-precision platforms and constant-energy runs conserve energy; a
        plain function gets positions of this dtype. A module whose copy fails to run (one
        that casts internally) is evaluated as it is, in its own precision.

    Notes
    -----
    The last evaluation is cached by the bytes of the positions, so that the
    ``n_cv`` PythonForces of one step share one forward and backward pass.
    In float64, a CV that :func:`~mdcvkit.biasing.numpy_cv.numpy_twin` covers (a learned CV on
    Kabsch-aligned or raw positions with a feed-forward encoder) is evaluated by its NumPy twin,
    a copy of its parameters when the evaluator is built: the same numbers at a fraction of torch's
    per-call overhead (``benchmarks/bench_iterative.py``).
    """

    def __init__(self, cv, n_cv, dtype=torch.float64):
        self.original = cv
        self.cv, self.dtype = _with_dtype(cv, dtype)
        self.n_cv = int(n_cv)
        self._checked = self.cv is cv
        self.twin = numpy_twin(cv) if self.dtype == torch.float64 else None
        # the components of one step share the last result through a module-level cache under
        # this token (copies of this object, if any are made, keep it)
        self._token = uuid.uuid4().hex

    def _evaluate(self, positions_nm):
        if self.twin is not None:
            values, gradients = self.twin(positions_nm * NM_TO_ANGSTROM)
            return values, gradients * NM_TO_ANGSTROM
        # one copy of the frame per component: a single backward pass of the diagonal gives the Jacobian
        x = torch.tensor(positions_nm * NM_TO_ANGSTROM, dtype=self.dtype)
        x = x.unsqueeze(0).repeat(self.n_cv, 1, 1).requires_grad_(True)
        with torch.enable_grad():
            out = self.cv(x)
            (grad,) = torch.autograd.grad(out.diagonal().sum(), x)
        return out[0].detach().double().numpy(), grad.double().numpy() * NM_TO_ANGSTROM

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
        """
        positions_nm = np.ascontiguousarray(positions_nm, dtype=float)
        key = positions_nm.tobytes()
        cached = _LAST_EVALUATION.get(self._token)
        if cached is not None and cached[0] == key:
            return cached[1]
        if not np.all(np.isfinite(positions_nm)):  # once per configuration, for every route that calls here
            raise FloatingPointError(
                "the positions are not finite: the simulation blew up before the CV was evaluated; lower the "
                "time step or the force constant of the bias"
            )
        if not self._checked:  # a module that casts internally may not run as a float64 copy
            self._checked = True
            try:
                result = self._evaluate(positions_nm)
            except (RuntimeError, TypeError):
                self.cv, self.dtype = self.original, _module_dtype(self.original)
                result = self._evaluate(positions_nm)
        else:
            result = self._evaluate(positions_nm)
        _LAST_EVALUATION[self._token] = (key, result)
        return result
