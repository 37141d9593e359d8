"""Export a CV for PLUMED (``PYTORCH_MODEL``) and for openmm-torch (``TorchForce``).

PLUMED computes the descriptors itself (``DISTANCE``, ``TORSION``, ``POSITION``)
and feeds them, as a float32 tensor of shape ``(1, n_descriptors)``, to the
TorchScript model written here, which returns one column per CV component
(PLUMED names them ``<label>.node-0``, ``<label>.node-1``, ...). The model is
*traced*, not scripted (scripting fails on torch 2.x for this kind of code).
PLUMED's LibTorch must match the torch version that wrote the model; that
version is recorded next to the model and in the input file.

Reference: L. Bonati, G. Piccini, M. Parrinello, PNAS 118, e2113533118 (2021)
(the ``pytorch`` module of PLUMED).
"""

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .boundary import _module_dtype
from .descriptors import DescriptorCV, Position
from .routes import _TorchComponent

__all__ = ["to_plumed", "to_openmm_torch"]


def _trace(module, example):
    """torch.jit.trace without its deprecation warning: PLUMED and openmm-torch load TorchScript only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        return torch.jit.trace(module, example, check_trace=False)


class _DescriptorModel(torch.nn.Module):
    """Raw descriptors (float32, Å / rad) -> CV (float32): what PYTORCH_MODEL runs."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, descriptors):
        return self.head(descriptors.double()).float()


def _check_cv(cv):
    if not isinstance(cv, DescriptorCV):
        raise ValueError(
            f"cv must be a mdcvkit.biasing.DescriptorCV (descriptors PLUMED computes), "
            f"not {type(cv).__name__}; "
            f"rebuild the CV from Distance/Torsion/Position descriptors"
        )


def to_plumed(cv, folder, *, particles=None, model_file="model.ptc", label="cv", temperature=300.0):
    """Write a TorchScript model and a ``plumed.dat`` that computes the CV in PLUMED.

    Parameters
    ----------
    cv : DescriptorCV
        The CV; its descriptors become PLUMED actions, the rest the traced model.
    folder : str or path-like
        Created if missing; receives ``model_file``, ``plumed.dat`` and ``model.json``.
    particles : sequence of int, optional
        System (0-based) index of each CV input atom; default the identity. PLUMED's atom
        numbers are these plus one.
    model_file : str, default "model.ptc"
    label : str, default "cv"
        PLUMED label of the model action; the components are ``{label}.node-k``.
    temperature : float, default 300
        Temperature (K) written into the commented bias examples.

    Returns
    -------
    pathlib.Path
        Path of ``plumed.dat``.

    Notes
    -----
    Lengths are in Å on both sides (``UNITS LENGTH=A``), angles in rad, energies in kJ/mol.
    The input holds an OPES and a well-tempered metadynamics block, commented out.
    """
    _check_cv(cv)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    descriptors = cv.descriptors
    particles = np.arange(cv.n_atoms) if particles is None else np.asarray(particles, dtype=np.int64)
    if particles.ndim != 1 or particles.size < cv.n_atoms:
        raise ValueError(
            f"particles has {particles.size} entries but the CV reads {cv.n_atoms} atoms; "
            f"pass one system index "
            f"per CV atom"
        )
    model = _DescriptorModel(cv.head).eval()
    positions = 10 * torch.rand(
        1, cv.n_atoms, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    with torch.no_grad():
        example = cv.descriptor_values(positions).float()
    traced = _trace(model, example)
    traced.save(str(folder / model_file))
    meta = {
        "torch_version": torch.__version__,
        "inputs": [type(d).__name__ for d in descriptors],
        "n_inputs": len(descriptors),
        "outputs": cv.names,
        "dtype": "float32",
        "input_shape": [1, len(descriptors)],
        "units": {"length": "Å", "angle": "rad", "energy": "kJ/mol"},
    }
    (folder / "model.json").write_text(json.dumps(meta, indent=2) + "\n")

    lines = [
        f"# CV written by mdcvkit for PLUMED's PYTORCH_MODEL; torch {torch.__version__} wrote {model_file}:",
        "# PLUMED must be linked against the same LibTorch version.",
        "UNITS LENGTH=A ENERGY=kj/mol",
    ]
    args = []
    for k, descriptor in enumerate(descriptors):
        name = f"d{k}"
        lines.append(descriptor.plumed(name, particles))
        args.append(descriptor.plumed_component(name) if isinstance(descriptor, Position) else name)
    lines.append(f"{label}: PYTORCH_MODEL FILE={model_file} ARG={','.join(args)}")
    outputs = ",".join(f"{label}.node-{k}" for k in range(cv.n_cv))
    sigmas = ",".join(["0.05"] * cv.n_cv)
    lines += [
        f"# components: {', '.join(f'{label}.node-{k} = {n}' for k, n in enumerate(cv.names))}",
        "# OPES (uncomment one bias):",
        f"# opes: OPES_METAD ARG={outputs} PACE=500 BARRIER=40 TEMP={temperature:g}",
        "# well-tempered metadynamics:",
        f"# metad: METAD ARG={outputs} SIGMA={sigmas} HEIGHT=1.2 PACE=500 BIASFACTOR=10 TEMP={temperature:g}",
        f"PRINT ARG={outputs} STRIDE=100 FILE=COLVAR",
        "",
    ]
    path = folder / "plumed.dat"
    path.write_text("\n".join(lines))
    return path


def to_openmm_torch(cv, folder, n_particles, *, particles=None, prefix="cv"):
    """Write one traced scalar module per CV component for openmm-torch's ``TorchForce``.

    Each module maps all system positions ``(n_particles, 3)`` in nm (float32) to the CV
    component (a scalar); use it as a collective variable of a CustomCVForce.

    Parameters
    ----------
    cv : torch.nn.Module or callable
        Positions (Å) -> ``(n_frames, n_cv)``.
    folder : str or path-like
    n_particles : int
        Number of particles of the OpenMM System.
    particles : sequence of int, optional
        System index of each CV input atom; default ``range(n_particles)``.
    prefix : str, default "cv"
        Files are ``{prefix}{k}.pt``.

    Returns
    -------
    list of pathlib.Path
        One file per CV component.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    particles = np.arange(n_particles) if particles is None else np.asarray(particles, dtype=np.int64)
    example = torch.rand(int(n_particles), 3, generator=torch.Generator().manual_seed(0)) + 0.5
    with torch.no_grad():
        n_cv = cv((example[particles].unsqueeze(0) * 10).to(_module_dtype(cv))).shape[-1]
    paths = []
    for k in range(n_cv):
        traced = _trace(_TorchComponent(cv, particles, k), example)
        path = folder / f"{prefix}{k}.pt"
        traced.save(str(path))
        paths.append(path)
    (folder / f"{prefix}.json").write_text(
        json.dumps({"torch_version": torch.__version__, "n_cv": n_cv}) + "\n"
    )
    return paths
