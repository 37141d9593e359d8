import numpy as np
import pytest
import xarray as xr
from sklearn.linear_model import LinearRegression

from mdcvkit.metrics import knn_score, regscore, regscore_threshold


def test_regscore_matches_scikit_learn():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 2))
    b = np.c_[a @ [1.5, -2.0] + 0.5 * rng.normal(size=300), np.tanh(a[:, 0]) + rng.normal(size=300)]
    expected = LinearRegression().fit(a, b).score(a, b)
    assert regscore(a, b) == pytest.approx(expected, rel=1e-10)


def test_regscore_is_one_for_affine_maps_and_zero_for_independent_cvs():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 2))
    assert regscore(a, 3 * a[:, ::-1] - 7) == pytest.approx(1.0)
    assert regscore(a, rng.normal(size=500)) < 0.02


def test_weighted_regscore_equals_repeated_frames():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 1)), rng.normal(size=(50, 1))
    w = rng.integers(0, 4, 50)
    repeated = np.repeat(np.arange(50), w)
    assert regscore(a, b, weights=w) == pytest.approx(regscore(a[repeated], b[repeated]), rel=1e-10)


def test_regscore_errors():
    with pytest.raises(ValueError, match="a has 3 frames but b has 4"):
        regscore(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        regscore([0.0, np.nan], [1.0, 2.0])


def test_regscore_threshold_from_bootstrap():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 2))
    calls = []

    def fit_cv(indices):
        calls.append(indices)
        rows = np.arange(1000) if indices is None else indices
        direction = np.linalg.svd(x[rows] - x[rows].mean(0))[2][0]  # first principal axis of the sample
        return x @ direction

    threshold, scores = regscore_threshold(fit_cv, 1000, n_bootstrap=8, fraction=0.1, seed=0)
    assert len(calls) == 9 and calls[0] is None and all(len(c) == 100 for c in calls[1:])
    assert scores.shape == (8,) and threshold == pytest.approx(np.percentile(scores, 5))
    assert 0 <= threshold <= 1


def test_knn_score_sees_determined_and_undetermined_targets():
    rng = np.random.default_rng(4)
    t = np.cumsum(rng.normal(size=4000)) / 20  # a slow random walk
    cv = np.c_[np.sin(t), np.cos(t)]
    score = knn_score(cv, np.c_[np.cos(2 * t), rng.normal(size=4000)], lengths=[2000, 2000])
    per_target = score.attrs["per_target"]
    assert per_target[0] > 0.95 and per_target[1] < 0.1
    assert float(score) == pytest.approx(np.mean(per_target))
    # the trajectory coordinate of a CV DataArray gives the same blocks as explicit lengths
    labelled = xr.DataArray(cv, dims=("frame", "cv"), coords={"trajectory": ("frame", np.repeat([0, 1], 2000))})
    targets = np.c_[np.cos(2 * t), rng.normal(size=4000)]
    assert float(knn_score(labelled, targets)) == float(knn_score(cv, targets, lengths=[2000, 2000]))


# --- compare_ensembles (issue 7, part 2) ---------------------------------------------------------

import MDAnalysis as mda  # noqa: E402
from MDAnalysis.coordinates.memory import MemoryReader  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from mdcvkit.metrics import compare_ensembles  # noqa: E402

SCALARS = ["rmsd_jsd", "rmsd_wasserstein", "rmsf_pearson", "rmsf_ratio_mean", "pca_jsd",
           "pca_variance_reference", "pca_variance_generated", "pca_rmsip"]


def _ensemble(atoms, positions):
    """An in-memory Universe with the topology of ``atoms`` and the frames ``positions`` (Å)."""
    universe = mda.Merge(atoms)
    universe.load_new(np.asarray(positions, dtype=np.float32), format=MemoryReader)
    return universe


@pytest.fixture(scope="module")
def adk():
    from MDAnalysisTests.datafiles import DCD, PSF

    universe = mda.Universe(PSF, DCD)
    positions = np.array([universe.atoms.positions for _ in universe.trajectory[::2]])  # 49 frames
    return _ensemble(universe.atoms, positions)


@pytest.fixture(scope="module")
def adk_self(adk):
    return compare_ensembles(adk, adk)


def test_identical_ensembles_give_zero_distances_and_unit_correlations(adk_self):
    ds = adk_self
    for name in ["rmsd_jsd", "rmsd_wasserstein", "pca_jsd", "paired_mse"]:
        assert float(ds[name]) == pytest.approx(0.0, abs=1e-9), name
    for name in ["rmsf_pearson", "rmsf_ratio_mean", "pca_rmsip", "paired_spearman"]:
        assert float(ds[name]) == pytest.approx(1.0, abs=1e-9), name
    np.testing.assert_allclose(ds.rmsf_ratio, 1.0)
    np.testing.assert_allclose(ds.dihedral_jsd, 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.distance_wasserstein, 0.0, atol=1e-12)
    assert ds.sizes["atom"] == 214 and ds.sizes["residue"] == 212 and ds.sizes["reference_frame"] == 49
    assert float(ds.reference_rmsd[0]) == pytest.approx(0.0, abs=1e-3)
    assert float(ds.baseline_rmsd_wasserstein) > 0 and float(ds.baseline_distance_wasserstein.max()) > 0
    assert 0.5 < float(ds.pca_variance_reference) <= 1.0
    for name, variable in ds.data_vars.items():
        assert "long_name" in variable.attrs and "units" in variable.attrs, name
    assert ds.reference_rmsd.attrs["units"] == "Å" and ds.paired_mse.attrs["units"] == "Å²"


def test_gaussian_noise_raises_rmsf_by_its_variance_and_input_is_unchanged(adk, adk_self):
    sigma = 0.4
    rng = np.random.default_rng(0)
    clean = np.array([adk.atoms.positions for _ in adk.trajectory])
    noisy = _ensemble(adk.atoms, clean + rng.normal(scale=sigma, size=clean.shape))
    adk.trajectory[5]
    ds = compare_ensembles(adk, noisy)
    # input untouched: same frame selected, same coordinates in every frame
    assert adk.trajectory.ts.frame == 5
    np.testing.assert_array_equal(np.array([adk.atoms.positions for _ in adk.trajectory]), clean)
    # RMSF² grows by 3σ² (n - 1)/n; superposition on 214 atoms absorbs ~1 % of it
    n = ds.sizes["generated_frame"]
    excess = float((ds.generated_rmsf ** 2 - ds.reference_rmsf ** 2).mean())
    assert excess == pytest.approx(3 * sigma**2 * (n - 1) / n, rel=0.03)
    assert float(ds.rmsf_ratio_mean) > 1.05 and float(ds.rmsf_pearson) > 0.8
    # paired frames: MSE per coordinate is σ²
    assert float(ds.paired_mse) == pytest.approx(sigma**2, rel=0.03)
    assert 0.9 < float(ds.paired_spearman) < 1.0
    rmsd_excess = float((ds.generated_rmsd.values ** 2 - ds.reference_rmsd.values ** 2).mean())
    # MSD to the reference structure grows by 3σ² on average; the cross term 2 d·ε / n_atoms with
    # deviations d of ~5 Å leaves a sampling error of ~0.04 Å² over 49 frames
    assert rmsd_excess == pytest.approx(3 * sigma**2, abs=0.12)
    assert float(ds.rmsd_wasserstein) > 0.05 and float(ds.dihedral_jsd.mean()) > 0.05
    assert float(ds.distance_wasserstein_residue.mean()) > 0.05


def test_rigid_motion_per_frame_leaves_all_metrics_unchanged(adk, adk_self):
    positions = np.array([adk.atoms.positions for _ in adk.trajectory], dtype=np.float64)
    rotations = Rotation.random(len(positions), random_state=1).as_matrix()
    shifts = np.random.default_rng(1).normal(scale=20.0, size=(len(positions), 1, 3))
    moved = _ensemble(adk.atoms, np.einsum("fij,faj->fai", rotations, positions) + shifts)
    ds = compare_ensembles(adk, moved)
    for name in SCALARS:
        assert float(ds[name]) == pytest.approx(float(adk_self[name]), abs=1e-4), name
    np.testing.assert_allclose(ds.generated_rmsd, adk_self.reference_rmsd, atol=1e-3)
    np.testing.assert_allclose(ds.generated_rmsf, adk_self.reference_rmsf, atol=1e-3)
    np.testing.assert_allclose(np.abs(ds.generated_pca), np.abs(adk_self.reference_pca), atol=1e-2)
    assert float(ds.paired_mse) < 1e-5 and float(ds.distance_wasserstein.max()) < 1e-3
    turn = (ds.generated_dihedrals.values - adk_self.reference_dihedrals.values + 180.0) % 360.0 - 180.0
    assert float(np.abs(turn).max()) < 1e-2


@pytest.fixture(scope="module")
def alanine():
    from mdcvkit.datasets import alanine_dipeptide

    universe = alanine_dipeptide()
    return universe, np.array([universe.atoms.positions for _ in universe.trajectory[::500]])  # 200 frames


def test_scaled_ensemble_gives_known_pair_distance_wasserstein(alanine):
    universe, positions = alanine
    heavy = "not name H*"
    reference = _ensemble(universe.atoms, positions)
    centroid = positions.mean(axis=1, keepdims=True)
    scaled = _ensemble(universe.atoms, centroid + 1.1 * (positions - centroid))  # every distance × 1.1
    ds = compare_ensembles(reference, scaled, select=heavy, dihedrals=False)
    atoms = reference.select_atoms(heavy).positions.shape[0]
    selected = positions[:, universe.select_atoms(heavy).indices]
    pair = np.linalg.norm(selected[:, :, None] - selected[:, None], axis=-1).mean(axis=0)
    np.testing.assert_allclose(ds.distance_wasserstein, 0.1 * pair, atol=1e-4)
    assert ds.sizes["atom"] == atoms == 10
    np.testing.assert_allclose(ds.rmsf_ratio, 1.1, rtol=1e-3)  # fluctuations scale with the structure


def test_md_halves_are_close_and_unpaired_ensembles_skip_paired_scores(alanine):
    universe, positions = alanine
    first, second = _ensemble(universe.atoms, positions[:100]), _ensemble(universe.atoms, positions[100:150])
    ds = compare_ensembles(first, second, select="not name H*", bins=20, pca_bins=10, dihedral_bins=18)
    assert "paired_mse" not in ds and "paired_spearman" not in ds
    assert ds.sizes["reference_frame"] == 100 and ds.sizes["generated_frame"] == 50
    assert list(ds.residue.values) == [2] and list(ds.angle.values) == ["phi", "psi"]
    assert 0 <= float(ds.dihedral_jsd_residue[0]) < 0.6 and float(ds.rmsf_pearson) > 0.8
    assert ds.attrs["dihedral_bins"] == 18 and "binning" in ds.attrs


def test_baseline_is_the_comparison_of_the_reference_halves(alanine):
    universe, positions = alanine
    reference = _ensemble(universe.atoms, positions[:60])
    generated = _ensemble(universe.atoms, positions[60:100])
    ds = compare_ensembles(reference, generated, select="not name H*")
    halves = compare_ensembles(_ensemble(universe.atoms, positions[:30]), _ensemble(universe.atoms, positions[30:60]),
                               select="not name H*", baseline=False)  # same frame 0, so the same RMSD
    for name in ["rmsd_jsd", "rmsd_wasserstein", "dihedral_jsd", "distance_wasserstein_residue"]:
        np.testing.assert_allclose(ds["baseline_" + name], halves[name], atol=1e-6, err_msg=name)
    assert "baseline_rmsd_jsd" not in halves and ds.attrs["baseline"] == "first vs second half of reference"
    assert 0 <= float(ds.baseline_pca_jsd) <= 1


def test_compare_ensembles_errors(adk):
    with pytest.raises(ValueError, match="picks 214 atoms in reference but 100 in generated"):
        compare_ensembles(adk, adk.select_atoms("resid 1-100"))
    with pytest.raises(ValueError, match="select='name XX' matches no atoms in reference"):
        compare_ensembles(adk, adk, select="name XX")
    single = mda.Merge(adk.atoms)
    with pytest.raises(ValueError, match="generated has n_frames=1; an ensemble needs at least 2 frames"):
        compare_ensembles(adk, single)
    positions = np.array([adk.atoms.positions for _ in adk.trajectory[:3]])
    positions[1, adk.select_atoms("name CA").indices[0]] = np.nan
    with pytest.raises(ValueError, match="generated holds NaN"):
        compare_ensembles(adk, _ensemble(adk.atoms, positions))
    with pytest.raises(ValueError, match="reference has n_frames=3; pass at least 4 reference frames or baseline"):
        compare_ensembles(_ensemble(adk.atoms, np.nan_to_num(positions)), adk)
    with pytest.raises(ValueError, match="reference_frame=49 is out of range"):
        compare_ensembles(adk, adk, reference_frame=49)
    with pytest.raises(TypeError, match="reference must be an MDAnalysis Universe or AtomGroup, not ndarray"):
        compare_ensembles(positions, adk)
    ca = adk.select_atoms("name CA")
    ca_only = _ensemble(ca, np.array([ca.positions for _ in adk.trajectory[:3]]))
    with pytest.raises(ValueError, match="generated for 0 .*pass dihedrals=False"):
        compare_ensembles(adk, ca_only)
