"""The ``mdcvkit`` command: ``mdcvkit demo`` and ``mdcvkit train``."""

import argparse
import gc
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "demo", "train"]

logger = logging.getLogger("mdcvkit.cli")  # not __name__: "__main__" under python -m mdcvkit.cli


def _save_figure(fig, path):
    from ._io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=Path(path).suffix[1:])


def _save_netcdf(data, path):
    from ._io import atomic_path

    with atomic_path(path) as tmp:
        data.to_netcdf(tmp)


#: Most MD frames the demo's repair-and-compare section reconstructs (a regular subsample of the analysed frames).
_COMPARE_FRAMES = 1000


def _repair_and_compare(cv, heavy, output, seed):
    """Reconstruct MD frames through the CV, repair them and compare both with MD; returns the report section.

    The reconstructions are the decoded CVs of at most ``_COMPARE_FRAMES`` analysed frames (a regular
    subsample); they are repaired against those MD frames (heavy atoms, in memory) and compared with them
    by :func:`mdcvkit.metrics.compare_ensembles` (paired, with geometry). Writes ``reconstruction.png``.
    """
    import matplotlib.pyplot as plt

    from . import metrics, plot
    from .frames import in_memory
    from .repair import BondGeometryRepair

    start = time.perf_counter()
    stride = -(-cv.n_frames // _COMPARE_FRAMES)  # rounded up: at most _COMPARE_FRAMES frames
    latent = cv.results.cv[::stride]
    trajectory = heavy.universe.trajectory
    md = in_memory(heavy, [heavy.positions.copy() for _ in trajectory[latent["frame"].values]])
    reconstructions = cv.decode(latent)
    repair = BondGeometryRepair(reconstructions.atoms, reference=md.atoms).run()
    settings = {"select": "all", "paired": True, "geometry": True, "n_bootstrap": 100, "block_length": 5,
                "seed": seed}
    raw = metrics.compare_ensembles(md, reconstructions, **settings)
    repaired = metrics.compare_ensembles(md, repair.results.universe, **settings)
    seconds = time.perf_counter() - start

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    plot.rmsf(repaired, ax=axes[0], marker="o")
    axes[0].set_xticks(repaired["atom"].values, repaired["name"].values, fontsize="x-small")
    axes[0].legend(["MD", "reconstructions, repaired"], fontsize="small")
    plot.pca_comparison(repaired, axes=axes[1:])
    axes[1].set_title("MD", fontsize="small")
    axes[2].set_title(axes[2].get_title().replace("generated", "reconstructions, repaired"), fontsize="small")
    fig.suptitle("MD frames and their repaired reconstructions through the CV", fontsize="medium")
    _save_figure(fig, output / "reconstruction.png")
    plt.close(fig)

    def interval(ds, name, fmt):
        lower, upper = ds[f"{name}_interval"].values
        return f"{float(ds[name]):{fmt}} [{lower:{fmt}}, {upper:{fmt}}]"

    def geometry(ds, who):
        return (f"{float(ds[f'{who}_bond_rmsd'].mean()):.4f} | {float(ds[f'{who}_angle_rmsd'].mean()):.2f} | "
                f"{float(ds[f'{who}_chirality_inversions'].mean()):.3f} | {float(ds[f'{who}_clashes'].mean()):.3f}")

    rows = [f"| MD frames (floor; distances: MD halves) | {geometry(raw, 'reference')} | "
            f"{interval(raw, 'baseline_rmsd_wasserstein', '.3f')} | {interval(raw, 'baseline_rmsf_ratio_mean', '.2f')}"
            " | — | — |"]
    for label, ds in (("reconstructions, raw", raw), ("reconstructions, repaired", repaired)):
        rows.append(f"| {label} | {geometry(ds, 'generated')} | {interval(ds, 'rmsd_wasserstein', '.3f')} | "
                    f"{interval(ds, 'rmsf_ratio_mean', '.2f')} | {interval(ds, 'paired_mse', '.4f')} | "
                    f"{float(ds['paired_spearman']):.4f} |")
    displacement = float(repair.results.report["heavy_atom_displacement"].mean())
    columns = ["ensemble", "bond RMSD (Å)", "angle RMSD (°)", "inversions per frame", "clashes per frame",
               "RMSD W₁ (Å)", "RMSF ratio", "paired MSE (Å²)", "Spearman"]
    table = "\n".join([f"| {' | '.join(columns)} |", "| --- " * len(columns) + "|", *rows])
    return f"""## Decoded, repaired, compared: reconstructions against MD

The CV of {md.trajectory.n_frames} analysed frames (one in {stride}) decoded back to heavy-atom positions,
`cv.decode(cv.results.cv)`; repaired with `BondGeometryRepair` against the bond lengths, angles and
handedness of those MD frames (mean heavy-atom displacement {displacement:.3f} Å); and compared with the
MD frames by `compare_ensembles(md, reconstructions, paired=True, geometry=True)` on all {heavy.n_atoms}
heavy atoms ({seconds:.1f} s to decode, repair and compare). Geometry is per frame, averaged: bond-length
and bond-angle RMSD from the MD mean, inverted stereocentres, heavy-atom clashes; the MD frames give the
floor.
RMSD W₁: Wasserstein-1 distance between the distributions of RMSD to the first MD frame. RMSF ratio:
mean RMSF of the reconstructions over that of MD (below 1: narrower than MD). Paired MSE: mean squared
difference of aligned coordinates of each frame and its reconstruction (Ojeda-May 2025, Table 1), and
Spearman: rank correlation of those coordinates. For the MD row the distances are between the first and
the second half of the MD frames, what sampling alone gives. Brackets: 95 % bootstrap intervals (MD
frames resampled in blocks of 5). The frames are the training data, so this measures how well the model
fits them, not how it generalises.

{table}

![reconstructions](reconstruction.png)
"""


#: The demo's eABF along the learned CV: bins per CV component over the range the CV takes in the training
#: data and the unbiased vacuum run, samples of a bin before its ABF force acts in full (few: a 2-D grid has
#: many bins to fill in a short run), and the fewest samples of a bin in both runs for it to be compared.
_EABF_BINS = 20
_EABF_FULL_SAMPLES = 10
_EABF_MIN_SAMPLES = 20
def _phi(atomgroup):
    """φ (degrees) of the alanine residue over the trajectory of ``atomgroup``'s Universe."""
    from MDAnalysis.analysis.dihedrals import Ramachandran

    return Ramachandran(atomgroup.universe.select_atoms("resname ALA")).run().results.angles[:, 0, 0]


def _bias_along_cv(cv, output, seed, eabf_ps):
    """eABF along the learned CV on the shipped vacuum system, against the shipped unbiased vacuum run.

    Runs ``eabf_ps`` ps of 2-D eABF (CZAR) along ``cv`` from the first frame of the unbiased run (C7eq),
    counts C7eq <-> C7ax transitions of both runs, and compares the CZAR free energy with -kT ln p of
    the unbiased run along the CV over the bins both sample. Writes ``eabf.png``; returns the report section.
    """
    import matplotlib.pyplot as plt

    from . import datasets
    from .biasing import ExtendedABF, Grid
    from .biasing.eabf import MOLAR_GAS_CONSTANT
    from .biasing.reweight import histogram_pmf
    from .frames import in_memory

    start = time.perf_counter()
    setup = datasets.alanine_dipeptide_system("vacuum")
    md = datasets.alanine_dipeptide("vacuum")
    heavy = md.select_atoms("not name H*")
    unbiased = cv.transform(heavy).values
    values = np.concatenate([cv.results.cv.values, unbiased])
    lower, upper = values.min(axis=0), values.max(axis=0)
    margin = 0.1 * (upper - lower)
    grid = Grid(lower - margin, upper + margin, _EABF_BINS)
    kT = MOLAR_GAS_CONSTANT * setup.temperature
    n_steps = 100 * max(1, round(eabf_ps / setup.timestep / 100))  # whole bias updates
    eabf = ExtendedABF(setup.system, setup.positions, cv.results.model, grid, kT / grid.width**2,
                       setup.temperature, particles=heavy.indices, integrator=setup.integrator(),
                       full_samples=_EABF_FULL_SAMPLES, sample_frequency=10, update_frequency=100,
                       bias_stride=2, store_positions=True, seed=seed).run(n_steps)  # fmt: skip
    seconds = time.perf_counter() - start
    samples = eabf.results.samples
    phi_biased = _phi(in_memory(heavy, samples.positions.values).atoms)
    phi_unbiased = _phi(heavy)
    time_biased, time_unbiased = samples.time.values, md.trajectory.dt * np.arange(len(phi_unbiased))
    in_c7ax = datasets.c7_basins(phi_biased) == 1
    unbiased_c7ax = datasets.c7_basins(phi_unbiased) == 1
    first_c7ax = f"{time_biased[in_c7ax][0]:.0f} ps" if in_c7ax.any() else "never"

    pmf = eabf.results.pmf.values
    reference = histogram_pmf(unbiased, None, grid, kT)
    index = grid.index(unbiased)
    unbiased_counts = np.bincount(index[index >= 0], minlength=pmf.size).reshape(grid.shape)
    compared = ((eabf.results.counts.values >= _EABF_MIN_SAMPLES) & (unbiased_counts >= _EABF_MIN_SAMPLES)
                & np.isfinite(pmf) & np.isfinite(reference))  # fmt: skip
    difference = (pmf - reference)[compared]
    difference -= difference.mean()  # free energies are defined up to a constant
    rms = np.sqrt(np.mean(difference**2)) / kT if compared.any() else np.nan

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    axes[0].plot(time_unbiased[time_unbiased <= time_biased[-1]], phi_unbiased[time_unbiased <= time_biased[-1]],
                 ".", ms=2, color="0.5", label="unbiased")
    axes[0].plot(time_biased, phi_biased, ".", ms=2, label="eABF along the CV")
    for (low, high), name in ((datasets.C7EQ_PHI, "C7eq"), (datasets.C7AX_PHI, "C7ax")):
        axes[0].axhspan(low, high, color="C2" if name == "C7ax" else "C0", alpha=0.1)
        axes[0].text(time_biased[-1], (low + high) / 2, f" {name}", va="center", fontsize="small")
    axes[0].set(xlabel="time (ps)", ylabel="φ (degree)", ylim=(-180, 180), title="φ in vacuum")
    axes[0].legend(fontsize="small", markerscale=4, loc="lower left")
    levels = np.linspace(0, 8, 17)  # kT
    centres = [grid.centers(d) for d in range(2)]
    for ax, energy, title in ((axes[1], pmf, f"eABF (CZAR), {time_biased[-1]:.0f} ps"),
                              (axes[2], reference, f"unbiased, {time_unbiased[-1] / 1000:.0f} ns")):
        filled = ax.contourf(*centres, np.ma.masked_invalid(energy / kT).T, levels=levels, extend="max")
        ax.contour(*centres, compared.T.astype(float), levels=[0.5], colors="w", linewidths=1)
        ax.scatter(*unbiased[0], marker="x", color="r", label="start (C7eq)")
        ax.set(xlabel="CV 1", ylabel="CV 2", title=f"free energy, {title}")
    axes[1].legend(fontsize="small", loc="lower left")
    fig.colorbar(filled, ax=axes[1:], label="free energy (kT)")
    fig.suptitle("eABF along the learned CV on vacuum alanine dipeptide; white: bins compared", fontsize="medium")
    _save_figure(fig, output / "eabf.png")
    plt.close(fig)

    rows = [f"| eABF along the CV | {time_biased[-1]:.0f} | {datasets.basin_crossings(phi_biased)} | "
            f"{100 * in_c7ax.mean():.1f} | {first_c7ax} |",
            f"| unbiased (shipped `vacuum.xtc`) | {time_unbiased[-1]:.0f} | {datasets.basin_crossings(phi_unbiased)} | "
            f"{100 * unbiased_c7ax.mean():.1f} | {'yes' if unbiased_c7ax.any() else 'never'} |"]
    c7eq, c7ax = datasets.C7EQ_PHI, datasets.C7AX_PHI
    return f"""## Biased: eABF along the learned CV

The learned CV, as it is, drives extended ABF (`mk.biasing.ExtendedABF`, CZAR estimator) on the shipped
vacuum system (`mk.datasets.alanine_dipeptide_system("vacuum")`: the force field of the data, 4 fs
Langevin steps at 300 K), started from the first frame of the shipped unbiased vacuum run, in C7eq:
{n_steps} steps along both CV components, {_EABF_BINS} × {_EABF_BINS} bins over the range the CV takes in the
training data and the unbiased run, κ = kT / (bin width)², the ABF force in full after {_EABF_FULL_SAMPLES}
samples of a bin; the CV reaches OpenMM by the `{eabf.route}` route, its force every second step (8 fs,
`bias_stride=2`); {seconds:.1f} s in all, with the CV of the unbiased run. A crossing is a transition
between the C7eq ({c7eq[0]:g}° < φ < {c7eq[1]:g}°) and C7ax ({c7ax[0]:g}° < φ < {c7ax[1]:g}°) cores; the
CV was learned without φ.

| run | length (ps) | C7eq ↔ C7ax crossings | time in C7ax (%) | first in C7ax |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Free energy along the CV: the CZAR estimate of the eABF run and -kT ln p of the unbiased run agree to
RMS {rms:.2f} kT over the {int(compared.sum())} bins that both runs sample at least {_EABF_MIN_SAMPLES} times
(white outline; the constant offset removed). Beyond them only the biased run has samples.

![eABF](eabf.png)
"""


def demo(output="mdcvkit-demo", step=1, max_epochs=200, seed=0, eabf_ps=400.0):
    """Learn a 2-D autoencoder CV of the shipped alanine dipeptide, bias, validate and decode it; write a report.

    Writes to ``output``: ``cv.nc`` (the CV time series, netCDF), ``model.pt``
    (the saved CV), ``loss.png``, ``free_energy.png`` (free energy in CV
    space), ``ramachandran.png`` (φ/ψ coloured by each CV), ``eabf.png`` (eABF along the CV on
    the vacuum system against the unbiased vacuum run), ``implied_timescales.png`` and
    ``ck_test.png`` (MSM validation of the CV), ``reconstruction.png`` (decoded CVs of MD
    frames, repaired with :class:`mdcvkit.BondGeometryRepair` and compared with MD by
    :func:`mdcvkit.metrics.compare_ensembles`) and ``report.md``.

    Parameters
    ----------
    output : str or Path, default "mdcvkit-demo"
        Output folder (created when missing).
    step : int, default 1
        Use every ``step``-th frame.
    max_epochs : int, default 200
    seed : int, default 0
    eabf_ps : float, default 400.0
        Length of the eABF run along the CV, in ps (4 fs steps).

    Returns
    -------
    pathlib.Path
        Path of the report.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from MDAnalysis.analysis.dihedrals import Ramachandran

    from . import datasets, metrics, msm, plot
    from ._checks import check_int
    from ._io import atomic_path
    from .analysis import AutoencoderCV

    check_int(step, "step", fix="pass e.g. step=4 to read every fourth frame")
    if isinstance(eabf_ps, bool) or not isinstance(eabf_ps, (int, float)) or not 0.4 <= eabf_ps < np.inf:
        raise ValueError(f"eabf_ps={eabf_ps!r} must be a number of ps, at least 0.4 (100 steps); e.g. eabf_ps=400")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    u = datasets.alanine_dipeptide("implicit")
    heavy = u.select_atoms("not name H*")
    logger.info("1/5 training a 2-D autoencoder CV on %d heavy atoms, a frame every %g ps of %.0f ns of alanine "
                "dipeptide", heavy.n_atoms, step * u.trajectory.dt, u.trajectory.totaltime / 1000)
    start = time.perf_counter()
    cv = AutoencoderCV(heavy, n_cv=2, seed=seed, max_epochs=max_epochs).run(step=step)
    seconds = time.perf_counter() - start
    logger.info("    %d frames, %d epochs in %.0f s", cv.n_frames, cv.results.loss.sizes["epoch"], seconds)
    cv.save(output / "model.pt")
    _save_netcdf(cv.results.cv.rename("autoencoder_cv"), output / "cv.nc")

    angles = Ramachandran(u.select_atoms("resname ALA")).run(step=step).results.angles[:, 0]
    dihedrals = np.deg2rad(angles)
    targets = np.hstack([np.sin(dihedrals), np.cos(dihedrals)])
    score = metrics.knn_score(cv.results.cv, targets, lengths=cv._lengths, seed=seed)
    logger.info("2/5 the CV determines (sin, cos) of φ and ψ to R² = %.3f (held-out kNN regression)", float(score))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    plot.loss(cv.results.loss, ax=ax)
    _save_figure(fig, output / "loss.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    plot.free_energy_surface(cv.results.cv, ax=ax)
    _save_figure(fig, output / "free_energy.png")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    for k, ax in enumerate(axes):
        plot.ramachandran(angles[:, 0], angles[:, 1], color=cv.results.cv[:, k].values, ax=ax, cmap="coolwarm")
        ax.set_title(f"coloured by CV {k + 1}")
    _save_figure(fig, output / "ramachandran.png")
    plt.close("all")

    logger.info("3/5 eABF along the CV for %g ps on the vacuum system, against the unbiased vacuum run", eabf_ps)
    biased = _bias_along_cv(cv, output, seed, eabf_ps)

    logger.info("4/5 MSM validation: implied timescales and Chapman-Kolmogorov test (deeptime)")
    lags = [lag for lag in (1, 2, 5, 10, 20, 50, 100) if lag * step < 2000]
    its = msm.implied_timescales(cv.results.cv, lags=lags, n_clusters=100, n_samples=50, seed=seed)
    ck_lag = lags[-3] if len(lags) >= 3 else lags[-1]
    ck = msm.ck_test(cv.results.cv, lag=ck_lag, n_sets=2, mlags=5, n_clusters=100, n_samples=50, seed=seed)
    fig, ax = plt.subplots(figsize=(5, 3.8))
    plot.implied_timescales(its, ax=ax)
    _save_figure(fig, output / "implied_timescales.png")
    axes = plot.ck_test(ck)
    _save_figure(np.ravel(axes)[0].figure, output / "ck_test.png")
    plt.close("all")
    logger.info("5/5 decoding MD frames through the CV, repairing their bonds and comparing them with MD")
    reconstruction = _repair_and_compare(cv, heavy, output, seed)

    timescales = ", ".join(f"{float(t):.0f}" for t in its["timescales"].isel(process=0).values)
    timescales += f" {its['timescales'].attrs.get('units', 'ps')}"
    lag_values = ", ".join(f"{v:g}" for v in its["lag_time"].values) + f" {its['lag_time'].attrs['units']}"

    loss = cv.results.loss
    best = loss.attrs["best_epoch"]
    report = f"""# mdcvkit demo: an autoencoder CV of alanine dipeptide

Learned → biased → validated → decoded → repaired → compared, in one run of `mdcvkit demo`.

## Learned: a 2-D autoencoder CV

Data: the shipped implicit-solvent alanine dipeptide, {len(cv._lengths)} trajectory segments,
{cv.n_frames} frames (every {step} ps), {heavy.n_atoms} heavy atoms, aligned Cartesian features.
Model: `AutoencoderCV(n_cv=2, model="ae", hidden=(40,), activation="tanh", seed={seed})`,
trained in {seconds:.1f} s for {loss.sizes["epoch"]} epochs; best epoch {best},
validation loss {float(loss["validation"][best]):.4f} (train {float(loss["train"][best]):.4f}),
in units of normalised features squared.

How well the CV determines the backbone dihedrals: a {score.attrs["n_neighbors"]}-nearest-neighbour
regression from the CV to (sin φ, cos φ, sin ψ, cos ψ), trained and tested on different blocks of
frames, reaches R² = {float(score):.3f} on the held-out frames
(per target: {", ".join(f"{v:.3f}" for v in score.attrs["per_target"])}).

![loss](loss.png)
![free energy](free_energy.png)
![Ramachandran](ramachandran.png)

{biased}
## Validated: Markov state models on the CV

MSM validation of the CV (100 k-means clusters, Bayesian MSMs through deeptime): the slowest
implied timescale is {timescales} at lags {lag_values}; the Chapman–Kolmogorov test with 2 metastable
sets at lag {ck_lag * step} ps passes for {100 * float(ck["passed"].mean()):.0f} % of the set-to-set probabilities
(estimate inside the 95 % prediction interval).

![implied timescales](implied_timescales.png)
![CK test](ck_test.png)

{reconstruction}
## Files

| file | what |
| --- | --- |
| `cv.nc` | the CV time series (netCDF, dims frame × cv, time in ps) |
| `model.pt` | the fitted CV: `mk.AutoencoderCV.load("model.pt").transform(atomgroup)` |
| `loss.png` | training and validation loss |
| `free_energy.png` | free energy in CV space, kJ/mol at 300 K |
| `ramachandran.png` | φ/ψ of every frame coloured by each CV component |
| `eabf.png` | φ over time and free energy along the CV, eABF against the unbiased vacuum run |
| `implied_timescales.png` | implied timescales of MSMs on the CV, with 95 % intervals |
| `ck_test.png` | Chapman–Kolmogorov test of the MSM, 2 metastable sets |
| `reconstruction.png` | RMSF and PCA of MD frames and their repaired reconstructions through the CV |
"""
    with atomic_path(output / "report.md") as tmp:
        tmp.write_text(report)
    return output / "report.md"


def train(topology, trajectories, output, select="not name H*", n_cv=2, model="ae", features="aligned",
          step=None, max_epochs=200, seed=0, verbose=False):
    """Train an autoencoder CV on trajectory files; write ``cv.nc`` and ``model.pt`` to ``output``.

    Parameters
    ----------
    topology : str
        Topology file readable by MDAnalysis.
    trajectories : list of str
        Trajectory files; each stays a separate trajectory.
    output : str or Path
        Output folder.
    select : str, default "not name H*"
        MDAnalysis selection of the CV atoms.
    n_cv, model, features, step, max_epochs, seed, verbose
        As in :class:`mdcvkit.AutoencoderCV`.

    Returns
    -------
    AutoencoderCV
    """
    from ._checks import select_atoms
    from .analysis import AutoencoderCV
    from .training import MIN_FRAMES

    output = _check_paths(topology, trajectories, output)
    universes = [_universe(topology, t) for t in trajectories] or [_universe(topology)]
    if not trajectories and universes[0].trajectory.n_frames < MIN_FRAMES:
        raise ValueError(f"no trajectory given, and the topology '{topology}' holds {universes[0].trajectory.n_frames} "
                         f"frame(s), fewer than the {MIN_FRAMES} needed to train; pass trajectory files after it")
    groups = [select_atoms(u, select) for u in universes]
    if groups[0].n_atoms == 0:
        raise ValueError(f"select={select!r} selects no atom of '{topology}'; e.g. 'not name H*' or 'backbone'")
    cv = AutoencoderCV(groups, n_cv=n_cv, model=model, features=features, max_epochs=max_epochs, seed=seed)
    cv.run(step=step, verbose=verbose)
    output.mkdir(parents=True, exist_ok=True)
    cv.save(output / "model.pt")
    _save_netcdf(cv.results.cv.rename("autoencoder_cv"), output / "cv.nc")
    return cv


def _check_paths(topology, trajectories, output):
    """Check every path before a frame is read: inputs readable files, ``output`` a writable folder to be.

    Returns ``output`` as a Path. Raises FileNotFoundError, IsADirectoryError, NotADirectoryError or
    PermissionError naming the path.
    """
    for path in [topology, *trajectories]:
        if not Path(path).exists():
            raise FileNotFoundError(f"no file at '{path}'; check the path of the topology and the trajectories")
        if Path(path).is_dir():
            raise IsADirectoryError(f"'{path}' is a folder; pass a topology or trajectory file")
        if not os.access(path, os.R_OK):
            raise PermissionError(f"'{path}' cannot be read (permission denied); check its permissions")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output '{output}' is an existing file; pass a folder (it is created if missing)")
    existing = output
    while not existing.exists():  # the nearest folder that exists is where the new folders will be made
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--output '{output}' cannot be written: '{existing}' is not a writable folder; "
                              "pass another output folder")
    return output


def _universe(*files):
    """``MDAnalysis.Universe(*files)``, a file MDAnalysis cannot read reported as ValueError naming it."""
    import MDAnalysis as mda

    try:
        return mda.Universe(*files)
    except (ValueError, TypeError, OSError, EOFError, KeyError, IndexError, RuntimeError) as err:
        # a reader that failed half-built complains from its __del__ ("Exception ignored in ..."):
        # drop the frames that hold it and collect it now, quietly, so the error stays one line
        hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
        try:
            err.__traceback__ = None
            gc.collect()
        finally:
            sys.unraisablehook = hook
        raise ValueError(f"MDAnalysis cannot read {' with '.join(repr(str(f)) for f in files)} "
                         f"({type(err).__name__}: {err}); check the file formats (extension) and that the "
                         "trajectory has the topology's atoms") from err


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed in [0, 2**32 - 1]")
    return value


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _parser():
    from . import __version__
    from .models import MODELS

    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="mdcvkit", description="Collective variables learned with autoencoders.",
                     formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"mdcvkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = commands.add_parser("demo", formatter_class=formatter,
                            help="learn the 2-D CV of the shipped alanine dipeptide, bias, validate, decode it; report")
    d.add_argument("--output", default="mdcvkit-demo", help="output folder (created when missing)")
    d.add_argument("--step", type=_positive_int, default=1, help="use every STEP-th frame (1 frame = 1 ps)")
    d.add_argument("--max-epochs", type=_positive_int, default=200, help="most training epochs")
    d.add_argument("--seed", type=_seed, default=0, help="seed of the training, the eABF run and the MSMs")
    d.add_argument("--eabf-ps", type=float, default=400.0, help="length of the eABF run along the CV (ps)")
    t = commands.add_parser("train", help="train a CV on your trajectories", formatter_class=formatter)
    t.add_argument("topology", help="topology file (PDB, PSF, GRO, …); coordinates in Å")
    t.add_argument("trajectories", nargs="*", help="trajectory files (DCD, XTC, …), each a separate trajectory")
    t.add_argument("--output", required=True, help="output folder for cv.nc and model.pt (created when missing)")
    t.add_argument("--select", default="not name H*", help="MDAnalysis selection of the CV atoms")
    t.add_argument("--n-cv", type=_positive_int, default=2, help="dimension of the CV")
    t.add_argument("--model", default="ae", choices=sorted(MODELS), help="autoencoder model")
    t.add_argument("--features", default="aligned", choices=["aligned", "positions", "distances", "dihedrals"],
                   help="input features (aligned positions in Å, distances in Å, dihedrals as sin/cos)")
    t.add_argument("--step", type=_positive_int, default=None, help="use every STEP-th frame (None: every frame)")
    t.add_argument("--max-epochs", type=_positive_int, default=200, help="most training epochs")
    t.add_argument("--seed", type=_seed, default=0, help="seed of the split, minibatches and weights")
    t.add_argument("--verbose", action="store_true", help="progress bars")
    return parser


def main(argv=None):
    """Entry point of the ``mdcvkit`` command; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help, --version (0) or a usage error (2), already printed
        return done.code
    # mdcvkit's progress at INFO; other libraries (MDAnalysis logs every analysis run at INFO) at WARNING
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mdcvkit").setLevel(logging.INFO)
    try:
        if args.command == "demo":
            path = demo(args.output, step=args.step, max_epochs=args.max_epochs, seed=args.seed,
                        eabf_ps=args.eabf_ps)
            print(f"report written to {path}")
        else:
            train(args.topology, args.trajectories, args.output, select=args.select, n_cv=args.n_cv,
                  model=args.model, features=args.features, step=args.step, max_epochs=args.max_epochs,
                  seed=args.seed, verbose=args.verbose)
            print(f"CV written to {Path(args.output) / 'cv.nc'} and {Path(args.output) / 'model.pt'}")
    except (ValueError, TypeError, OSError) as err:  # OSError: missing, unreadable or unwritable files
        message = " ".join(str(err).split())  # one line, whatever the message held
        print(f"mdcvkit {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
