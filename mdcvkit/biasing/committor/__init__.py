"""Committor learning with adaptive importance sampling (umbrella windows along logit q, MBAR, variational loss).

Modules: :mod:`~mdcvkit.biasing.committor.model` (the committor network and its loss),
:mod:`~mdcvkit.biasing.committor.sampling` (basins, umbrella windows and MBAR, OPES along logit q),
:mod:`~mdcvkit.biasing.committor.estimator` (the loop, :class:`Committor`),
:mod:`~mdcvkit.biasing.committor.plot` (figures).
"""

from . import plot
from .estimator import Committor
from .model import CommittorModel, fit_committor
from .sampling import Basin, CommittorOPES, UmbrellaWindows, mbar_log_weights

__all__ = ["plot", "Committor", "CommittorModel", "fit_committor", "Basin", "CommittorOPES", "UmbrellaWindows",
           "mbar_log_weights"]
