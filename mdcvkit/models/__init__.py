"""The autoencoder family. ``MODELS`` maps the names accepted by ``AutoencoderCV(model=...)`` to classes."""

from .ae import AutoEncoder
from .averaging import affine_cv, average_autoencoders
from .base import BaseAutoencoder, Normalization, apply_in_chunks
from .dae import DenoisingAutoEncoder
from .gmvae import GaussianMixtureVAE
from .laplace import LaplaceApproximation, fit_laplace
from .mlp import ACTIVATIONS, FeedForward
from .priors import PRIORS, ARDPrior, GaussianPrior, make_prior
from .tae import TimeLaggedAutoEncoder
from .vae import VariationalAutoEncoder
from .wae import WassersteinAutoEncoder

#: Models by the name accepted in ``AutoencoderCV(model=...)``.
MODELS = {
    "ae": AutoEncoder,
    "tae": TimeLaggedAutoEncoder,
    "vae": VariationalAutoEncoder,
    "gmvae": GaussianMixtureVAE,
    "wae": WassersteinAutoEncoder,
    "dae": DenoisingAutoEncoder,
}

__all__ = [
    "MODELS",
    "ACTIVATIONS",
    "PRIORS",
    "ARDPrior",
    "AutoEncoder",
    "BaseAutoencoder",
    "DenoisingAutoEncoder",
    "FeedForward",
    "GaussianMixtureVAE",
    "GaussianPrior",
    "LaplaceApproximation",
    "Normalization",
    "TimeLaggedAutoEncoder",
    "VariationalAutoEncoder",
    "WassersteinAutoEncoder",
    "affine_cv",
    "apply_in_chunks",
    "average_autoencoders",
    "fit_laplace",
    "make_prior",
]
