"""Tests of mdcvkit.plot (figures drawn with the Agg backend)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from mdcvkit import plot  # noqa: E402
from mdcvkit.systems import MOLAR_GAS_CONSTANT  # noqa: E402


def test_loss_plot_marks_best_epoch():
    history = xr.Dataset({"train": ("epoch", [1.0, 0.5, 0.4]), "validation": ("epoch", [1.1, 0.6, 0.7])},
                         coords={"epoch": [0, 1, 2]}, attrs={"long_name": "loss", "best_epoch": 1})
    ax = plot.loss(history)
    assert [line.get_label() for line in ax.get_lines()][:2] == ["train", "validation"]
    assert ax.get_lines()[2].get_xdata()[0] == 1
    plt.close("all")


def test_free_energy_1d_is_minus_kt_log_p():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200_000)
    ax = plot.free_energy_surface(x, temperature=1.0 / MOLAR_GAS_CONSTANT, bins=41)  # kT = 1 kJ/mol
    centres, energy = ax.get_lines()[0].get_data()
    inside = np.abs(centres) < 2
    # harmonic well: F = x²/2 up to a constant, zero at the minimum
    np.testing.assert_allclose(energy[inside], centres[inside] ** 2 / 2 - (centres[inside] ** 2 / 2).min(),
                               atol=0.08)
    with pytest.warns(DeprecationWarning, match="pass temperature= in K"):
        old = plot.free_energy_surface(x, kT=1.0, bins=41)
    np.testing.assert_allclose(old.get_lines()[0].get_ydata(), energy)
    plt.close("all")


def test_free_energy_2d_and_ramachandran_draw_on_given_axes():
    rng = np.random.default_rng(1)
    cv = xr.DataArray(rng.normal(size=(5000, 2)), dims=("frame", "cv"), attrs={"long_name": "AE CV"})
    fig, axes = plt.subplots(1, 2)
    assert plot.free_energy_surface(cv, ax=axes[0]) is axes[0]
    assert axes[0].get_xlabel() == "AE CV 1"
    assert plot.ramachandran(rng.uniform(-180, 180, 100), rng.uniform(-180, 180, 100),
                             color=rng.normal(size=100), ax=axes[1]) is axes[1]
    with pytest.raises(ValueError, match="n_frames"):
        plot.free_energy_surface(np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"history must be results.loss of a fitted AutoencoderCV .* got DataArray"):
        plot.loss(cv)
    with pytest.raises(ValueError, match=r"one value per frame each; got sizes \{'phi': 5, 'psi': 6\}"):
        plot.ramachandran(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match=r"'color': 4"):
        plot.ramachandran(np.zeros(5), np.zeros(5), color=np.zeros(4))
    plt.close("all")



# =========================================================================================================
# MSM validation figures: mdcvkit.plot.implied_timescales and mdcvkit.plot.ck_test
# (block owned by the mdcvkit.msm work; keep it at the end of the file)
# =========================================================================================================
from deeptime.markov.msm import MarkovStateModel  # noqa: E402

import mdcvkit.msm  # noqa: E402
from mdcvkit import plot as mk_plot  # noqa: E402


@pytest.fixture(scope="module")
def msm_chain_cv():
    chain = MarkovStateModel(np.array([[0.90, 0.09, 0.01, 0.00], [0.09, 0.90, 0.00, 0.01],
                                       [0.01, 0.00, 0.90, 0.09], [0.00, 0.01, 0.09, 0.90]]))
    rng = np.random.default_rng(0)
    return [np.array([0.0, 1.0, 3.0, 4.0])[chain.simulate(3000, seed=s)] + 0.05 * rng.standard_normal(3000)
            for s in range(2)]


@pytest.fixture(scope="module")
def msm_its(msm_chain_cv):
    return mdcvkit.msm.implied_timescales(msm_chain_cv, lags=[1, 2, 5], n_clusters=4, n_timescales=2, dt=2.0,
                                          n_samples=5)


@pytest.fixture(scope="module")
def msm_ck(msm_chain_cv):
    return mdcvkit.msm.ck_test(msm_chain_cv, lag=2, n_sets=2, mlags=3, n_clusters=4, n_samples=5, dt=2.0)


def test_implied_timescales_plot(msm_its):
    fig, ax = plt.subplots()
    out = mk_plot.implied_timescales(msm_its, ax=ax, lag=4.0, lw=3)
    assert out is ax
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "lag time (ps)" and ax.get_ylabel() == "implied timescale (ps)"
    labels = [line.get_label() for line in ax.get_lines()]
    assert "process 1" in labels and "process 2" in labels and "lag 4 ps" in labels
    process = ax.get_lines()[labels.index("process 1")]
    np.testing.assert_allclose(process.get_xdata(), [2.0, 4.0, 10.0])
    np.testing.assert_allclose(process.get_ydata(), msm_its.timescales.sel(process=1))
    assert process.get_linewidth() == 3  # kwargs reach ax.plot
    assert len(ax.collections) == 3  # two intervals and the region below the lag line
    plt.close(fig)


def test_implied_timescales_plot_makes_axes_and_selects_processes(msm_its):
    ax = mk_plot.implied_timescales(msm_its, processes=[1])
    assert [line.get_label() for line in ax.get_lines()].count("process 2") == 0
    plt.close(ax.figure)


def test_ck_test_plot(msm_ck):
    axes = mk_plot.ck_test(msm_ck, color="C2")
    assert axes.shape == (2, 2)
    assert axes[0, 1].get_title() == "set 0 → set 1"
    assert axes[1, 0].get_xlabel() == "lag time (ps)" and axes[0, 0].get_ylabel() == "probability"
    predicted = axes[1, 1].get_lines()[0]
    np.testing.assert_allclose(predicted.get_xdata(), [0.0, 4.0, 8.0, 12.0])
    np.testing.assert_allclose(predicted.get_ydata(), msm_ck.predicted.isel(from_set=1, to_set=1))
    plt.close(axes[0, 0].figure)


def test_ck_test_plot_marks_failed_estimates(msm_ck):
    failing = msm_ck.copy()
    failing["passed"] = failing.passed.copy(data=np.zeros(failing.passed.shape, dtype=bool))
    axes = mk_plot.ck_test(failing)
    assert "outside prediction" in [line.get_label() for line in axes[0, 0].get_lines()]
    plt.close(axes[0, 0].figure)


def test_msm_plots_reject_wrong_input(msm_its, msm_ck):
    with pytest.raises(ValueError, match="mdcvkit.msm.implied_timescales"):
        mk_plot.implied_timescales(msm_ck)
    with pytest.raises(ValueError, match="mdcvkit.msm.ck_test"):
        mk_plot.ck_test(msm_its)
    fig, axes = plt.subplots(1, 3, squeeze=False)
    with pytest.raises(ValueError, match=r"axes has shape \(1, 3\); pass a \(2, 2\) array"):
        mk_plot.ck_test(msm_ck, axes=axes)
    plt.close("all")


# =========================================================================================================
# Feature importance bar chart: mdcvkit.plot.feature_importance
# (block owned by the model-family work; keep it at the end of the file)
# =========================================================================================================


@pytest.fixture(scope="module")
def importance_features():
    values = np.array([[0.1, 0.5, 0.2], [0.3, 0.0, 0.4]])
    return xr.DataArray(values, dims=("cv", "feature"),
                        coords={"cv": [0, 1], "label": ("feature", ["a", "b", "c"])},
                        attrs={"long_name": "feature importance", "units": "CV per feature scale"})


def test_feature_importance_plot(importance_features):
    ax = mk_plot.feature_importance(importance_features, top=2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c", "b"]  # largest total first
    assert len(ax.patches) == 4 and ax.get_ylabel() == "feature importance (CV per feature scale)"
    plt.close(ax.figure)
    atoms = xr.DataArray(np.ones((1, 2)), dims=("cv", "atom"),
                         coords={"cv": [0], "name": ("atom", ["CA", "CB"]), "index": ("atom", [4, 6])})
    ax = mk_plot.feature_importance(atoms)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CA4", "CB6"]
    plt.close(ax.figure)


def test_feature_importance_plot_rejects_wrong_input(importance_features):
    with pytest.raises(ValueError, match="dims \\('cv', level\\)"):
        mk_plot.feature_importance(importance_features.values)
    with pytest.raises(ValueError, match="top=0 must be a positive integer"):
        mk_plot.feature_importance(importance_features, top=0)
    plt.close("all")


# =========================================================================================================
# Ensemble comparison figures: mdcvkit.plot.rmsd_histograms, rmsf, pca_comparison, ramachandran_comparison,
# fes_comparison (block owned by the ensemble-comparison work; keep it at the end of the file)
# =========================================================================================================
from mdcvkit.metrics import compare_ensembles  # noqa: E402


@pytest.fixture(scope="module")
def ensemble_comparison():
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    from mdcvkit.datasets import alanine_dipeptide

    universe = alanine_dipeptide()
    positions = np.array([universe.atoms.positions for _ in universe.trajectory[::500]])  # 200 frames
    ensembles = []
    for frames in (positions[:120], positions[120:]):
        ensemble = mda.Merge(universe.atoms)
        ensemble.load_new(frames, format=MemoryReader)
        ensembles.append(ensemble)
    return compare_ensembles(*ensembles, select="not name H*", n_bootstrap=10, fes_bins=10)


def test_rmsd_histograms_and_rmsf_plots(ensemble_comparison):
    ds = ensemble_comparison
    fig, axes = plt.subplots(1, 2)
    assert plot.rmsd_histograms(ds, ax=axes[0], lw=2) is axes[0]
    assert axes[0].get_xlabel() == "RMSD to the reference structure (Å)"
    assert axes[0].get_ylabel() == "probability density (1/Å)"
    assert len(axes[0].patches) == 2 and axes[0].patches[0].get_linewidth() == 2  # kwargs reach ax.hist
    assert "W₁ = " in axes[0].get_title() and "MD halves" in axes[0].get_title()
    assert plot.rmsf(ds, ax=axes[1]) is axes[1]
    assert axes[1].get_xlabel() == "atom" and axes[1].get_ylabel() == "RMSF (Å)"
    np.testing.assert_allclose(axes[1].get_lines()[1].get_ydata(), ds.generated_rmsf)
    assert [line.get_label() for line in axes[1].get_lines()] == ["reference", "generated"]
    plt.close(fig)


def test_rmsf_plot_is_per_residue_for_one_atom_per_residue(ensemble_comparison):
    ds = ensemble_comparison.isel(atom=[0, 4, 8])  # one atom in each of ACE, ALA, NME
    ax = plot.rmsf(ds)
    assert ax.get_xlabel() == "residue"
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), ds.resid.values)
    plt.close(ax.figure)


@pytest.mark.parametrize("kind", ["density", "scatter"])
def test_pca_comparison_plot(ensemble_comparison, kind):
    axes = plot.pca_comparison(ensemble_comparison, kind=kind)
    assert axes.shape == (2,)
    assert [ax.get_xlabel() for ax in axes] == ["PC1 (Å)"] * 2 and axes[0].get_ylabel() == "PC2 (Å)"
    assert axes[0].get_xlim() == axes[1].get_xlim() and axes[0].get_ylim() == axes[1].get_ylim()
    assert axes[0].get_title() == "reference" and axes[1].get_title().startswith("generated (JSD")
    plt.close(axes[0].figure)


def test_ramachandran_and_fes_comparison_plots(ensemble_comparison):
    ds = ensemble_comparison
    axes = plot.ramachandran_comparison(ds, residue=2, s=5)
    assert axes[0].get_xlabel() == r"$\phi$ (deg)" and axes[1].get_ylabel() == r"$\psi$ (deg)"
    np.testing.assert_allclose(axes[1].collections[0].get_offsets()[:, 0],
                               ds.generated_dihedrals.sel(residue=2, angle="phi"))
    assert axes[1].get_title().startswith("generated, residue 2 (JSD φ")
    plt.close(axes[0].figure)
    fig, given = plt.subplots(1, 3)
    axes = plot.fes_comparison(ds, axes=given)
    assert list(axes) == list(given)
    assert [ax.get_xlabel() for ax in axes] == ["TIC1"] * 3 and axes[2].get_ylabel() == "TIC2"
    labels = [ax.get_ylabel() for ax in fig.axes[3:]]  # the colour bars
    assert labels == ["free energy (kT)", "free energy (kT)", "ΔF, generated − reference (kT)"]
    assert axes[2].get_title().startswith("RMS ΔF")
    plt.close(fig)


def test_comparison_plots_reject_wrong_input(ensemble_comparison):
    ds = ensemble_comparison
    with pytest.raises(ValueError, match="mdcvkit.metrics.compare_ensembles; got DataArray"):
        plot.rmsd_histograms(ds.reference_rmsd)
    with pytest.raises(ValueError, match="ds has no reference_dihedrals, generated_dihedrals; .*dihedrals=True"):
        plot.ramachandran_comparison(ds.drop_vars(["reference_dihedrals", "generated_dihedrals"]))
    with pytest.raises(ValueError, match=r"residue=7 has no φ/ψ in ds; pass one of \[2\]"):
        plot.ramachandran_comparison(ds, residue=7)
    with pytest.raises(ValueError, match="kind='hexbin' is not known; use one of \\['density', 'scatter'\\]"):
        plot.pca_comparison(ds, kind="hexbin")
    fig, axes = plt.subplots(1, 2)
    with pytest.raises(ValueError, match="axes holds 2 axes; pass 3 axes"):
        plot.fes_comparison(ds, axes=axes)
    with pytest.raises(ValueError, match="ds has no .*tica_lag"):
        plot.fes_comparison(ds.drop_vars("fes_difference"))
    plt.close("all")
