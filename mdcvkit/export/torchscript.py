"""A CV as TorchScript: positions (Å) -> CV for ``torch.jit.load``, and per-component modules for openmm-torch.

TorchScript is deprecated in recent torch releases, but it is what PLUMED's ``PYTORCH_MODEL`` and
openmm-torch's ``TorchForce`` load. Modules are traced (:func:`mdcvkit._io.trace_torchscript`)
behind a check that refuses inputs of another shape than the exported one.
"""

import json

import numpy as np
import torch

from .._io import as_path, atomic_path, trace_torchscript
from .openmm import NM_TO_ANGSTROM, TorchComponent, module_dtype

__all__ = ["to_torchscript", "to_openmm_torch"]


def to_torchscript(cv, path):
    """Write a CV module (positions in Å -> CV) as TorchScript, atomically.

    Parameters
    ----------
    cv : mdcvkit.analysis.CollectiveVariable
        The CV; the exported module takes positions ``(n_frames, n_atoms, 3)`` in Å (float32) and,
        for periodic distance features, the box ``(n_frames, 3, 3)`` in Å as second argument.
    path : str or path-like

    Returns
    -------
    pathlib.Path
    """
    path = as_path(path)
    featurizer = cv.featurizer
    example = (torch.randn(2, featurizer.n_atoms, 3, generator=torch.Generator().manual_seed(0)) * 3,)
    if featurizer.uses_box:
        example = (*example, torch.eye(3).expand(2, 3, 3) * 50)
    traced = trace_torchscript(cv, example)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    return path


def to_openmm_torch(cv, folder, n_particles, *, particles=None, prefix="cv"):
    """Write one traced scalar module per CV component for openmm-torch's ``TorchForce``.

    Each module maps all system positions ``(n_particles, 3)`` in nm (float32) to the CV
    component (a scalar), to use as a collective variable of a ``CustomCVForce``.

    Parameters
    ----------
    cv : torch.nn.Module
        Positions (Å) -> ``(n_frames, n_cv)``.
    folder : str or path-like
        Created when missing; receives ``{prefix}{k}.pt`` and ``{prefix}.json``, written atomically.
    n_particles : int
        Number of particles of the OpenMM System.
    particles : sequence of int, optional
        System index of each CV input atom; default ``range(n_particles)``.
    prefix : str, default "cv"

    Returns
    -------
    list of pathlib.Path
        One file per CV component.
    """
    folder = as_path(folder, "folder")
    folder.mkdir(parents=True, exist_ok=True)
    particles = np.arange(n_particles) if particles is None else np.asarray(particles, dtype=np.int64)
    if particles.ndim != 1 or particles.size == 0 or particles.min() < 0 or particles.max() >= n_particles:
        raise ValueError(f"particles must be system indices from 0 to {n_particles - 1}, got {particles.tolist()}")
    example = torch.rand(int(n_particles), 3, generator=torch.Generator().manual_seed(0)) + 0.5
    with torch.no_grad():
        n_cv = cv((example[particles].unsqueeze(0) * NM_TO_ANGSTROM).to(module_dtype(cv))).shape[-1]
    paths = []
    for k in range(n_cv):
        traced = trace_torchscript(TorchComponent(cv, particles, k), example, free_first=False)
        paths.append(folder / f"{prefix}{k}.pt")
        with atomic_path(paths[-1]) as tmp:
            traced.save(str(tmp))
    with atomic_path(folder / f"{prefix}.json") as tmp:
        tmp.write_text(json.dumps({"torch_version": torch.__version__, "n_cv": int(n_cv)}) + "\n")
    return paths
