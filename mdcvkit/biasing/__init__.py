"""Feed a CV back into sampling: the CV as an OpenMM force, extended ABF with CZAR, PLUMED export.

Modules: :mod:`~mdcvkit.biasing.boundary` (nm <-> Å, CV values and gradients),
:mod:`~mdcvkit.biasing.routes` and :mod:`~mdcvkit.biasing.force` (the CV as an OpenMM bias),
:mod:`~mdcvkit.biasing.descriptors` (CVs OpenMM and PLUMED compute themselves),
:mod:`~mdcvkit.biasing.grid`, :mod:`~mdcvkit.biasing.czar` and :mod:`~mdcvkit.biasing.eabf`
(extended ABF with the CZAR estimator), :mod:`~mdcvkit.biasing.plumed` (export).
"""

from .boundary import NM_TO_ANGSTROM, TorchCVEvaluator, evaluate_cv
from .czar import CZARAccumulator, czar, integrate_gradient
from .descriptors import ACTIVATIONS, Descriptor, DescriptorCV, Distance, FramePosition, Position, Torsion
from .eabf import ExtendedABF
from .force import add_cv_bias, cv_collective_variables, cv_force, fastest_platform
from .grid import Grid
from .iterative import IterativeCVLearning
from .plumed import to_openmm_torch, to_plumed
from .routes import ROUTES, ExternalUpdater, available_routes, step

__all__ = [
    "ACTIVATIONS",
    "Descriptor",
    "DescriptorCV",
    "Distance",
    "Position",
    "FramePosition",
    "Torsion",
    "NM_TO_ANGSTROM",
    "ROUTES",
    "ExternalUpdater",
    "step",
    "TorchCVEvaluator",
    "add_cv_bias",
    "available_routes",
    "cv_collective_variables",
    "cv_force",
    "evaluate_cv",
    "fastest_platform",
    "CZARAccumulator",
    "czar",
    "integrate_gradient",
    "ExtendedABF",
    "Grid",
    "IterativeCVLearning",
    "to_plumed",
    "to_openmm_torch",
]
