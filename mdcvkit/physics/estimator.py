"""Training a variational autoencoder from a potential: reverse KL with tempering, or mixed with data."""

import logging

import numpy as np
import torch
import xarray as xr

from .._checks import check_int, check_number, check_seed
from ..models import VariationalAutoEncoder
from ..training import Trainer, normalize_weights
from .objective import ReverseKLObjective, check_alpha, draw, effective_sample_size, kl_estimate, log_q_importance
from .potentials import Potential

__all__ = ["PhysicsVAE"]

logger = logging.getLogger(__name__)

#: log σ² of the decoder noise at the start, in normalised units (σ = 0.14): a model that starts with
#: wide noise explains the spread by noise, which cannot split into modes, and collapses later.
INITIAL_DECODER_LOG_VAR = -4.0


class PhysicsVAE:
    """Learn a generative model and its latent CVs from a potential, with or without data.

    Minimises α·KL(p‖q) + (1 - α)·KL(q‖p) between the model q(x) of a
    :class:`mdcvkit.models.VariationalAutoEncoder` and the Boltzmann density p(x) ∝ exp(-β U(x))
    (:class:`ReverseKLObjective`), through :class:`mdcvkit.training.Trainer`. The physics term is
    tempered: training starts at ``beta_start`` and, each time early stopping ends a stage, β_s is
    raised to the largest value at which the estimated KL(q ‖ p_{β_s}) has grown by at most
    ``kl_threshold`` nats over its value at the current β_s, until β_s = β.

    Parameters
    ----------
    potential : mdcvkit.physics.Potential
        U(x) in kJ/mol of the model coordinates.
    beta : float
        Target inverse temperature in mol/kJ (1 / (R T); 0.401 at 300 K).
    n_cv : int, default 2
        Latent dimension.
    hidden : sequence of int, default (50, 100, 100)
        Encoder layers (the decoder mirrors them), as in Schöberl et al.
    alpha : float, default 0
        Weight of the data term; 0 needs no data, 1 is the data-only VAE.
    kl_threshold : float, default 0.5
        Largest growth of the estimated KL (nats) per tempering step; ``inf`` jumps straight to β
        (no tempering).
    beta_start : float, optional
        First β_s; default ``beta / 100``.
    reference : array_like, shape (n_features,), optional
        Coordinates the model starts around (e.g. a minimised structure) when there are no data.
    trainer : Trainer, optional
        Settings of each stage (epochs, patience, learning rate); default
        ``Trainer(max_epochs=300, patience=30, learning_rate=3e-3, seed=seed)``.
    batch_size, steps_per_epoch, n_validation, n_importance
        As in :class:`ReverseKLObjective`.
    max_stages : int, default 60
        Most tempering stages.
    seed : int, default 0

    Attributes
    ----------
    model_ : VariationalAutoEncoder
    history_ : xarray.Dataset
        Dim ``epoch``: ``beta_s``, ``stage``, losses, ``lower_bound``, ``upper_bound`` (nats per
        sample), ``ess`` (fraction).
    stages_ : xarray.Dataset
        Dim ``stage``: ``beta_s``, ``epochs`` and ``kl`` (estimated KL to p_{β_s} after the stage).

    References
    ----------
    M. Schöberl, N. Zabaras, P.-S. Koutsourelakis, arXiv:2002.10148 (2020).
    """

    def __init__(self, potential, beta, *, n_cv=2, hidden=(50, 100, 100), alpha=0.0, kl_threshold=0.5,
                 beta_start=None, reference=None, trainer=None, batch_size=256, steps_per_epoch=10,
                 n_validation=1024, n_importance=16, max_stages=60, seed=0):
        if not isinstance(potential, Potential):
            raise TypeError(f"potential must be an mdcvkit.physics Potential (TorchPotential, OpenMMPotential), "
                            f"not {type(potential).__name__}")
        self.potential = potential
        self.beta = check_number("beta", beta, strict=True, example="1.0 (mol/kJ)")
        self.n_cv, self.hidden, self.alpha = n_cv, hidden, check_alpha(alpha)
        if isinstance(kl_threshold, (str, bytes)) or not float(kl_threshold) > 0:
            raise ValueError(f"kl_threshold={kl_threshold!r} must be a positive number of nats, e.g. 0.5 "
                             "(inf: no tempering)")
        self.kl_threshold = float(kl_threshold)
        self.beta_start = None if beta_start is None else check_number("beta_start", beta_start, strict=True,
                                                                       example=f"{self.beta / 100:g}")
        if self.beta_start is not None and self.beta_start > self.beta:
            raise ValueError(f"beta_start={beta_start!r} must not exceed beta={beta!r}")
        self.reference = reference
        self.trainer = trainer
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.n_validation, self.n_importance = n_validation, n_importance
        check_int(max_stages, "max_stages")
        self.max_stages = max_stages
        self.seed = check_seed(seed)

    def _objective(self, beta_s):
        return ReverseKLObjective(self.potential, beta_s, alpha=self.alpha, batch_size=self.batch_size,
                                  steps_per_epoch=self.steps_per_epoch, n_validation=self.n_validation,
                                  n_importance=self.n_importance, seed=self.seed)

    def _initial_model(self):
        torch.manual_seed(self.seed)
        model = VariationalAutoEncoder(self.potential.n_features, self.n_cv, hidden=self.hidden)
        with torch.no_grad():  # the latent space, not the decoder noise, is to carry the spread (see findings)
            model.decoder_log_var.fill_(INITIAL_DECODER_LOG_VAR)
        if self.reference is not None:
            reference = torch.as_tensor(np.asarray(self.reference, dtype=np.float32)).reshape(-1)
            if reference.shape != (self.potential.n_features,):
                raise ValueError(f"reference has {reference.numel()} values; pass one configuration of "
                                 f"{self.potential.n_features} coordinates")
            model.normalization.mean.copy_(reference)
        return model

    def fit(self, features=None, weights=None):
        """Train the model; data frames are needed when ``alpha > 0``.

        Parameters
        ----------
        features : array_like, shape (n_frames, n_features), optional
            Data frames in the potential's coordinates (e.g. ``potential.features(positions)``).
        weights : array_like, shape (n_frames,), optional
            Frame weights.

        Returns
        -------
        self
        """
        if (features is None) != (self.alpha == 0):
            raise ValueError(f"alpha={self.alpha:g} " + ("needs data frames: pass features" if features is None
                             else "uses no data: pass alpha > 0 to train on features too"))
        trainer = self.trainer or Trainer(max_epochs=300, patience=30, learning_rate=3e-3, seed=self.seed)
        model = self._initial_model()
        beta_s = self.beta if self.alpha == 1 else min(self.beta_start or self.beta / 100, self.beta)
        histories, stages = [], []
        for stage in range(self.max_stages):
            result = trainer.fit(model, features, weights=weights, objective=self._objective(beta_s))
            model = result.model
            histories.append(result.history.assign_coords(stage=("epoch", [stage] * result.history.sizes["epoch"])))
            _, _, log_q, energy, log_jacobian = self._samples(model)
            stages.append((beta_s, result.history.sizes["epoch"], float(kl_estimate(log_q, energy, log_jacobian,
                                                                                    beta_s))))
            logger.info("stage %d: beta_s=%.4g, KL %.3g", stage, beta_s, stages[-1][2])
            if beta_s >= self.beta:
                break
            beta_s = self._next_beta(beta_s, log_q, energy, log_jacobian)
        else:
            logger.warning("tempering stopped after max_stages=%d at beta_s=%.4g < beta=%.4g", self.max_stages,
                           beta_s, self.beta)
        self.model_ = model
        history = xr.concat([h.drop_vars("epoch") for h in histories], dim="epoch")
        self.history_ = history.assign_coords(epoch=np.arange(history.sizes["epoch"])).assign_attrs(
            long_name="reverse-KL training", beta_units="mol/kJ", bound_units="nats per sample")
        values = np.array(stages)
        self.stages_ = xr.Dataset({"beta_s": ("stage", values[:, 0]), "epochs": ("stage", values[:, 1].astype(int)),
                                   "kl": ("stage", values[:, 2])}, coords={"stage": np.arange(len(values))},
                                  attrs={"kl_units": "nats", "beta_units": "mol/kJ"})
        return self

    def _samples(self, model, n=None, seed=None):
        """Latent points z and samples x of ``model`` (torch), and log q̂(x), U(x), log J(x) (numpy, float64)."""
        generator = torch.Generator().manual_seed(self.seed + 1 if seed is None else seed)
        n = n or self.n_validation
        with torch.no_grad():
            z = torch.randn(n, model.n_cv, generator=generator)
            x, _ = draw(model, z, torch.randn(n, model.n_features, generator=generator))
            log_q = log_q_importance(model, x, self.n_importance, generator)
            energy, log_jacobian = self.potential.energy(x), self.potential.log_jacobian(x)
        return z, x, *(t.double().numpy() for t in (log_q, energy, log_jacobian))

    def _next_beta(self, beta_s, log_q, energy, log_jacobian):
        """The largest β' in (β_s, β] whose estimated KL exceeds that at β_s by at most ``kl_threshold``."""
        now = kl_estimate(log_q, energy, log_jacobian, beta_s)
        candidates = np.geomspace(beta_s, self.beta, 200)[1:]
        fine = kl_estimate(log_q, energy, log_jacobian, candidates) <= now + self.kl_threshold
        if not np.isfinite(self.kl_threshold) or fine.all():
            return self.beta
        return float(candidates[max(int(np.argmin(fine)) - 1, 0)])  # the first step at least

    def sample(self, n, seed=0):
        """Draw ``n`` samples of the fitted model, with energies and importance weights.

        Parameters
        ----------
        n : int
        seed : int, default 0

        Returns
        -------
        xarray.Dataset
            ``x`` (sample, feature) coordinates, ``z`` (sample, cv) latent points, ``energy``
            (kJ/mol), ``log_weight`` = -β U + log J - log q̂(x) and ``weight`` (normalised to sum 1),
            for reweighting averages to the target; attrs ``ess``.
        """
        if not hasattr(self, "model_"):
            raise ValueError("this PhysicsVAE is not fitted yet; call fit() before sample()")
        check_int(n, "n", 2, "pass e.g. n=1000")
        z, x, log_q, energy, log_jacobian = self._samples(self.model_, n, check_seed(seed))
        log_w = -self.beta * energy + log_jacobian - log_q
        return xr.Dataset(
            {"x": (("sample", "feature"), x.numpy()), "z": (("sample", "cv"), z.numpy()),
             "energy": ("sample", energy, {"units": "kJ/mol"}), "log_weight": ("sample", log_w),
             "weight": ("sample", normalize_weights(n, log_weights=log_w))},
            coords={"sample": np.arange(n)}, attrs={"ess": effective_sample_size(log_w), "beta": self.beta})

    def transform(self, features):
        """Latent CVs (encoder means) of coordinates ``features`` (n, n_features) -> (n, n_cv) numpy array."""
        if not hasattr(self, "model_"):
            raise ValueError("this PhysicsVAE is not fitted yet; call fit() before transform()")
        with torch.no_grad():
            return self.model_.encode(torch.as_tensor(np.asarray(features), dtype=torch.float32)).numpy()
