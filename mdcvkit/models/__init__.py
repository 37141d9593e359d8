"""The autoencoder family. ``MODELS`` maps the names accepted by ``AutoencoderCV(model=...)`` to classes."""

from .ae import AutoEncoder
from .base import BaseAutoencoder, Normalization
from .mlp import ACTIVATIONS, FeedForward

#: Models by the name accepted in ``AutoencoderCV(model=...)``.
MODELS = {"ae": AutoEncoder}

__all__ = ["MODELS", "ACTIVATIONS", "AutoEncoder", "BaseAutoencoder", "FeedForward", "Normalization"]
