"""Priors on the decoder parameters θ of the generative models: a Gaussian prior and an ARD prior.

A prior enters MAP training as one more loss term of the model, −log p(θ) divided by the number of
training frames, so that the trainer's objective (a mean over frames) is the negative log posterior
per frame. The same prior gives the prior precision of the Laplace posterior
(:mod:`mdcvkit.models.laplace`).

ARD (automatic relevance determination) gives each parameter its own precision τ_j with a Gamma
hyperprior; the seed's inner EM alternates the E-step ⟨τ_j⟩ = (a₀ + ½) / (b₀ + θ_j² / 2) with a
gradient (M-) step that adds −⟨τ_j⟩θ_j to the gradient of the log posterior. The loss term here is
the marginal −log p(θ_j) = (a₀ + ½) log(1 + θ_j² / (2 b₀)) (a Student-t, up to a constant), whose
gradient is exactly ⟨τ_j⟩θ_j at the current θ: every optimiser step is one E-step and one M-step.
"""

import torch

from .._checks import check_number

__all__ = ["GaussianPrior", "ARDPrior", "PRIORS", "make_prior"]


class GaussianPrior:
    """Independent Gaussian prior θ_j ~ N(0, 1 / precision) on every decoder parameter.

    Parameters
    ----------
    precision : float, default 1.0
        Prior precision τ > 0, in 1 / (normalised units)² of the parameters.

    Examples
    --------
    >>> prior = GaussianPrior(precision=2.0)
    >>> float(prior.penalty(torch.tensor([1.0, 2.0])))
    5.0
    """

    kind = "gaussian"

    def __init__(self, precision=1.0):
        if isinstance(precision, (bool, str, bytes)):
            raise ValueError(f"precision={precision!r} must be a positive number, e.g. precision=1.0")
        self.precision = check_number("precision", precision, strict=True, example="1.0")

    def config(self):
        """The settings as plain data, ``{"kind": "gaussian", "precision": τ}`` (what models store and save)."""
        return {"kind": self.kind, "precision": self.precision}

    def penalty(self, theta):
        """−log p(θ) up to a constant, ½ τ Σ θ_j², for a flat tensor of parameters."""
        return 0.5 * self.precision * (theta ** 2).sum()

    def prior_precision(self, theta):
        """Prior precision of each parameter (the Laplace posterior's prior term), shape of ``theta``."""
        return torch.full_like(theta, self.precision)

    def __repr__(self):
        return f"GaussianPrior(precision={self.precision!r})"


class ARDPrior:
    """ARD prior: θ_j ~ N(0, 1 / τ_j) with τ_j ~ Gamma(a₀, b₀) (shape a₀, rate b₀), one τ_j per parameter.

    Parameters
    ----------
    a0, b0 : float, default 1e-5
        Shape and rate of the Gamma hyperprior, both > 0. Small values make the prior vague: weights
        the data do not need are driven to zero (θ_j² below 2 b₀, see :meth:`switched_off`).

    Examples
    --------
    >>> prior = ARDPrior(a0=1e-5, b0=1e-5)
    >>> prior.expected_precision(torch.tensor([0.0, 1.0]))  # doctest: +SKIP
    tensor([5.0001e+04, 1.0000e+00])

    References
    ----------
    M. E. Tipping, "Sparse Bayesian learning and the relevance vector machine", JMLR 1, 211 (2001).
    M. Schöberl, N. Zabaras, P.-S. Koutsourelakis, "Predictive collective variable discovery with
    deep Bayesian models", J. Chem. Phys. 150, 024109 (2019).
    """

    kind = "ard"

    def __init__(self, a0=1e-5, b0=1e-5):
        for name, value in (("a0", a0), ("b0", b0)):
            if isinstance(value, (bool, str, bytes)):
                raise ValueError(f"{name}={value!r} must be a positive number, e.g. {name}=1e-5")
            check_number(name, value, strict=True, example="1e-5 (a vague Gamma hyperprior)")
        self.a0, self.b0 = float(a0), float(b0)

    def config(self):
        """The settings as plain data, ``{"kind": "ard", "a0": a₀, "b0": b₀}``."""
        return {"kind": self.kind, "a0": self.a0, "b0": self.b0}

    def expected_precision(self, theta):
        """The E-step: ⟨τ_j⟩ = (a₀ + ½) / (b₀ + θ_j² / 2), computed without gradient, shape of ``theta``."""
        theta = theta.detach()
        return (self.a0 + 0.5) / (self.b0 + 0.5 * theta ** 2)

    def penalty(self, theta):
        """Marginal −log p(θ) up to a constant, Σ (a₀ + ½) log(1 + θ_j² / (2 b₀)); its gradient is ⟨τ_j⟩θ_j."""
        return (self.a0 + 0.5) * torch.log1p(theta ** 2 / (2 * self.b0)).sum()

    def prior_precision(self, theta):
        """Prior precision of each parameter for the Laplace posterior: the E-step's ⟨τ_j⟩ at ``theta``."""
        return self.expected_precision(theta)

    def switched_off(self, theta):
        """Which parameters ARD switched off: θ_j² < 2 b₀, where ⟨τ_j⟩ exceeds half its largest value."""
        return theta.detach() ** 2 < 2 * self.b0

    def __repr__(self):
        return f"ARDPrior(a0={self.a0!r}, b0={self.b0!r})"


#: Priors by the name accepted in ``prior=`` of the generative models.
PRIORS = {"gaussian": GaussianPrior, "ard": ARDPrior}


def make_prior(prior):
    """Build a prior from a name, a settings dict or an instance (None gives None).

    Parameters
    ----------
    prior : None, str, dict or prior instance
        ``"gaussian"`` or ``"ard"`` (default settings), a dict such as ``{"kind": "ard", "a0": 1e-5,
        "b0": 1e-5}`` (what :meth:`ARDPrior.config` returns), or a :class:`GaussianPrior` /
        :class:`ARDPrior`.

    Returns
    -------
    GaussianPrior, ARDPrior or None

    Raises
    ------
    ValueError
        For an unknown name or kind, settings the prior does not take, or non-positive settings.
    TypeError
        For any other type.

    Examples
    --------
    >>> make_prior({"kind": "ard", "a0": 1e-3, "b0": 1e-3})
    ARDPrior(a0=0.001, b0=0.001)
    """
    if prior is None or isinstance(prior, tuple(PRIORS.values())):
        return prior
    if isinstance(prior, str):
        prior = {"kind": prior}
    if not isinstance(prior, dict):
        raise TypeError(f"prior={prior!r} must be None, a name ({sorted(PRIORS)}), a dict of settings or a prior "
                        "object, e.g. prior='ard' or prior={'kind': 'gaussian', 'precision': 1.0}")
    settings = dict(prior)
    kind = settings.pop("kind", None)
    if kind not in PRIORS:
        raise ValueError(f"prior={prior!r} names kind {kind!r}; use one of {sorted(PRIORS)}")
    try:
        return PRIORS[kind](**settings)
    except TypeError as err:
        raise ValueError(f"prior={prior!r} holds settings that a {kind!r} prior does not take ({err}); "
                         f"e.g. prior={PRIORS[kind]().config()!r}") from err
