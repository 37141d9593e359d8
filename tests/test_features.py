import MDAnalysis as mda
import numpy as np
import pytest
import torch
from MDAnalysis.analysis import rms
from MDAnalysis.lib.distances import calc_bonds, calc_dihedrals
from MDAnalysis.lib.mdamath import triclinic_vectors
from MDAnalysisTests.datafiles import DCD, PSF

from mdcvkit import datasets
from mdcvkit.features import (
    AlignedPositions,
    Concatenate,
    Dihedrals,
    FeatureCollector,
    FramePositions,
    PairwiseDistances,
    Positions,
    backbone_dihedral_indices,
    featurizer_config,
    featurizer_from_config,
    frame_coordinates,
    kabsch_align,
    make_featurizer,
    separated_pairs,
)


@pytest.fixture(scope="module")
def ala2():
    return datasets.alanine_dipeptide()


@pytest.fixture(scope="module")
def adk():
    return mda.Universe(PSF, DCD)


def random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_kabsch_matches_mdanalysis_rmsd(adk):
    ca = adk.select_atoms("name CA")
    ref = ca.positions.copy()
    frames = []
    for _ in adk.trajectory[::20]:
        frames.append(ca.positions.copy())
    frames = np.array(frames)
    aligned = kabsch_align(torch.from_numpy(frames).double(), torch.from_numpy(ref).double()).numpy()
    ref_c = ref - ref.mean(0)
    ours = np.sqrt(((aligned - ref_c) ** 2).sum(-1).mean(-1))
    theirs = [rms.rmsd(f, ref, center=True, superposition=True) for f in frames]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_kabsch_closed_form_gradient_matches_autograd_through_svd(ala2):
    heavy = ala2.select_atoms("not name H*")
    ala2.trajectory[0]
    ref = torch.from_numpy(heavy.positions.astype(np.float64))
    frames = []
    for k, _ in enumerate(ala2.trajectory[100:104]):
        frames.append(heavy.positions.astype(np.float64) @ random_rotation(k).T)
    x = torch.from_numpy(np.array(frames)).requires_grad_(True)
    weights = torch.linspace(0.5, 2.0, heavy.n_atoms, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: kabsch_align(p, ref, weights), (x,))
    upstream = torch.from_numpy(np.random.default_rng(0).normal(size=x.shape))
    fast = kabsch_align(x, ref, weights)
    (g_fast,) = torch.autograd.grad((fast * upstream).sum(), x)
    # a reference that requires gradients takes autograd through the SVD
    slow = kabsch_align(x, ref.clone().requires_grad_(True), weights)
    (g_slow,) = torch.autograd.grad((slow * upstream).sum(), x)
    torch.testing.assert_close(fast, slow, atol=1e-12, rtol=0)
    torch.testing.assert_close(g_fast, g_slow, atol=1e-9, rtol=1e-9)


def test_kabsch_closed_form_is_differentiable_once(ala2):
    heavy = ala2.select_atoms("not name H*")
    ala2.trajectory[0]
    ref = torch.from_numpy(heavy.positions.astype(np.float64))
    ala2.trajectory[50]
    x = torch.from_numpy(heavy.positions.astype(np.float64)[None]).requires_grad_(True)
    (grad,) = torch.autograd.grad((kabsch_align(x, ref) ** 3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):  # not silently wrong
        torch.autograd.grad(grad.sum(), x)
    # through the SVD (a reference that requires gradients) second derivatives exist
    (grad,) = torch.autograd.grad((kabsch_align(x, ref.clone().requires_grad_(True)) ** 3).sum(), x,
                                  create_graph=True)  # fmt: skip
    (second,) = torch.autograd.grad(grad.sum(), x)
    assert torch.isfinite(second).all()


def test_aligned_features_invariant_to_rigid_motion(ala2):
    heavy = ala2.select_atoms("not name H*")
    ala2.trajectory[0]
    ref = heavy.positions.copy()
    ala2.trajectory[123]
    x = heavy.positions.astype(np.float64)
    moved = x @ random_rotation(3).T + np.array([5.0, -2.0, 11.0])
    featurizer = AlignedPositions(ref).double()
    a = featurizer(torch.from_numpy(x[None]))
    b = featurizer(torch.from_numpy(moved[None]))
    torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


def test_aligned_gradient_is_finite_and_translation_free(ala2):
    heavy = ala2.select_atoms("not name H*")
    featurizer = AlignedPositions(heavy.positions).double()
    x = torch.tensor(heavy.positions[None], dtype=torch.float64, requires_grad=True)
    value = featurizer(x + 0.3 * torch.randn_like(x)).sin().sum()
    (grad,) = torch.autograd.grad(value, x)
    assert torch.isfinite(grad).all()
    # a function of aligned coordinates does not change under translation: forces sum to zero
    torch.testing.assert_close(grad.sum(1), torch.zeros(1, 3, dtype=torch.float64), atol=1e-8, rtol=0)
    assert torch.autograd.gradcheck(featurizer, (x.detach().clone().requires_grad_(),), eps=1e-6, atol=1e-4)


def test_aligned_subset_fits_all_atoms_and_returns_some(ala2):
    """``atoms``: the fit uses every atom, the features are the chosen atoms' columns of the full fit."""
    heavy = ala2.select_atoms("not name H*")
    backbone = [k for k, name in enumerate(heavy.names) if name != "CB"]
    reference = heavy.positions.copy()
    full = AlignedPositions(reference, names=heavy.names).double()
    subset = AlignedPositions(reference, names=heavy.names, atoms=backbone).double()
    assert subset.n_atoms == 10 and subset.n_features == 27 and "CB:x" not in subset.labels
    x = torch.as_tensor(np.stack([heavy.positions for _ in ala2.trajectory[100:103]]), dtype=torch.float64)
    expected = full(x).reshape(3, 10, 3)[:, backbone].reshape(3, -1)
    torch.testing.assert_close(subset(x), expected, atol=1e-10, rtol=0)
    rebuilt = featurizer_from_config(featurizer_config(subset)).double()
    torch.testing.assert_close(rebuilt(x), expected, atol=1e-10, rtol=0)
    reordered = AlignedPositions(reference, names=heavy.names, atoms=range(9, -1, -1)).double()
    assert reordered.labels[:3] == ["C:x", "C:y", "C:z"] and reordered.labels[-3:] == ["CH3:x", "CH3:y", "CH3:z"]
    torch.testing.assert_close(reordered(x), full(x).reshape(3, 10, 3).flip(1).reshape(3, -1), atol=1e-10, rtol=0)


@pytest.mark.parametrize("atoms", [[], [0, 0], [10], [1.5], "CA"])
def test_aligned_subset_checked(ala2, atoms):
    heavy = ala2.select_atoms("not name H*")
    with pytest.raises(ValueError, match=r"atoms=.* must be distinct atom indices in \[0, 10\)"):
        AlignedPositions(heavy.positions, atoms=atoms)


def test_frame_positions_see_rigid_motions_not_reflections(ala2):
    """Body-frame coordinates: unchanged by rotation and translation; a mirror image flips z only."""
    heavy = ala2.select_atoms("not name H*")
    ala2.trajectory[77]
    featurizer = make_featurizer("frame", heavy).double()
    assert isinstance(featurizer, FramePositions)
    assert [heavy.names[k] for k in featurizer.frame] == ["CA", "N", "C"]
    assert featurizer.n_features == 3 * (heavy.n_atoms - 3) == len(featurizer.feature_atoms)
    x = heavy.positions.astype(np.float64)
    a = featurizer(torch.from_numpy(x[None]))
    moved = x @ random_rotation(5).T + np.array([-3.0, 8.0, 1.5])
    torch.testing.assert_close(featurizer(torch.from_numpy(moved[None])), a, atol=1e-9, rtol=0)
    mirrored = featurizer(torch.from_numpy((x * [1.0, 1.0, -1.0])[None])).reshape(-1, 3)
    torch.testing.assert_close(mirrored, a.reshape(-1, 3) * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    # distances from the origin atom are kept; the axes are orthonormal and right-handed
    origin = x[featurizer.frame[0]]
    np.testing.assert_allclose(np.linalg.norm(a.reshape(-1, 3).numpy(), axis=1),
                               np.linalg.norm(x[featurizer.atoms] - origin, axis=1), rtol=1e-12)  # fmt: skip
    frame = frame_coordinates(torch.from_numpy(x[None]), featurizer.frame, featurizer.frame)[0].numpy()
    assert frame[1, 1] == pytest.approx(0, abs=1e-12) and frame[1, 0] > 0  # N on +x
    assert frame[2, 2] == pytest.approx(0, abs=1e-12) and frame[2, 1] > 0  # C in the xy plane, y > 0
    rebuilt = featurizer_from_config(featurizer_config(featurizer)).double()
    torch.testing.assert_close(rebuilt(torch.from_numpy(x[None])), a, rtol=0, atol=0)


def test_frame_positions_bad_arguments(ala2):
    with pytest.raises(ValueError, match=r"frame=\(1, 1, 2\) must be 3 distinct atom indices in \[0, 10\)"):
        FramePositions(10, (1, 1, 2))
    with pytest.raises(ValueError, match=r"frame=\(0, 1, 12\)"):
        FramePositions(10, (0, 1, 12))
    with pytest.raises(ValueError, match="at least one atom besides the frame"):
        FramePositions(3, (0, 1, 2))
    with pytest.raises(ValueError, match="features='frame' needs the N, CA and C of one residue"):
        make_featurizer("frame", ala2.select_atoms("name CA CB O"))


def test_distances_match_mdanalysis_triclinic_box():
    rng = np.random.default_rng(0)
    dims = np.array([30.0, 35.0, 40.0, 70.0, 80.0, 65.0], dtype=np.float32)
    box = triclinic_vectors(dims)
    positions = (rng.random((4, 12, 3)) @ box).astype(np.float32) * 1.3  # some atoms outside the box
    featurizer = PairwiseDistances(12, periodic=True)
    ours = featurizer(
        torch.from_numpy(positions).double(), torch.from_numpy(np.repeat(box[None], 4, 0)).double()
    ).numpy()
    pairs = featurizer.pairs.numpy()
    for f in range(4):
        theirs = calc_bonds(positions[f, pairs[:, 0]], positions[f, pairs[:, 1]], box=dims)
        np.testing.assert_allclose(ours[f], theirs, atol=1e-3)


def test_distances_without_box_are_euclidean(ala2):
    heavy = ala2.select_atoms("not name H*")
    featurizer = make_featurizer("distances", heavy)
    d = featurizer(torch.from_numpy(heavy.positions[None])).numpy()[0]
    i, j = featurizer.pairs.numpy().T
    np.testing.assert_allclose(d, np.linalg.norm(heavy.positions[i] - heavy.positions[j], axis=1), rtol=1e-5)
    assert featurizer.n_features == heavy.n_atoms * (heavy.n_atoms - 1) // 2


def test_backbone_dihedrals_match_mdanalysis(ala2):
    heavy = ala2.select_atoms("not name H*")
    quads, names = backbone_dihedral_indices(heavy)
    assert names == ["phi2", "psi2"]
    featurizer = Dihedrals(heavy.n_atoms, quads, names)
    positions = np.array([heavy.positions.copy() for _ in ala2.trajectory[:200:10]])
    ours = featurizer(torch.from_numpy(positions).double()).numpy()
    for k in range(2):
        a, b, c, d = (positions[:, quads[k, m]] for m in range(4))
        theirs = calc_dihedrals(a, b, c, d)
        np.testing.assert_allclose(ours[:, 2 * k], np.sin(theirs), atol=1e-5)
        np.testing.assert_allclose(ours[:, 2 * k + 1], np.cos(theirs), atol=1e-5)


def test_concatenate_and_config_round_trip(ala2):
    heavy = ala2.select_atoms("not name H*")
    featurizer = make_featurizer(["aligned", "distances", "dihedrals"], heavy)
    assert isinstance(featurizer, Concatenate)
    assert featurizer.n_features == 30 + 45 + 4 == len(featurizer.feature_atoms)
    rebuilt = featurizer_from_config(featurizer_config(featurizer))
    rebuilt.load_state_dict(featurizer.state_dict())
    x = torch.from_numpy(heavy.positions[None])
    torch.testing.assert_close(featurizer(x), rebuilt(x), rtol=0, atol=0)


@pytest.mark.parametrize("features", ["aligned", "positions", "distances", "dihedrals"])
def test_collector_matches_direct_featurization(ala2, features):
    heavy = ala2.select_atoms("not name H*")
    featurizer = make_featurizer(features, heavy)
    collector = FeatureCollector(heavy, featurizer, chunk_size=7).run(stop=50)
    direct = np.array([featurizer(torch.from_numpy(heavy.positions[None])).numpy()[0] for _ in ala2.trajectory[:50]])
    np.testing.assert_allclose(collector.results.features, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(collector.frames, np.arange(50))


def test_collector_parallel_backend_equals_serial(ala2):
    heavy = ala2.select_atoms("not name H*")
    featurizer = make_featurizer("aligned", heavy)
    serial = FeatureCollector(heavy, featurizer, chunk_size=16).run(stop=101)
    parallel = FeatureCollector(heavy, featurizer, chunk_size=16).run(stop=101, backend="multiprocessing", n_workers=2)
    np.testing.assert_array_equal(serial.results.features, parallel.results.features)


def test_collector_spills_to_memory_map(ala2):
    heavy = ala2.select_atoms("not name H*")
    featurizer = make_featurizer("positions", heavy)
    collector = FeatureCollector(heavy, featurizer, memory_budget=100).run(stop=20)
    assert isinstance(collector.results.features, np.memmap)
    np.testing.assert_allclose(
        collector.results.features[3], heavy.universe.trajectory[3].positions[heavy.indices].reshape(-1), rtol=1e-6
    )


def test_collector_uses_box_of_periodic_universe():
    u = mda.Universe.empty(4, trajectory=True)
    u.dimensions = [10.0, 10.0, 10.0, 90.0, 90.0, 90.0]
    u.atoms.positions = [[0.5, 0, 0], [9.5, 0, 0], [5, 5, 5], [5, 5, 9]]
    featurizer = make_featurizer("distances", u.atoms, periodic=True)
    values = FeatureCollector(u.atoms, featurizer).run().results.features[0]
    assert values[0] == pytest.approx(1.0, abs=1e-5)  # across the boundary, not 9 Å


def test_nan_coordinates_give_clear_error():
    u = mda.Universe.empty(3, trajectory=True)
    u.atoms.positions = [[0, 0, 0], [1, 0, 0], [np.nan, 0, 0]]
    featurizer = Positions(3)
    with pytest.raises(ValueError, match="NaN or infinite coordinates"):
        FeatureCollector(u.atoms, featurizer).run()


def test_bad_featurizer_requests(ala2):
    with pytest.raises(ValueError, match="features='bogus' is not known"):
        make_featurizer("bogus", ala2.atoms)
    with pytest.raises(ValueError, match="no backbone phi/psi"):
        make_featurizer("dihedrals", ala2.select_atoms("name CA CB"))
    with pytest.raises(ValueError, match="at least 3 atoms"):
        make_featurizer("aligned", ala2.select_atoms("name CA CB"))
    with pytest.raises(ValueError, match="expects"):
        Positions(3)(torch.zeros(1, 4, 3))
    with pytest.raises(TypeError, match=r"positions is a ndarray; Positions takes a torch.Tensor .* torch.as_tensor"):
        Positions(3)(np.zeros((1, 3, 3), dtype=np.float32))


def test_constant_features_are_not_divided_by_zero():
    from mdcvkit.models import Normalization

    x = torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    norm = Normalization(2).fit(x)
    y = norm(x)
    assert torch.isfinite(y).all()
    assert bool(norm.constant[1]) and not bool(norm.constant[0])
    torch.testing.assert_close(y[:, 1], torch.zeros(3))
    torch.testing.assert_close(norm.inverse(y), x)


def test_separated_pairs_leave_out_bonded_and_angle_pairs():
    u = datasets.alanine_dipeptide()
    heavy = u.select_atoms("not name H*")
    assert len(separated_pairs(heavy, min_bonds=1)) == heavy.n_atoms * (heavy.n_atoms - 1) // 2  # all pairs
    bonded = {tuple(sorted(heavy.indices.tolist().index(i) for i in b)) for b in heavy.intra_bonds.indices}
    assert len(bonded) == 9
    two = {tuple(p) for p in separated_pairs(heavy, min_bonds=2).tolist()}
    assert two == {(i, j) for i in range(10) for j in range(i + 1, 10)} - bonded
    three = separated_pairs(heavy)
    assert len(three) == 25 and np.all(three[:, 0] < three[:, 1])
    # no pair shares a bonded neighbour (1-3) or a bond (1-2)
    neighbours = {k: {j for b in bonded for j in b if k in b} - {k} for k in range(10)}
    assert all(j not in neighbours[i] and not neighbours[i] & neighbours[j] for i, j in three.tolist())
    with pytest.raises(ValueError, match="has no bonds"):
        separated_pairs(mda.Universe.empty(3, trajectory=True).atoms)
    with pytest.raises(ValueError, match="min_bonds=0 must be a positive integer"):
        separated_pairs(heavy, min_bonds=0)
