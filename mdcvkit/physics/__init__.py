"""Learning generative models and CVs from a potential: differentiable energies and reverse-KL training.

:class:`TorchPotential` (analytic energies) and :class:`OpenMMPotential` (any OpenMM System, forces
from OpenMM) give U(x) as torch functions; :class:`PhysicsVAE` trains a
:class:`mdcvkit.models.VariationalAutoEncoder` by reverse KL with tempering, or mixed with data,
through :class:`mdcvkit.training.Trainer` and the objective :class:`ReverseKLObjective`.
"""

from .estimator import PhysicsVAE
from .objective import ReverseKLObjective, effective_sample_size, kl_estimate
from .potentials import OpenMMPotential, Potential, TorchPotential

__all__ = ["Potential", "TorchPotential", "OpenMMPotential", "ReverseKLObjective", "PhysicsVAE",
           "kl_estimate", "effective_sample_size"]
