"""Matplotlib figures of mdcvkit results.

Every function takes ``ax=None`` (a new figure is made when it is ``None``),
passes extra keyword arguments on to the matplotlib call that draws the data,
and returns the axes (or an array of axes for figure grids). Axis labels come
from the ``long_name`` and ``units`` attributes of the xarray objects.
"""

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

__all__ = ["loss", "free_energy_surface", "ramachandran", "implied_timescales", "ck_test"]

#: kT at 300 K in kJ/mol.
KT_300K = 2.494339


def _axes(ax):
    """Return ``ax``, or the axes of a new figure when ``ax`` is None."""
    if ax is None:
        _, ax = plt.subplots()
    return ax


def _label(obj, default=""):
    """Axis label ``long_name (units)`` from the attributes of an xarray object."""
    attrs = getattr(obj, "attrs", {})
    name = attrs.get("long_name", getattr(obj, "name", None) or default)
    units = attrs.get("units")
    return f"{name} ({units})" if units else str(name)


def loss(history, ax=None, **kwargs):
    """Training and validation loss per epoch, with the restored (best) epoch marked.

    Parameters
    ----------
    history : xarray.Dataset
        ``results.loss`` of an :class:`mdcvkit.AutoencoderCV` (dim ``epoch``).
    ax : matplotlib.axes.Axes, optional
    **kwargs
        Passed to ``ax.plot``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _axes(ax)
    for name in ("train", "validation"):
        ax.plot(history["epoch"], history[name], label=name, **kwargs)
    best = history.attrs.get("best_epoch")
    if best is not None:
        ax.axvline(best, color="0.5", ls=":", label=f"best epoch {best}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(_label(history, "loss"))
    ax.legend()
    return ax


def free_energy_surface(cv, ax=None, kT=KT_300K, bins=60, weights=None, levels=20, **kwargs):
    """Free energy F = -kT ln p along a 1-D or 2-D CV, zero at its minimum.

    Parameters
    ----------
    cv : xarray.DataArray or array_like, shape (n_frames,) or (n_frames, n_cv)
        CV time series (``results.cv``); the first two components are used.
    ax : matplotlib.axes.Axes, optional
    kT : float, default 2.494 (300 K)
        Thermal energy in kJ/mol.
    bins : int, default 60
        Histogram bins per dimension.
    weights : array_like, shape (n_frames,), optional
        Frame weights (e.g. to unbias biased frames).
    levels : int, default 20
        Contour levels of the 2-D surface.
    **kwargs
        Passed to ``ax.plot`` (1-D) or ``ax.contourf`` (2-D).

    Returns
    -------
    matplotlib.axes.Axes
    """
    values = np.asarray(cv, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    if values.ndim != 2 or len(values) < 2:
        raise ValueError(
            f"cv must have shape (n_frames,) or (n_frames, n_cv) with n_frames >= 2; got {values.shape}"
        )
    ax = _axes(ax)
    long_name = getattr(cv, "attrs", {}).get("long_name", "CV")
    if values.shape[1] == 1:
        counts, edges = np.histogram(values[:, 0], bins=bins, weights=weights)
        with np.errstate(divide="ignore"):
            energy = -kT * np.log(counts / counts.sum())
        ax.plot(0.5 * (edges[1:] + edges[:-1]), energy - energy[np.isfinite(energy)].min(), **kwargs)
        ax.set_xlabel(f"{long_name} 1")
        ax.set_ylabel("free energy (kJ/mol)")
        return ax
    counts, xedges, yedges = np.histogram2d(values[:, 0], values[:, 1], bins=bins, weights=weights)
    with np.errstate(divide="ignore"):
        energy = -kT * np.log(counts / counts.sum())
    energy -= energy[np.isfinite(energy)].min()
    centres = 0.5 * (xedges[1:] + xedges[:-1]), 0.5 * (yedges[1:] + yedges[:-1])
    kwargs.setdefault("cmap", "viridis")
    filled = ax.contourf(*centres, np.ma.masked_invalid(energy).T, levels=levels, **kwargs)
    ax.figure.colorbar(filled, ax=ax, label="free energy (kJ/mol)")
    ax.set_xlabel(f"{long_name} 1")
    ax.set_ylabel(f"{long_name} 2")
    return ax


def ramachandran(phi, psi, color=None, ax=None, **kwargs):
    """Ramachandran scatter plot of φ/ψ (degrees), optionally coloured by a CV.

    Parameters
    ----------
    phi, psi : array_like, shape (n_frames,)
        Backbone dihedrals in degrees.
    color : array_like, shape (n_frames,), optional
        Values to colour the points by (e.g. one CV component); a colour bar is added.
    ax : matplotlib.axes.Axes, optional
    **kwargs
        Passed to ``ax.scatter``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _axes(ax)
    kwargs.setdefault("s", 2)
    points = ax.scatter(phi, psi, c=color, **kwargs)
    if color is not None:
        ax.figure.colorbar(points, ax=ax, label=_label(color, "CV"))
    ax.set(xlim=(-180, 180), ylim=(-180, 180), xticks=range(-180, 181, 90), yticks=range(-180, 181, 90),
           xlabel=r"$\phi$ (deg)", ylabel=r"$\psi$ (deg)", aspect="equal")
    return ax


def implied_timescales(ds, ax=None, processes=None, lag=None, **kwargs):
    """Implied timescales against lag time, with their intervals, as in PyEMMA and deeptime figures.

    The maximum-likelihood timescales are drawn as lines with markers and the posterior
    intervals shaded; the black line is timescale = lag time, and the grey region below it
    holds processes too fast to be resolved at that lag.

    Parameters
    ----------
    ds : xarray.Dataset
        Result of :func:`mdcvkit.msm.implied_timescales` (dims ``lag``, ``process``).
    ax : matplotlib.axes.Axes, optional
    processes : int or sequence of int, optional
        Process numbers to draw (1 = slowest); all by default.
    lag : float, optional
        Lag time (same units as ``ds.lag_time``) to mark with a vertical line, e.g. the
        lag chosen for the MSM.
    **kwargs
        Passed to ``ax.plot`` for each process.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if not isinstance(ds, xr.Dataset) or "timescales" not in ds or "process" not in ds.dims:
        raise ValueError("ds must be the Dataset returned by mdcvkit.msm.implied_timescales (variables "
                         f"timescales, lower, upper over dims lag and process); got {type(ds).__name__}")
    ax = _axes(ax)
    x = ds["lag_time"] if "lag_time" in ds.coords else ds["lag"]
    lag_times = np.asarray(x, dtype=float)
    selected = ds.process.values if processes is None else np.atleast_1d(processes)
    kwargs.setdefault("marker", "o")
    values = [lag_times]
    for process in selected:
        one = ds.sel(process=process)
        (line,) = ax.plot(lag_times, one.timescales, label=f"process {process}", **kwargs)
        if "lower" in ds and "upper" in ds:
            ax.fill_between(lag_times, one.lower, one.upper, color=line.get_color(), alpha=0.25, lw=0)
            values += [one.lower.values, one.upper.values]
        values.append(one.timescales.values)
    values = np.concatenate([np.ravel(v) for v in values])
    values = values[np.isfinite(values) & (values > 0)]
    bottom = 0.5 * values.min()
    ax.plot(lag_times, lag_times, color="k", lw=1)
    ax.fill_between(lag_times, bottom, lag_times, color="0.8", lw=0, zorder=0)
    if lag is not None:
        units = x.attrs.get("units", "")
        ax.axvline(lag, color="k", ls=":", lw=1, label=f"lag {lag:g} {units}".rstrip())
    ax.set_yscale("log")
    ax.set_ylim(bottom=bottom, top=2 * values.max())
    ax.set_xlim(lag_times.min(), lag_times.max())
    ax.set_xlabel(_label(x, "lag time"))
    ax.set_ylabel(_label(ds["timescales"], "implied timescale"))
    ax.legend(fontsize="small")
    return ax


def ck_test(ds, axes=None, **kwargs):
    """Chapman–Kolmogorov test as a grid of set-to-set panels.

    Panel (i, j) shows the probability to be in set j at lag time kτ after starting in set i:
    predicted by the MSM at lag τ (line, interval shaded) and estimated at kτ (points with
    error bars). Estimates outside the predicted interval are circled in red.

    Parameters
    ----------
    ds : xarray.Dataset
        Result of :func:`mdcvkit.msm.ck_test` (dims ``mlag``, ``from_set``, ``to_set``).
    axes : numpy.ndarray of matplotlib.axes.Axes, shape (n_sets, n_sets), optional
        A new figure with shared axes is made by default.
    **kwargs
        Passed to ``ax.plot`` for the predictions.

    Returns
    -------
    numpy.ndarray of matplotlib.axes.Axes, shape (n_sets, n_sets)
    """
    if not isinstance(ds, xr.Dataset) or "predicted" not in ds or "from_set" not in ds.dims:
        raise ValueError("ds must be the Dataset returned by mdcvkit.msm.ck_test (variables predicted, "
                         f"estimated and bounds over dims mlag, from_set, to_set); got {type(ds).__name__}")
    n_sets = ds.sizes["from_set"]
    if axes is None:
        _, axes = plt.subplots(n_sets, n_sets, sharex=True, sharey=True, squeeze=False,
                               figsize=(2.6 * n_sets, 2.2 * n_sets), constrained_layout=True)
    axes = np.asarray(axes)
    if axes.shape != (n_sets, n_sets):
        raise ValueError(f"axes has shape {axes.shape}; pass a ({n_sets}, {n_sets}) array of axes for "
                         f"{n_sets} sets, or axes=None")
    x = ds["lag_time"] if "lag_time" in ds.coords else ds["mlag"]
    times = np.asarray(x, dtype=float)
    kwargs.setdefault("color", "C0")
    for i in range(n_sets):
        for j in range(n_sets):
            ax = axes[i, j]
            one = ds.isel(from_set=i, to_set=j)
            ax.plot(times, one.predicted, label="predicted", **kwargs)
            ax.fill_between(times, one.predicted_lower, one.predicted_upper, color=kwargs["color"],
                            alpha=0.25, lw=0)
            estimated = one.estimated.values
            error = np.abs(np.stack([estimated - one.estimated_lower.values,
                                     one.estimated_upper.values - estimated]))
            ax.errorbar(times, estimated, yerr=error, fmt="o", ms=3, color="C1", capsize=2, label="estimated")
            if "passed" in ds:
                failed = ~one.passed.values
                if failed.any():
                    ax.plot(times[failed], estimated[failed], "o", ms=8, mfc="none", mec="red",
                            label="outside prediction")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"set {i} → set {j}", fontsize="small")
            if i == n_sets - 1:
                ax.set_xlabel(_label(x, "lag time"))
            if j == 0:
                ax.set_ylabel("probability")
    axes[0, 0].legend(fontsize="x-small")
    return axes


# ---------------------------------------------------------------------------------------------------------
# Feature importance of a CV (mdcvkit.importance); block owned by the model-family work
# ---------------------------------------------------------------------------------------------------------
__all__.append("feature_importance")


def feature_importance(importance, ax=None, top=None, **kwargs):
    """Bar chart of the sensitivity of each CV to each feature, atom or residue.

    Parameters
    ----------
    importance : xarray.DataArray, dims ("cv", level)
        From :meth:`mdcvkit.AutoencoderCV.feature_importance` (level
        ``feature``, ``atom`` or ``residue``).
    ax : matplotlib.axes.Axes, optional
    top : int, optional
        Show only the ``top`` entries with the largest total importance over CVs.
    **kwargs
        Passed to ``ax.bar``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if not isinstance(importance, xr.DataArray) or importance.ndim != 2 or importance.dims[0] != "cv":
        raise ValueError("importance must be a DataArray with dims ('cv', level) from "
                         "AutoencoderCV.feature_importance()")
    ax = _axes(ax)
    level = importance.dims[1]
    order = np.argsort(-importance.sum("cv").values, kind="stable")
    if top is not None:
        if not isinstance(top, (int, np.integer)) or top < 1:
            raise ValueError(f"top={top!r} must be a positive integer, e.g. 10")
        order = order[:top]
    shown = importance.isel({level: order})
    names = {"feature": "label", "atom": "name", "residue": "resname"}
    if level == "atom":
        ticks = [f"{n}{i}" for n, i in zip(shown["name"].values, shown["index"].values, strict=True)]
    elif level == "residue":
        ticks = [f"{n}{i}" for n, i in zip(shown["resname"].values, shown["resid"].values, strict=True)]
    else:
        ticks = [str(t) for t in shown[names[level]].values] if names[level] in shown.coords else \
            [str(i) for i in order]
    n_cv = shown.sizes["cv"]
    width = 0.8 / n_cv
    positions = np.arange(len(order))
    for k in range(n_cv):
        ax.bar(positions + (k - (n_cv - 1) / 2) * width, shown.isel(cv=k).values, width=width,
               label=f"CV {int(shown['cv'].values[k])}", **kwargs)
    ax.set_xticks(positions)
    ax.set_xticklabels(ticks, rotation=90, fontsize="small")
    ax.set_xlabel(level)
    ax.set_ylabel(_label(importance, "importance"))
    if n_cv > 1:
        ax.legend(fontsize="small")
    return ax
