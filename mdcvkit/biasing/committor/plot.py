"""Figures of committor learning, in the style of :mod:`mdcvkit.plot` (``ax=None``, axes returned)."""

import numpy as np

from ...plot import _axes, _label

__all__ = ["committor_scatter", "window_overlap", "pb_histogram"]


def committor_scatter(q, reference, ax=None, **kwargs):
    """Learned committor against a reference (an exact committor, or φ) frame by frame.

    Parameters
    ----------
    q : array_like or xarray.DataArray, shape (n_frames,)
        Learned committor, e.g. ``loop.results.frames["q"]``.
    reference : array_like, shape (n_frames,)
        Exact committor (the diagonal is drawn) or another coordinate.
    ax : matplotlib.axes.Axes, optional
    **kwargs
        Passed to ``ax.scatter``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    q, reference = np.asarray(q, dtype=float).ravel(), np.asarray(reference, dtype=float).ravel()
    if q.shape != reference.shape:
        raise ValueError(f"q has {q.size} values and reference {reference.size}; pass one of each per frame")
    ax = _axes(ax)
    ax.scatter(reference, q, **{"s": 4, "alpha": 0.5, **kwargs})
    if np.nanmin(reference) >= 0 and np.nanmax(reference) <= 1:
        ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1, label="exact")
        ax.legend()
    ax.set_xlabel("reference")
    ax.set_ylabel("learned committor q")
    return ax


def window_overlap(loop, ax=None, **kwargs):
    """MBAR overlap matrix of the last iteration's windows, labelled by target q.

    Parameters
    ----------
    loop : mdcvkit.biasing.Committor
        After ``run()``.
    ax : matplotlib.axes.Axes, optional
    **kwargs
        Passed to ``ax.imshow``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    overlap = getattr(loop.results, "overlap", None)
    if overlap is None:
        raise ValueError("loop has no window overlap: call run() with max_iterations >= 1 first")
    windows = loop.results.windows
    targets = windows["target"].values[windows["iteration"].values == windows["iteration"].values.max()]
    ax = _axes(ax)
    image = ax.imshow(overlap, origin="lower", **{"cmap": "viridis", "vmin": 0, **kwargs})
    ticks = np.arange(len(targets))
    ax.set_xticks(ticks, [f"{t:.2f}" for t in targets], rotation=90)
    ax.set_yticks(ticks, [f"{t:.2f}" for t in targets])
    ax.set_xlabel("window target q")
    ax.set_ylabel("window target q")
    ax.figure.colorbar(image, ax=ax, label="MBAR overlap")
    return ax


def pb_histogram(test, ax=None, bins=10, **kwargs):
    """Histogram of p_B from :meth:`~mdcvkit.biasing.Committor.committor_test`, with p marked.

    Parameters
    ----------
    test : xarray.Dataset
        What ``committor_test`` returned.
    ax : matplotlib.axes.Axes, optional
    bins : int, default 10
        Bins over [0, 1].
    **kwargs
        Passed to ``ax.hist``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if "p_b" not in getattr(test, "data_vars", {}):
        raise ValueError(f"test must be the Dataset committor_test returns (with p_b), not {type(test).__name__}")
    ax = _axes(ax)
    p_b = test["p_b"].values
    ax.hist(p_b[np.isfinite(p_b)], bins=np.linspace(0, 1, bins + 1), **{"color": "C0", **kwargs})
    ax.axvline(test.attrs["p"], color="k", ls="--", label=f"p = {test.attrs['p']}")
    ax.axvline(np.nanmean(p_b), color="C3", label=f"mean p_B = {np.nanmean(p_b):.2f}")
    ax.set_xlabel(_label(test["p_b"]))
    ax.set_ylabel("configurations")
    ax.legend()
    return ax
