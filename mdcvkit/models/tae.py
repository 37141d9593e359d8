"""The time-lagged autoencoder: encode x(t), decode x(t + lag)."""

from .ae import AutoEncoder

__all__ = ["TimeLaggedAutoEncoder"]


class TimeLaggedAutoEncoder(AutoEncoder):
    """Bottleneck autoencoder trained to predict the future: x(t) -> CV -> x(t + lag).

    The network is the one of :class:`mdcvkit.models.AutoEncoder`; only the
    target differs. The trainer pairs each frame x(t) with x(t + lag) of the
    same trajectory (pairs never cross trajectory boundaries or gaps of a
    frame selection), and the loss is the mean squared error between the
    decoded CV of x(t) and the normalised x(t + lag), per frame averaged
    over features. Maximising the predictability of the lagged frame makes
    the CV follow the slow processes (for a linear network the CV spans
    the leading TICA/CCA subspace).

    Parameters
    ----------
    n_features, n_cv, hidden, activation, scale_groups
        As in :class:`mdcvkit.models.AutoEncoder`.

    Notes
    -----
    ``time_lagged = True``: :class:`mdcvkit.AutoencoderCV` requires
    ``lag >= 1`` (in analysed frames) for this model.

    References
    ----------
    C. Wehmeyer, F. Noé, "Time-lagged autoencoders: Deep learning of slow collective variables
    for molecular kinetics", J. Chem. Phys. 148, 241703 (2018).
    """

    time_lagged = True
