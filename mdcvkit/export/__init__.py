"""The only place a CV leaves torch: one exporter per engine, each derived from the CV module.

:mod:`~mdcvkit.export.openmm` (OpenMM collective variables by the "expression", "python" and
"torch" routes, and the nm <-> Å boundary), :mod:`~mdcvkit.export.numpy` (the NumPy form the
"python" route evaluates per step), :mod:`~mdcvkit.export.plumed` (``plumed.dat`` and a
``PYTORCH_MODEL``), :mod:`~mdcvkit.export.torchscript` (TorchScript files, openmm-torch modules).
"""

from .numpy import NumpyCV
from .openmm import (
    ACTIVATIONS,
    NM_TO_ANGSTROM,
    ROUTES,
    NumpyCVEvaluator,
    TorchCVEvaluator,
    available_routes,
    collective_variables,
    compile_expression,
    cv_evaluator,
    evaluate_cv,
)
from .plumed import to_plumed
from .torchscript import to_openmm_torch, to_torchscript

__all__ = [
    "ACTIVATIONS",
    "NM_TO_ANGSTROM",
    "ROUTES",
    "NumpyCV",
    "NumpyCVEvaluator",
    "TorchCVEvaluator",
    "available_routes",
    "collective_variables",
    "cv_evaluator",
    "compile_expression",
    "evaluate_cv",
    "to_openmm_torch",
    "to_plumed",
    "to_torchscript",
]
