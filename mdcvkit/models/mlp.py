"""The one network block of the autoencoder family: a feed-forward MLP from a list of sizes."""

from torch import nn

from .._checks import is_int

__all__ = ["ACTIVATIONS", "FeedForward"]

#: Activation functions by name; ``None`` gives a linear network.
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, None: None}


class FeedForward(nn.Sequential):
    """Multilayer perceptron ``layers[0] -> layers[1] -> … -> layers[-1]``.

    Parameters
    ----------
    layers : sequence of int
        Sizes of the input, hidden and output layers (at least two entries).
    activation : {"tanh", "relu", "elu", None}, default "tanh"
        Activation after every layer but the last; None makes the network linear.
    """

    def __init__(self, layers, activation="tanh"):
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise TypeError(f"layers={layers!r} must be a list of layer sizes, e.g. [30, 40, 2]")
        layers = list(layers)
        if len(layers) < 2 or not all(is_int(n) and n >= 1 for n in layers):
            raise ValueError(f"layers={layers} must hold at least two positive integer sizes, e.g. [30, 40, 2]")
        layers = [int(n) for n in layers]
        if activation not in ACTIVATIONS:
            valid = ", ".join(repr(k) for k in ACTIVATIONS)
            raise ValueError(f"activation={activation!r} is not known; use one of {valid}")
        modules = []
        for k, (n_in, n_out) in enumerate(zip(layers[:-1], layers[1:], strict=True)):
            modules.append(nn.Linear(n_in, n_out))
            if activation is not None and k < len(layers) - 2:
                modules.append(ACTIVATIONS[activation]())
        super().__init__(*modules)
        self.layers = layers
