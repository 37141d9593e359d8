"""Samplers that take a CV: a bias force with multiple time stepping, extended ABF with CZAR, OPES, FEBILAE.

Modules: :mod:`~mdcvkit.biasing.bias` (a bias ``U(ξ)`` in an OpenMM System, evaluated every
``bias_stride`` steps; the platform choice), :mod:`~mdcvkit.biasing.grid`,
:mod:`~mdcvkit.biasing.czar`, :mod:`~mdcvkit.biasing.extended` and :mod:`~mdcvkit.biasing.eabf`
(extended ABF with the CZAR estimator), :mod:`~mdcvkit.biasing.opes` (OPES through openmm-opes),
:mod:`~mdcvkit.biasing.reweight` (per-frame weights of
biased frames), :mod:`~mdcvkit.biasing.settings` and :mod:`~mdcvkit.biasing.iterative` (the FEBILAE loop),
:mod:`~mdcvkit.biasing.committor` (committor learning with umbrella windows or OPES along logit q, MBAR).
The CV reaches OpenMM through :mod:`mdcvkit.export`, the one place a CV leaves torch.
"""

from .bias import add_cv_bias, bias_integrator, cv_force, default_platform
from .committor import Basin, Committor, CommittorModel, CommittorOPES, UmbrellaWindows, mbar_log_weights
from .czar import CZARAccumulator, czar, integrate_gradient
from .eabf import ExtendedABF
from .grid import Grid
from .iterative import IterativeCVLearning
from .opes import OPES
from .reweight import ESTIMATORS, eabf_log_weights, effective_sample_size, opes_log_weights
from .settings import Convergence, Sampling

__all__ = [
    "add_cv_bias",
    "bias_integrator",
    "cv_force",
    "default_platform",
    "CZARAccumulator",
    "czar",
    "integrate_gradient",
    "ExtendedABF",
    "Grid",
    "IterativeCVLearning",
    "Sampling",
    "Convergence",
    "ESTIMATORS",
    "eabf_log_weights",
    "effective_sample_size",
    "OPES",
    "opes_log_weights",
    "Committor",
    "CommittorModel",
    "Basin",
    "CommittorOPES",
    "UmbrellaWindows",
    "mbar_log_weights",
]
