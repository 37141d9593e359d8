"""Markov-state-model validation of collective variables, through deeptime.

A CV is useful for kinetics when a Markov state model (MSM) built on a fine
discretisation of it reproduces the slow dynamics: its implied timescales do
not depend on the lag time beyond a modest lag, and it passes the
Chapman–Kolmogorov (CK) test [1]_. This module runs both checks on any CV time
series — ``AutoencoderCV.results.cv``, a numpy array, or a list of them — with
deeptime [4]_ doing the work (k-means clustering, effective transition counts,
maximum-likelihood and Bayesian reversible MSMs [2]_, PCCA+ [3]_), and returns xarray
Datasets in physical time (ps).

What this module adds around deeptime is what a CV user needs: several
trajectories kept apart (the ``trajectory`` coordinate of ``results.cv``), the
frame time step read from the ``time`` coordinate, seeded Bayesian sampling,
the largest connected set with a warning that says what was dropped, the
intervals of the Bayesian posterior, and a verdict of the CK test per entry.

References
----------
.. [1] Prinz, J.-H. et al. "Markov models of molecular kinetics: Generation
   and validation." J. Chem. Phys. 134, 174105 (2011).
.. [2] Trendelkamp-Schroer, B., Wu, H., Paul, F. & Noé, F. "Estimation and
   uncertainty of reversible Markov models." J. Chem. Phys. 143, 174101 (2015).
.. [3] Röblitz, S. & Weber, M. "Fuzzy spectral clustering by PCCA+."
   Adv. Data Anal. Classif. 7, 147–179 (2013).
.. [4] Hoffmann, M. et al. "Deeptime: a Python library for machine learning
   dynamical models from time series data." Mach. Learn.: Sci. Technol. 3,
   015009 (2022).
"""

from .ck import ck_test
from .timescales import implied_timescales
from .validation import MSMValidation

__all__ = ["implied_timescales", "ck_test", "MSMValidation"]
