"""A CV for PLUMED: the actions that compute its inputs and a TorchScript model for ``PYTORCH_MODEL``.

Each featurizer gives its PLUMED form (:meth:`mdcvkit.features.Featurizer.to_plumed`): the
actions PLUMED runs (``DISTANCE``, ``TORSION``, or the ``POSITION`` of each atom for features
of positions, aligned and body-frame ones included) and a torch module that turns their values
into the features. The model written here is that module followed by the CV's network
(``encode``), traced in float32 behind a check of the input width; PLUMED feeds it a
``(1, n_inputs)`` tensor and names its outputs ``<label>.node-0``, ``<label>.node-1``, ...
Lengths are in Å on both sides (``UNITS LENGTH=A``), angles in rad, energies in kJ/mol. PLUMED's
LibTorch must match the torch version that wrote the model; it is recorded in ``model.json``.

A CV on aligned positions is exported with the ``POSITION`` of each atom: the model runs the same
Kabsch fit as :class:`mdcvkit.features.AlignedPositions`, so PLUMED's CV and forces are those of
the torch module. With periodic boundaries the molecule must be whole first (the input holds a
commented ``WHOLEMOLECULES`` line).

References: L. Bonati, G. Piccini, M. Parrinello, PNAS 118, e2113533118 (2021) (PLUMED's
``pytorch`` module).
"""

import copy
import json

import numpy as np
import torch

from .._io import as_path, atomic_path, trace_torchscript

__all__ = ["to_plumed"]


class _PlumedModel(torch.nn.Module):
    """PLUMED's input values ``(1, n_inputs)`` float32 (Å, rad) -> CV ``(1, n_cv)`` float32."""

    def __init__(self, inputs, model):
        super().__init__()
        self.inputs = inputs
        self.model = model

    def forward(self, values):
        return self.model.encode(self.inputs(values.double())).float()


def _tail(label, n_cv, temperature):
    """Commented OPES and metadynamics examples and a PRINT of the components."""
    outputs = ",".join(f"{label}.node-{k}" for k in range(n_cv))
    sigmas = ",".join(["0.05"] * n_cv)
    return [
        "# OPES (uncomment one bias):",
        f"# opes: OPES_METAD ARG={outputs} PACE=500 BARRIER=40 TEMP={temperature:g}",
        "# well-tempered metadynamics:",
        f"# metad: METAD ARG={outputs} SIGMA={sigmas} HEIGHT=1.2 PACE=500 BIASFACTOR=10 TEMP={temperature:g}",
        f"PRINT ARG={outputs} STRIDE=100 FILE=COLVAR",
        "",
    ]


def to_plumed(cv, folder, *, particles=None, model_file="model.ptc", label="cv", temperature=300.0):
    """Write a TorchScript model and a ``plumed.dat`` that computes the CV in PLUMED.

    Parameters
    ----------
    cv : mdcvkit.analysis.CollectiveVariable
        A fitted CV (``featurizer`` and ``model`` with ``encode``), e.g. ``AutoencoderCV``'s
        ``results.model``.
    folder : str or path-like
        Created if missing; receives ``model_file``, ``plumed.dat`` and ``model.json``, each
        written atomically.
    particles : sequence of int, optional
        System (0-based) index of each of the featurizer's atoms; default the identity. PLUMED's
        atom numbers are these plus one.
    model_file : str, default "model.ptc"
    label : str, default "cv"
        PLUMED label of the model action; the components are ``{label}.node-k``.
    temperature : float, default 300
        Temperature (K) written into the commented bias examples.

    Returns
    -------
    pathlib.Path
        Path of ``plumed.dat``.

    Raises
    ------
    ValueError
        For a CV without a featurizer and an ``encode``, or bad ``particles``.

    Examples
    --------
    >>> to_plumed(cv.results.model, "plumed", particles=atomgroup.indices)  # doctest: +SKIP
    """
    folder = as_path(folder, "folder")
    featurizer = getattr(cv, "featurizer", None)
    model = getattr(cv, "model", None)
    if featurizer is None or not hasattr(model, "encode"):
        raise ValueError(
            f"cv must be a fitted mdcvkit CollectiveVariable (featurizer -> model.encode), such as "
            f"AutoencoderCV(...).results.model, not {type(cv).__name__}"
        )
    particles = np.arange(featurizer.n_atoms) if particles is None else np.asarray(particles, dtype=np.int64)
    lines, arguments, inputs = featurizer.to_plumed("f", particles)
    plumed_model = _PlumedModel(copy.deepcopy(inputs).double(), copy.deepcopy(model).double()).eval()
    generator = torch.Generator().manual_seed(0)
    example = (1.0 + torch.rand(1, len(arguments), generator=generator)).float()
    traced = trace_torchscript(plumed_model, example)
    n_cv = int(cv.n_cv)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch_version": torch.__version__,
        "inputs": arguments,
        "input_shape": [1, len(arguments)],
        "outputs": [f"{label}.node-{k}" for k in range(n_cv)],
        "dtype": "float32",
        "units": {"length": "Å", "angle": "rad", "energy": "kJ/mol"},
        "featurizer": type(featurizer).__name__,
    }
    with atomic_path(folder / model_file) as tmp:
        traced.save(str(tmp))
    with atomic_path(folder / "model.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    atoms = ",".join(str(int(p) + 1) for p in particles)
    text = [
        f"# CV written by mdcvkit for PLUMED's PYTORCH_MODEL; torch {torch.__version__} wrote {model_file}:",
        "# PLUMED must be linked against the same LibTorch version.",
        "UNITS LENGTH=A ENERGY=kj/mol",
        "# Periodic systems: make the molecule whole first (atoms rebuilt in this order):",
        f"# WHOLEMOLECULES ENTITY0={atoms}",
        *lines,
        f"{label}: PYTORCH_MODEL FILE={model_file} ARG={','.join(arguments)}",
        *_tail(label, n_cv, float(temperature)),
    ]
    path = folder / "plumed.dat"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(text))
    return path
