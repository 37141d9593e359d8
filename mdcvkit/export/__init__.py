"""The only place a CV leaves torch: one exporter per engine, each derived from the CV module.

:mod:`~mdcvkit.export.openmm` (OpenMM collective variables by the "expression", "python" and
"torch" routes, and the nm <-> Å boundary), :mod:`~mdcvkit.export.plumed` (``plumed.dat`` and a
``PYTORCH_MODEL``), :mod:`~mdcvkit.export.torchscript` (TorchScript files, openmm-torch modules).
"""

from .openmm import (
    ACTIVATIONS,
    NM_TO_ANGSTROM,
    ROUTES,
    TorchCVEvaluator,
    available_routes,
    collective_variables,
    compile_expression,
    evaluate_cv,
)
from .plumed import to_plumed
from .torchscript import to_openmm_torch, to_torchscript

__all__ = [
    "ACTIVATIONS",
    "NM_TO_ANGSTROM",
    "ROUTES",
    "TorchCVEvaluator",
    "available_routes",
    "collective_variables",
    "compile_expression",
    "evaluate_cv",
    "to_openmm_torch",
    "to_plumed",
    "to_torchscript",
]
