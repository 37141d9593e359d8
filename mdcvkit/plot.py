"""Matplotlib figures of mdcvkit results.

Every function takes ``ax=None`` (a new figure is made when it is ``None``),
passes extra keyword arguments on to the matplotlib call that draws the data,
and returns the axes (or an array of axes for figure grids). Axis labels come
from the ``long_name`` and ``units`` attributes of the xarray objects.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from .ensembles import _grid
from .systems import MOLAR_GAS_CONSTANT

__all__ = ["loss", "free_energy_surface", "ramachandran", "implied_timescales", "ck_test"]



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
    if not isinstance(history, xr.Dataset) or "epoch" not in history.dims \
            or not {"train", "validation"} <= set(history.data_vars):
        raise ValueError("history must be results.loss of a fitted AutoencoderCV (a Dataset with train and "
                         f"validation over dim epoch); got {type(history).__name__}")
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


def free_energy_surface(cv, ax=None, *, temperature=300.0, bins=60, weights=None, levels=20, kT=None, **kwargs):
    """Free energy F = -kT ln p along a 1-D or 2-D CV, zero at its minimum.

    Parameters
    ----------
    cv : xarray.DataArray or array_like, shape (n_frames,) or (n_frames, n_cv)
        CV time series (``results.cv``); the first two components are used.
    ax : matplotlib.axes.Axes, optional
    temperature : float, default 300.0
        K; kT = R T sets the energy scale (kJ/mol).
    kT : float, optional
        Deprecated: the thermal energy in kJ/mol, instead of ``temperature`` (DeprecationWarning).
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
    from ._checks import check_int, check_number
    from .metrics import _as_2d
    from .training import normalize_weights

    values = _as_2d(cv, "cv")
    if kT is None:
        kT = MOLAR_GAS_CONSTANT * check_number("temperature", temperature, strict=True, example="300 (K)")
    else:
        warnings.warn("kT= is deprecated: pass temperature= in K (kT = R T)", DeprecationWarning, stacklevel=2)
        kT = check_number("kT", kT, strict=True, example="2.494 (kJ/mol at 300 K)")
    check_int(bins, "bins", fix="pass the number of histogram bins per dimension, e.g. bins=60")
    weights = normalize_weights(len(values), weights)
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
    sizes = {"phi": np.size(phi), "psi": np.size(psi)}
    if color is not None:
        sizes["color"] = np.size(color)
    if len(set(sizes.values())) > 1:
        raise ValueError(f"phi, psi and color need one value per frame each; got sizes {sizes}")
    for name, values in (("phi", phi), ("psi", psi)):
        try:
            angles = np.asarray(values, dtype=float)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be dihedral angles in degrees, not {type(values).__name__}") from err
        if not np.all(np.isfinite(angles)):
            raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(angles)))} NaN or infinite angles; drop those "
                             "frames first (matplotlib would leave them out silently)")
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


# ---------------------------------------------------------------------------------------------------------
# Ensemble comparison figures: the Dataset of mdcvkit.metrics.compare_ensembles (issue 7, part 2)
# ---------------------------------------------------------------------------------------------------------
__all__ += ["rmsd_histograms", "rmsf", "pca_comparison", "ramachandran_comparison", "fes_comparison"]


def _comparison(ds, names, hint=""):
    """Check that ``ds`` is a compare_ensembles Dataset holding the variables ``names``."""
    if not isinstance(ds, xr.Dataset) or "reference_rmsd" not in ds:
        raise ValueError("ds must be the Dataset returned by mdcvkit.metrics.compare_ensembles; "
                         f"got {type(ds).__name__}")
    missing = [name for name in names if name not in ds]
    if missing:
        raise ValueError(f"ds has no {', '.join(missing)}; {hint or 'recompute it with compare_ensembles'}")


def _axes_row(axes, n, width=4.0):
    """``axes`` as a flat array of ``n`` axes, or the axes of a new 1 × n figure when it is None."""
    if axes is None:
        _, axes = plt.subplots(1, n, figsize=(width * n, 3.6), squeeze=False, constrained_layout=True)
    axes = np.asarray(axes).ravel()
    if len(axes) != n:
        raise ValueError(f"axes holds {len(axes)} axes; pass {n} axes (one per panel) or axes=None")
    return axes


def _interval_text(ds, name, fmt=".3g"):
    """``value [lower, upper]`` of a compare_ensembles distance, with its baseline when there is one."""
    text = f"{float(ds[name]):{fmt}}"
    if f"{name}_interval" in ds:
        lower, upper = ds[f"{name}_interval"].values
        text += f" [{lower:{fmt}}, {upper:{fmt}}]"
    if f"baseline_{name}" in ds:
        text += f", MD halves {float(ds['baseline_' + name]):{fmt}}"
    return text


def rmsd_histograms(ds, ax=None, **kwargs):
    """Histograms of the RMSD to the reference structure of both ensembles (Ojeda-May Fig. 2).

    Both are drawn as probability densities on the binning of ``rmsd_jsd``
    (``ds.attrs["rmsd_bins"]`` equal-width bins over the shared range); the
    title gives the Wasserstein-1 distance with its bootstrap interval and
    MD-halves baseline.

    Parameters
    ----------
    ds : xarray.Dataset
        Result of :func:`mdcvkit.metrics.compare_ensembles`.
    ax : matplotlib.axes.Axes, optional
    **kwargs
        Passed to ``ax.hist`` for both ensembles.

    Returns
    -------
    matplotlib.axes.Axes
    """
    _comparison(ds, ["reference_rmsd", "generated_rmsd"])
    ax = _axes(ax)
    values = np.concatenate([ds.reference_rmsd.values, ds.generated_rmsd.values])
    _, (edges,) = _grid(values[:, None], ds.attrs.get("rmsd_bins", 50))  # the binning of rmsd_jsd
    kwargs.setdefault("histtype", "step")
    for name in ("reference", "generated"):
        ax.hist(ds[f"{name}_rmsd"].values, bins=edges, density=True, label=name, **kwargs)
    units = ds.reference_rmsd.attrs["units"]
    ax.set_xlabel(f"RMSD to the reference structure ({units})")
    ax.set_ylabel(f"probability density (1/{units})")
    ax.set_title(f"W₁ = {_interval_text(ds, 'rmsd_wasserstein')} {units}", fontsize="small")
    ax.legend(fontsize="small")
    return ax


def rmsf(ds, ax=None, **kwargs):
    """RMSF per atom of both ensembles (Ojeda-May Fig. 3), against residue number when one atom per residue.

    Parameters
    ----------
    ds : xarray.Dataset
        Result of :func:`mdcvkit.metrics.compare_ensembles`.
    ax : matplotlib.axes.Axes, optional
    **kwargs
        Passed to ``ax.plot`` for both ensembles.

    Returns
    -------
    matplotlib.axes.Axes
    """
    _comparison(ds, ["reference_rmsf", "generated_rmsf"])
    ax = _axes(ax)
    resids = ds["resid"].values
    per_residue = len(np.unique(resids)) == len(resids)
    x = resids if per_residue else ds["atom"].values
    for name in ("reference", "generated"):
        ax.plot(x, ds[f"{name}_rmsf"].values, label=name, **kwargs)
    ax.set_xlabel("residue" if per_residue else "atom")
    ax.set_ylabel(f"RMSF ({ds.reference_rmsf.attrs['units']})")
    ax.set_title(f"Pearson r = {_interval_text(ds, 'rmsf_pearson')}; ratio = "
                 f"{_interval_text(ds, 'rmsf_ratio_mean')}", fontsize="small")
    ax.legend(fontsize="small")
    return ax


def pca_comparison(ds, axes=None, kind="density", **kwargs):
    """Both ensembles on PC1–PC2 of the reference, side by side on the same limits (Ojeda-May Fig. 4).

    Parameters
    ----------
    ds : xarray.Dataset
        Result of :func:`mdcvkit.metrics.compare_ensembles`.
    axes : sequence of 2 matplotlib.axes.Axes, optional
        Reference and generated panels; a new 1 × 2 figure by default.
    kind : {"density", "scatter"}, default "density"
        2-D histogram (``ds.attrs["pca_bins"]`` bins per axis, shared range,
        one log colour scale for both) or one point per frame.
    **kwargs
        Passed to ``ax.pcolormesh`` or ``ax.scatter``.

    Returns
    -------
    numpy.ndarray of matplotlib.axes.Axes, shape (2,)
    """
    import matplotlib.colors

    kinds = ("density", "scatter")
    if kind not in kinds:
        raise ValueError(f"kind={kind!r} is not known; use one of {list(kinds)}")
    _comparison(ds, ["reference_pca", "generated_pca"])
    axes = _axes_row(axes, 2)
    both = np.concatenate([ds.reference_pca.values, ds.generated_pca.values])
    _, edges = _grid(both, ds.attrs.get("pca_bins", 30))  # the binning of pca_jsd
    units = ds.reference_pca.attrs["units"]
    samples = {name: ds[f"{name}_pca"].values for name in ("reference", "generated")}
    if kind == "density":
        densities = {name: np.histogram2d(*values.T, bins=edges, density=True)
                     for name, values in samples.items()}
        top = max(density[0].max() for density in densities.values())
        kwargs.setdefault("norm", matplotlib.colors.LogNorm(vmin=top * 1e-3, vmax=top))
        kwargs.setdefault("cmap", "viridis")
    else:
        kwargs.setdefault("s", 2)
    for ax, name in zip(axes, ("reference", "generated"), strict=True):
        if kind == "density":
            density, xedges, yedges = densities[name]
            mesh = ax.pcolormesh(xedges, yedges, np.ma.masked_equal(density, 0).T, **kwargs)
            ax.figure.colorbar(mesh, ax=ax, label=f"probability density (1/{units}²)")
        else:
            ax.scatter(*samples[name].T, **kwargs)
        ax.set(xlim=edges[0][[0, -1]], ylim=edges[1][[0, -1]], xlabel=f"PC1 ({units})", ylabel=f"PC2 ({units})")
        ax.set_title(name, fontsize="small")
    axes[1].set_title(f"generated (JSD {_interval_text(ds, 'pca_jsd', '.2f')})", fontsize="small")
    return axes


def ramachandran_comparison(ds, axes=None, residue=None, **kwargs):
    """Ramachandran plots (φ/ψ in degrees) of one residue in both ensembles, side by side.

    Parameters
    ----------
    ds : xarray.Dataset
        Result of :func:`mdcvkit.metrics.compare_ensembles` with ``dihedrals=True``.
    axes : sequence of 2 matplotlib.axes.Axes, optional
        Reference and generated panels; a new 1 × 2 figure by default.
    residue : int, optional
        Residue number (``ds.residue``); the first residue by default.
    **kwargs
        Passed to :func:`ramachandran` (``ax.scatter``).

    Returns
    -------
    numpy.ndarray of matplotlib.axes.Axes, shape (2,)
    """
    _comparison(ds, ["reference_dihedrals", "generated_dihedrals"],
                "recompute it with compare_ensembles(..., dihedrals=True) on ensembles with protein backbones")
    residues = ds.residue.values
    residue = residues[0] if residue is None else residue
    if residue not in residues:
        raise ValueError(f"residue={residue!r} has no φ/ψ in ds; pass one of {residues.tolist()}")
    axes = _axes_row(axes, 2)
    for ax, name in zip(axes, ("reference", "generated"), strict=True):
        angles = ds[f"{name}_dihedrals"].sel(residue=residue)
        ramachandran(angles.sel(angle="phi").values, angles.sel(angle="psi").values, ax=ax, **kwargs)
        ax.set_title(f"{name}, residue {residue}", fontsize="small")
    jsd = ds.dihedral_jsd.sel(residue=residue).values
    axes[1].set_title(f"generated, residue {residue} (JSD φ {jsd[0]:.2f}, ψ {jsd[1]:.2f})", fontsize="small")
    return axes


def fes_comparison(ds, axes=None, **kwargs):
    """Free-energy surfaces (kT) of both ensembles on the reference's TIC1–TIC2 and their difference.

    Parameters
    ----------
    ds : xarray.Dataset
        Result of :func:`mdcvkit.metrics.compare_ensembles` with ``tica_lag`` set.
    axes : sequence of 3 matplotlib.axes.Axes, optional
        Reference, generated and difference panels; a new 1 × 3 figure by default.
    **kwargs
        Passed to ``ax.pcolormesh`` for the two surfaces.

    Returns
    -------
    numpy.ndarray of matplotlib.axes.Axes, shape (3,)
    """
    _comparison(ds, ["reference_fes", "generated_fes", "fes_difference"],
                "recompute it with compare_ensembles(..., tica_lag=1) or another lag")
    axes = _axes_row(axes, 3)
    x, y = ds.tic1_bin.values, ds.tic2_bin.values
    top = np.nanmax([np.nanmax(ds.reference_fes.values), np.nanmax(ds.generated_fes.values)])
    kwargs.setdefault("cmap", "viridis")
    for ax, name in zip(axes[:2], ("reference", "generated"), strict=True):
        mesh = ax.pcolormesh(x, y, ds[f"{name}_fes"].values.T, vmin=0, vmax=top, **kwargs)
        ax.figure.colorbar(mesh, ax=ax, label=f"free energy ({ds.reference_fes.attrs['units']})")
        ax.set_title(name, fontsize="small")
    difference = ds.fes_difference.values
    limit = np.nanmax(np.abs(difference)) if np.isfinite(difference).any() else 1.0
    mesh = axes[2].pcolormesh(x, y, difference.T, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[2].figure.colorbar(mesh, ax=axes[2], label=f"ΔF, generated − reference ({ds.fes_difference.attrs['units']})")
    axes[2].set_title(f"RMS ΔF {_interval_text(ds, 'fes_rms_difference', '.2f')} kT", fontsize="small")
    for ax in axes:
        ax.set(xlabel="TIC1", ylabel="TIC2")
    return axes


# Predicted distributions with credible bands: the Dataset of mdcvkit.uncertainty.Posterior.predict (issue 35)
# ---------------------------------------------------------------------------------------------------------
__all__ += ["predicted_distribution"]


def _predicted_panel(ds, reference, ax, title, **kwargs):
    """One panel of :func:`predicted_distribution`."""
    if not isinstance(ds, xr.Dataset) or not {"density", "density_interval", "bin_edges"} <= set(ds.data_vars):
        raise ValueError("ds must be the Dataset returned by Posterior.predict (mdcvkit.uncertainty); "
                         f"got {type(ds).__name__}")
    level = f"{100 * ds.attrs.get('credible', 0.9):.0f} %"
    kwargs.setdefault("alpha", 0.35)
    ax.fill_between(ds.bin, ds.density_interval.sel(bound="lower"), ds.density_interval.sel(bound="upper"),
                    step="mid", label=f"{level} credible band", **kwargs)
    ax.step(ds.bin, ds.density, where="mid", color="C0", label=f"posterior mean ({ds.attrs.get('method', '')})")
    lower, upper = ds.mean_interval.values
    ax.axvspan(lower, upper, color="C0", alpha=0.12, lw=0)
    ax.axvline(float(ds["mean"]), color="C0", ls="--", lw=1)
    if reference is not None:
        values = np.asarray(reference, dtype=float).ravel()
        density, _ = np.histogram(values, ds.bin_edges.values, density=True)
        ax.step(ds.bin, density, where="mid", color="k", label="reference")
        ax.axvline(values.mean(), color="k", ls="--", lw=1)
    ax.set(xlabel=_label(ds.bin_edges, ds.attrs.get("observable", "")), ylabel="probability density")
    ax.set_title(f"{title}mean {float(ds['mean']):.3g} [{lower:.3g}, {upper:.3g}]", fontsize="small")
    return ax


def predicted_distribution(ds, reference=None, ax=None, **kwargs):
    """Predicted distribution of an observable with its credible band, against a reference histogram.

    Parameters
    ----------
    ds : xarray.Dataset or dict of str to xarray.Dataset
        Result of :meth:`mdcvkit.uncertainty.Posterior.predict`; a dict (e.g. ``{"N = 50": ds50, ...}``)
        gives one panel per entry, titled by its key.
    reference : array_like, optional
        Reference values of the observable (e.g. Rg of every MD frame), histogrammed on the same bins;
        its mean is drawn as a dashed black line next to the predicted mean and its interval (shaded).
    ax : matplotlib.axes.Axes or sequence of Axes, optional
        One axes per panel; new ones when None.
    **kwargs
        Passed to ``ax.fill_between`` of the band.

    Returns
    -------
    matplotlib.axes.Axes, or numpy.ndarray of Axes for a dict

    Examples
    --------
    >>> mk.plot.predicted_distribution({"N = 50": ds50, "N = 500": ds500}, reference=rg_md)  # doctest: +SKIP
    """
    if isinstance(ds, dict):
        if not ds:
            raise ValueError("ds is an empty dict; pass one Dataset of Posterior.predict per panel")
        axes = _axes_row(ax, len(ds))
        for panel, (title, data) in zip(axes, ds.items(), strict=True):
            _predicted_panel(data, reference, panel, f"{title}: ", **kwargs)
        axes[0].legend(fontsize="small")
        return axes
    ax = _predicted_panel(ds, reference, _axes(ax), "", **kwargs)
    ax.legend(fontsize="small")
    return ax
