"""The autoencoder family. ``MODELS`` maps the names accepted by ``AutoencoderCV(model=...)`` to classes."""

from .ae import AutoEncoder
from .averaging import affine_cv, average_autoencoders
from .base import BaseAutoencoder, Normalization, apply_in_chunks
from .dae import DenoisingAutoEncoder
from .gmvae import GaussianMixtureVAE
from .mlp import ACTIVATIONS, FeedForward
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
    "AutoEncoder",
    "BaseAutoencoder",
    "DenoisingAutoEncoder",
    "FeedForward",
    "GaussianMixtureVAE",
    "Normalization",
    "TimeLaggedAutoEncoder",
    "VariationalAutoEncoder",
    "WassersteinAutoEncoder",
    "affine_cv",
    "apply_in_chunks",
    "average_autoencoders",
]
