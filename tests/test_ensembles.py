"""Tests of mdcvkit.ensembles: compare_ensembles on inputs with known answers, its baselines, intervals and errors."""

import MDAnalysis as mda
import numpy as np
import pytest
from MDAnalysis.analysis import rms
from MDAnalysis.coordinates.memory import MemoryReader
from scipy.spatial.transform import Rotation
from scipy.stats import wasserstein_distance

from mdcvkit.frames import in_memory as _ensemble
from mdcvkit.metrics import compare_ensembles

SCALARS = ["rmsd_jsd", "rmsd_wasserstein", "rmsf_pearson", "rmsf_ratio_mean", "pca_jsd",
           "pca_variance_reference", "pca_variance_generated", "pca_rmsip", "distance_wasserstein_mean",
           "fes_jsd", "fes_rms_difference"]


def _synthetic(positions, resnames=None):
    """An in-memory Universe of ``positions`` (n_frames, n_atoms, 3) with atoms named X0, X1, …"""
    n_atoms = positions.shape[1]
    universe = mda.Universe.empty(n_atoms, trajectory=True)
    universe.add_TopologyAttr("name", [f"X{i}" for i in range(n_atoms)])
    universe.add_TopologyAttr("resname", resnames or ["MOL"])
    universe.add_TopologyAttr("resid", [1])
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
    return compare_ensembles(adk, adk, paired=True, n_bootstrap=10)


def test_identical_ensembles_give_zero_distances_and_unit_correlations(adk_self):
    ds = adk_self
    for name in ["rmsd_jsd", "rmsd_wasserstein", "pca_jsd", "paired_mse", "distance_wasserstein_mean", "fes_jsd",
                 "fes_rms_difference"]:
        assert float(ds[name]) == pytest.approx(0.0, abs=1e-9), name
    for name in ["rmsf_pearson", "rmsf_ratio_mean", "pca_rmsip", "paired_spearman"]:
        assert float(ds[name]) == pytest.approx(1.0, abs=1e-9), name
    np.testing.assert_allclose(ds.rmsf_ratio, 1.0)
    np.testing.assert_allclose(ds.pca_cumulative_overlap, 1.0)
    np.testing.assert_allclose(ds.dihedral_jsd, 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.distance_wasserstein, 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.fes_difference.fillna(0.0), 0.0, atol=1e-12)
    assert ds.sizes["atom"] == 214 and ds.sizes["residue"] == 212 and ds.sizes["reference_frame"] == 49
    assert float(ds.reference_rmsd[0]) == pytest.approx(0.0, abs=1e-3)
    assert float(ds.baseline_rmsd_wasserstein) > 0 and float(ds.baseline_distance_wasserstein.max()) > 0
    assert 0.5 < float(ds.pca_variance_reference) <= 1.0
    variance = ds.reference_pca_variance_ratio.values
    assert np.all(np.diff(variance) <= 0) and 0.5 < variance[:2].sum() <= 1.0
    for name, variable in ds.data_vars.items():
        assert "long_name" in variable.attrs and "units" in variable.attrs, name
    assert ds.reference_rmsd.attrs["units"] == "Å" and ds.paired_mse.attrs["units"] == "Å²"
    assert ds.fes_rms_difference.attrs["units"] == "kT" and ds.reference_fes.dims == ("tic1_bin", "tic2_bin")
    assert "20 × 20 equal-width bins over TIC1" in ds.fes_jsd.attrs["binning"]
    assert ds.rmsd_jsd_interval.attrs["binning"] == ds.rmsd_jsd.attrs["binning"]


def test_bootstrap_intervals_of_identical_ensembles_hold_sampling_noise(adk_self):
    ds = adk_self
    for name in ["rmsd_wasserstein", "distance_wasserstein_mean", "rmsd_jsd", "pca_jsd", "fes_jsd"]:
        lower, upper = ds[name + "_interval"].values
        base_lower, base_upper = ds["baseline_" + name + "_interval"].values
        # resampling two copies of one ensemble: noise above 0, not above the noise of its halves
        assert 0 <= lower < upper and 0 < base_lower < base_upper and upper < 1.5 * base_upper, name
    assert ds.dihedral_jsd_interval.dims == ("residue", "angle", "bound")
    assert list(ds.bound.values) == ["lower", "upper"] and ds.attrs["n_bootstrap"] == 10
    assert ds.rmsd_jsd_interval.attrs["long_name"].startswith("95 % bootstrap interval of")
    lower, upper = ds.rmsf_pearson_interval.values
    assert 0.9 < lower <= upper <= 1.0 and float(ds.paired_mse_interval[1]) == 0.0


def test_shifted_distribution_gives_its_wasserstein_distance_within_the_interval():
    rng = np.random.default_rng(0)
    n = 400
    bond = 3.0 + 0.2 * rng.standard_normal(n)
    positions = np.zeros((n, 3, 3))
    positions[:, 1, 0] = bond
    positions[:, 2, 1] = 4.0 + 0.2 * rng.standard_normal(n)
    stretched = positions.copy()
    stretched[:, 1, 0] += 0.25  # every bond 0-1 longer by 0.25 Å: W1 = 0.25 Å exactly
    ds = compare_ensembles(_synthetic(positions), _synthetic(stretched), select="all", dihedrals=False,
                           tica_lag=None, n_bootstrap=200, seed=1)
    assert float(ds.distance_wasserstein[0, 1]) == pytest.approx(0.25, abs=1e-5)
    assert float(ds.distance_wasserstein[1, 0]) == float(ds.distance_wasserstein[0, 1])
    assert float(ds.distance_wasserstein[0, 2]) == pytest.approx(0.0, abs=1e-5)
    lower, upper = ds.distance_wasserstein_interval[0, 1].values
    assert lower < 0.25 < upper and float(ds.baseline_distance_wasserstein_interval[0, 1, 1]) < 0.1
    # the presorted Wasserstein-1 distance is scipy's, also for samples of different sizes
    unequal = compare_ensembles(_synthetic(positions), _synthetic(stretched[:150]), select="all", dihedrals=False,
                                tica_lag=None, n_bootstrap=0)
    assert float(unequal.rmsd_wasserstein) == pytest.approx(
        wasserstein_distance(unequal.reference_rmsd, unequal.generated_rmsd), abs=1e-12)
    first = np.linalg.norm(positions[:, 1] - positions[:, 2], axis=-1)
    second = np.linalg.norm(stretched[:150, 1] - stretched[:150, 2], axis=-1)
    assert float(unequal.distance_wasserstein[1, 2]) == pytest.approx(wasserstein_distance(first, second), abs=1e-5)
    assert "rmsd_jsd_interval" not in unequal and unequal.attrs["tica"] == "none"


def test_rmsf_of_a_known_vibration_and_agreement_with_mdanalysis():
    amplitude, n = 0.6, 360
    phase = 2 * np.pi * np.arange(n) / n  # one period sampled uniformly: <cos²> = 1/2
    scaffold = np.array([[0, 5, 0], [0, -5, 0], [0, 0, 5], [0, 0, -5], [3, 3, 3], [-3, -3, -3.0]])
    positions = np.repeat(scaffold[None], n, axis=0)
    stretch = (4.0 + amplitude * np.cos(phase))[:, None] * np.array([1.0, 0, 0])
    positions = np.concatenate([positions, stretch[:, None], -stretch[:, None]], axis=1)  # symmetric stretch
    vibrating = _synthetic(positions)
    ds = compare_ensembles(vibrating, vibrating, select="all", dihedrals=False, tica_lag=None, n_bootstrap=0)
    np.testing.assert_allclose(ds.reference_rmsf[-2:], amplitude / np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(ds.reference_rmsf[:-2], 0.0, atol=1e-4)
    expected = rms.RMSF(vibrating.atoms).run().results.rmsf  # no superposition needed: the scaffold is still
    np.testing.assert_allclose(ds.generated_rmsf, expected, atol=1e-5)


def test_gaussian_noise_raises_rmsf_by_its_variance_and_input_is_unchanged(adk, adk_self):
    sigma = 0.4
    rng = np.random.default_rng(0)
    clean = np.array([adk.atoms.positions for _ in adk.trajectory])
    noisy = _ensemble(adk.atoms, clean + rng.normal(scale=sigma, size=clean.shape))
    adk.trajectory[5]
    ds = compare_ensembles(adk, noisy, paired=True, n_bootstrap=10)
    # input untouched: same frame selected, same coordinates in every frame
    assert adk.trajectory.ts.frame == 5
    np.testing.assert_array_equal(np.array([adk.atoms.positions for _ in adk.trajectory]), clean)
    # RMSF² grows by 3σ² (n - 1)/n; superposition on 214 atoms absorbs ~1 % of it
    n = ds.sizes["generated_frame"]
    excess = float((ds.generated_rmsf ** 2 - ds.reference_rmsf ** 2).mean())
    assert excess == pytest.approx(3 * sigma**2 * (n - 1) / n, rel=0.03)
    assert float(ds.rmsf_ratio_mean) > 1.05 and float(ds.rmsf_pearson) > 0.8
    assert float(ds.rmsf_ratio_mean_interval[0]) > float(ds.baseline_rmsf_ratio_mean_interval[1])
    # paired frames: MSE per coordinate is σ², less the 6 of 642 degrees of freedom that superposition absorbs
    expected = sigma**2 * (1 - 6 / (3 * 214))
    assert float(ds.paired_mse) == pytest.approx(expected, rel=0.02)
    lower, upper = ds.paired_mse_interval.values
    assert lower < expected < upper
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
    ds = compare_ensembles(adk, moved, paired=True, n_bootstrap=0)
    for name in SCALARS:
        assert float(ds[name]) == pytest.approx(float(adk_self[name]), abs=1e-4), name
    np.testing.assert_allclose(ds.generated_rmsd, adk_self.reference_rmsd, atol=1e-3)
    np.testing.assert_allclose(ds.generated_rmsf, adk_self.reference_rmsf, atol=1e-3)
    np.testing.assert_allclose(np.abs(ds.generated_pca), np.abs(adk_self.reference_pca), atol=1e-2)
    np.testing.assert_allclose(ds.generated_tica, ds.reference_tica, atol=1e-3)
    assert float(ds.paired_mse) < 1e-5 and float(ds.distance_wasserstein.max()) < 1e-3
    turn = (ds.generated_dihedrals.values - adk_self.reference_dihedrals.values + 180.0) % 360.0 - 180.0
    assert float(np.abs(turn).max()) < 1e-2


@pytest.fixture(scope="module")
def alanine():
    from mdcvkit.datasets import alanine_dipeptide

    universe = alanine_dipeptide()
    return universe, np.array([universe.atoms.positions for _ in universe.trajectory[::250]])  # 400 frames


def test_tica_free_energy_difference_is_zero_for_itself_and_grows_with_perturbation(alanine):
    universe, positions = alanine
    reference = _ensemble(universe.atoms, positions)
    rng = np.random.default_rng(2)
    values = []
    for sigma in [0.0, 0.2, 0.6]:
        generated = _ensemble(universe.atoms, positions + rng.normal(scale=sigma, size=positions.shape))
        ds = compare_ensembles(reference, generated, select="not name H*", tica_lag=1, fes_bins=10,
                               distances=False, dihedrals=False, n_bootstrap=0)
        values.append((float(ds.fes_rms_difference), float(ds.fes_jsd)))
    assert values[0] == (0.0, 0.0)
    assert 0 < values[1][0] < values[2][0] and 0 < values[1][1] < values[2][1]
    assert values[2][1] > float(ds.baseline_fes_jsd)
    assert ds.sizes["tic1_bin"] == 10 and ds.reference_tica.dims == ("reference_frame", "tic")
    # pair distances as TICA features give the same zero for an ensemble against itself
    ds = compare_ensembles(reference, reference, select="not name H*", tica_features="distances",
                           distances=False, dihedrals=False, n_bootstrap=0)
    assert float(ds.fes_rms_difference) == 0.0 and "distances" in ds.attrs["tica"]


def test_scaled_ensemble_gives_known_pair_distance_wasserstein(alanine):
    universe, positions = alanine
    heavy = "not name H*"
    reference = _ensemble(universe.atoms, positions)
    centroid = positions.mean(axis=1, keepdims=True)
    scaled = _ensemble(universe.atoms, centroid + 1.1 * (positions - centroid))  # every distance × 1.1
    ds = compare_ensembles(reference, scaled, select=heavy, dihedrals=False, tica_lag=None, n_bootstrap=50)
    atoms = reference.select_atoms(heavy).positions.shape[0]
    selected = positions[:, universe.select_atoms(heavy).indices]
    pair = np.linalg.norm(selected[:, :, None] - selected[:, None], axis=-1).mean(axis=0)
    np.testing.assert_allclose(ds.distance_wasserstein, 0.1 * pair, atol=1e-4)
    mean = 0.1 * pair[np.triu_indices(atoms, k=1)].mean()
    assert float(ds.distance_wasserstein_mean) == pytest.approx(mean, abs=1e-5)
    lower, upper = ds.distance_wasserstein_mean_interval.values
    assert lower < mean < upper
    assert ds.sizes["atom"] == atoms == 10
    np.testing.assert_allclose(ds.rmsf_ratio, 1.1, rtol=1e-3)  # fluctuations scale with the structure


def test_md_halves_are_close_and_unpaired_ensembles_skip_paired_scores(alanine):
    universe, positions = alanine
    first, second = _ensemble(universe.atoms, positions[:200]), _ensemble(universe.atoms, positions[200:300])
    ds = compare_ensembles(first, second, select="not name H*", bins=20, pca_bins=10, dihedral_bins=18,
                           n_bootstrap=20)
    assert "paired_mse" not in ds and "paired_spearman" not in ds
    assert ds.sizes["reference_frame"] == 200 and ds.sizes["generated_frame"] == 100
    assert list(ds.residue.values) == [2] and list(ds.angle.values) == ["phi", "psi"]
    assert 0 <= float(ds.dihedral_jsd_residue[0]) < 0.6 and float(ds.rmsf_pearson) > 0.8
    assert ds.attrs["dihedral_bins"] == 18 and "binning" in ds.attrs
    assert ds.dihedral_jsd.attrs["binning"] == "18 bins of 20° over [-180°, 180°)"
    # the same MD: every distance below the upper end of the baseline interval
    for name in ["rmsd_wasserstein", "distance_wasserstein_mean", "dihedral_jsd_residue"]:
        assert np.all(ds[name].values < ds["baseline_" + name + "_interval"].sel(bound="upper").values), name
    # paired scores need paired=True and frames one to one
    same_size = compare_ensembles(first, _ensemble(universe.atoms, positions[200:]), select="not name H*",
                                  n_bootstrap=0)
    assert "paired_mse" not in same_size and same_size.sizes["generated_frame"] == 200


def test_baseline_is_the_comparison_of_the_reference_halves(alanine):
    universe, positions = alanine
    reference = _ensemble(universe.atoms, positions[:60])
    generated = _ensemble(universe.atoms, positions[60:100])
    ds = compare_ensembles(reference, generated, select="not name H*", n_bootstrap=0)
    halves = compare_ensembles(_ensemble(universe.atoms, positions[:30]), _ensemble(universe.atoms, positions[30:60]),
                               select="not name H*", baseline=False, n_bootstrap=0)  # same frame 0: same RMSD
    # binned distances share the grid of the full comparison, so compare the unbinned ones and the dihedrals
    for name in ["rmsd_wasserstein", "dihedral_jsd", "distance_wasserstein_residue", "rmsf_pearson"]:
        np.testing.assert_allclose(ds["baseline_" + name], halves[name], atol=1e-6, err_msg=name)
    assert "baseline_rmsd_jsd" not in halves and ds.attrs["baseline"] == "first vs second half of reference"
    assert 0 <= float(ds.baseline_pca_jsd) <= 1 and 0 < float(ds.baseline_pca_rmsip) <= 1


def test_bootstrap_is_seeded(alanine):
    universe, positions = alanine
    reference, generated = _ensemble(universe.atoms, positions[:100]), _ensemble(universe.atoms, positions[100:160])
    runs = [compare_ensembles(reference, generated, select="not name H*", n_bootstrap=20, seed=seed)
            for seed in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0].pca_jsd_interval, runs[1].pca_jsd_interval)
    assert not np.array_equal(runs[0].pca_jsd_interval, runs[2].pca_jsd_interval)


def test_block_bootstrap_widens_the_intervals_of_time_correlated_frames(alanine):
    universe = alanine[0]
    contiguous = np.array([universe.atoms.positions for _ in universe.trajectory[:600]])  # 1 ps apart
    reference, generated = _ensemble(universe.atoms, contiguous[:400]), _ensemble(universe.atoms, contiguous[400:])
    widths = []
    for block_length in (1, 50):
        ds = compare_ensembles(reference, generated, select="not name H*", dihedrals=False, tica_lag=None,
                               n_bootstrap=100, block_length=block_length)
        widths.append([float(ds[name].diff("bound")[0]) for name in
                       ["rmsd_wasserstein_interval", "baseline_rmsd_wasserstein_interval", "paired_mse_interval"]
                       if name in ds])
    assert ds.attrs["block_length"] == 50 and "paired_mse_interval" not in ds
    assert widths[1][0] > 1.8 * widths[0][0] and widths[1][1] > 1.8 * widths[0][1]


def test_compare_ensembles_errors(adk):
    with pytest.raises(ValueError, match="picks 214 atoms in reference but 100 in generated"):
        compare_ensembles(adk, adk.select_atoms("resid 1-100"))
    with pytest.raises(ValueError, match="select='name XX' matches no atoms in reference"):
        compare_ensembles(adk, adk, select="name XX")
    with pytest.raises(ValueError, match=r"select='name \(' is not an MDAnalysis selection"):
        compare_ensembles(adk, adk, select="name (")
    with pytest.raises(ValueError, match="select='resname ALA' matches no atoms in generated"):
        compare_ensembles(adk, adk.select_atoms("not resname ALA"), select="resname ALA")
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
        compare_ensembles(adk, ca_only, n_bootstrap=0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"bins": 0}, "bins=0 must be an integer >= 2; pass e.g. bins=50"),
    ({"pca_bins": 2.5}, "pca_bins=2.5 must be an integer >= 2"),
    ({"fes_bins": True}, "fes_bins=True must be an integer >= 2"),
    ({"n_bootstrap": -1}, "n_bootstrap=-1 must be an integer >= 0; pass e.g. n_bootstrap=100"),
    ({"confidence": 1.5}, "confidence=1.5 must be in \\(0, 1\\)"),
    ({"tica_features": "contacts"}, "tica_features='contacts' is not known; use one of \\['distances', 'positions'\\]"),
    ({"tica_lag": 48}, "tica_lag=48 must be smaller than n_frames - 1 = 48 of reference"),
    ({"tica_lag": 0}, "tica_lag=0 must be an integer >= 1"),
    ({"block_length": 0}, "block_length=0 must be an integer >= 1"),
    ({"block_length": 25}, "block_length=25 is longer than the halves of reference \\(n_frames=49\\); pass a "
                           "block_length of at most 24"),
])
def test_compare_ensembles_rejects_bad_settings(adk, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare_ensembles(adk, adk, **kwargs)


def test_rigid_ensemble_has_no_tica():
    rotations = Rotation.random(20, random_state=0).as_matrix()
    rigid = _synthetic(np.einsum("fij,aj->fai", rotations, [[0, 0, 0], [1.5, 0, 0], [0, 2.0, 0]]))
    with pytest.raises(ValueError, match="TICA of reference on tica_features='positions' failed .* tica_lag=None"):
        compare_ensembles(rigid, rigid, select="all", dihedrals=False)
    ds = compare_ensembles(rigid, rigid, select="all", dihedrals=False, tica_lag=None, n_bootstrap=5)
    assert float(ds.reference_rmsd.max()) < 1e-5 and float(ds.rmsd_wasserstein) < 1e-5


def test_paired_needs_frames_one_to_one(adk, alanine):
    universe, positions = alanine
    with pytest.raises(ValueError, match="paired=True needs the same number of frames, but reference has 400 and "
                                         "generated 100"):
        compare_ensembles(_ensemble(universe.atoms, positions), _ensemble(universe.atoms, positions[:100]),
                          select="not name H*", paired=True)


def test_geometry_judges_noisy_frames_against_the_md_floor(adk):
    """AdK (PSF bonds): MD frames are the floor; Gaussian noise of 0.2 Å stretches bonds and inverts centres."""
    positions = adk.trajectory.timeseries(order="fac")[:10]
    noisy = _ensemble(adk.atoms, positions + np.random.default_rng(0).normal(0, 0.2, positions.shape))
    ds = compare_ensembles(adk, noisy, geometry=True, dihedrals=False, distances=False, tica_lag=None,
                           n_bootstrap=0)
    assert ds.reference_bond_rmsd.dims == ("reference_frame",) and ds.generated_bond_rmsd.sizes == {
        "generated_frame": 10}
    assert ds.reference_bond_rmsd.attrs["units"] == "Å" and ds.generated_angle_rmsd.attrs["units"] == "degree"
    assert int(ds.reference_chirality_inversions.sum()) == 0
    assert float(ds.generated_bond_rmsd.min()) > 3 * float(ds.reference_bond_rmsd.max())
    assert int(ds.generated_chirality_inversions.min()) > 0
    assert float(ds.generated_clashes.mean()) > float(ds.reference_clashes.mean())
    with pytest.raises(ValueError, match="geometry=True judges all atoms"):
        heavy = adk.select_atoms("not name H*")
        compare_ensembles(adk, _ensemble(heavy, positions[:, heavy.indices]), geometry=True, n_bootstrap=0)


def test_harmonic_ensemble_similarity_of_mdaencore(alanine):
    """HES is 0 for an ensemble against itself and grows with noise, beside the reference-halves baseline."""
    pytest.importorskip("mdaencore")
    universe, positions = alanine
    reference = _ensemble(universe.atoms, positions)
    settings = dict(select="not name H*", dihedrals=False, distances=False, tica_lag=None, n_bootstrap=0, hes=True)
    itself = compare_ensembles(reference, reference, **settings)
    assert float(itself.hes) == pytest.approx(0.0, abs=1e-6)
    assert float(itself.baseline_hes) > 0
    noisy = _ensemble(universe.atoms, positions + np.random.default_rng(0).normal(0, 0.3, positions.shape))
    assert float(compare_ensembles(reference, noisy, **settings).hes) > 3 * float(itself.baseline_hes)
