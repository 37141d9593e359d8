"""Tests of mdcvkit.repair.geometry: known bond, angle, chirality and clash values; structure_quality."""

import warnings

import numpy as np
import pytest

import mdcvkit as mk
from mdcvkit.frames import in_memory
from mdcvkit.repair import bond_geometry, chirality, count_clashes, structure_quality


def mirrored(positions):
    return positions * np.array([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def md():
    """20 frames, 5 ns apart, of the shipped alanine dipeptide in memory (all 21 bonds)."""
    u = mk.datasets.alanine_dipeptide()
    return in_memory(u.atoms, np.stack([u.atoms.positions.copy() for _ in u.trajectory[::5000]]))


def test_bond_geometry_known_values():
    positions = np.array([[[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [1.5, 1.0, 0.0]]])
    result = bond_geometry(positions, [[0, 1], [1, 2]], [[0, 1, 2]], [1.0, 1.0], [120.0])
    assert result["bond_rmsd"][0] == pytest.approx(np.sqrt(0.5**2 / 2))
    assert result["bond_max_deviation"][0] == pytest.approx(0.5)
    assert result["angle_rmsd"][0] == pytest.approx(30.0)


def test_chirality_of_a_tetrahedron_and_its_mirror_image():
    centre = np.zeros(3)
    neighbours = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])
    positions = np.concatenate([centre[None], neighbours])[None]
    volume = chirality(positions, [[0, 1, 2, 3]])
    assert volume[0, 0] == pytest.approx(4.0 / 3.0**1.5)  # unit vectors: (1,1,1)/√3 · ((2,2,0)/3)
    assert chirality(mirrored(positions), [[0, 1, 2, 3]])[0, 0] == pytest.approx(-volume[0, 0])


def test_count_clashes_known_pairs():
    radii = np.array([1.70, 1.70, 1.55, 1.52])  # C C N O
    polar = np.array([False, False, True, True])
    far = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [20.0, 0.0, 0.0], [30.0, 0.0, 0.0]])
    carbons = far.copy()
    carbons[1] = [2.5, 0.0, 0.0]  # 2.5 < 1.7 + 1.7 - 0.4 = 3.0
    hbond = far.copy()
    hbond[3] = [22.6, 0.0, 0.0]  # N–O 2.6 Å: a hydrogen bond, not a clash
    too_close = far.copy()
    too_close[3] = [22.3, 0.0, 0.0]  # N–O 2.3 Å < 2.5 Å
    positions = np.stack([far, carbons, hbond, too_close])
    np.testing.assert_array_equal(count_clashes(positions, radii, np.empty((0, 2)), polar=polar), [0, 1, 0, 1])
    np.testing.assert_array_equal(count_clashes(positions, radii, [[0, 1]], polar=polar), [0, 0, 0, 1])
    # the cell-list path for many atoms gives the same counts
    padded = np.concatenate([positions, 100.0 + 10.0 * np.arange(70)[None, :, None] * np.ones((4, 70, 3))], axis=1)
    radii_padded = np.concatenate([radii, np.full(70, 1.7)])
    polar_padded = np.concatenate([polar, np.zeros(70, dtype=bool)])
    np.testing.assert_array_equal(count_clashes(padded, radii_padded, [[0, 1]], polar=polar_padded), [0, 0, 0, 1])


def test_structure_quality_of_md_frames_is_the_floor(md):
    quality = structure_quality(md.atoms, reference=md.atoms)
    assert quality.attrs["targets"] == "reference" and quality.sizes == {"frame": md.trajectory.n_frames}
    assert quality.bond_rmsd.attrs["units"] == "Å" and quality.angle_rmsd.attrs["units"] == "degree"
    assert int(quality.chirality_inversions.sum()) == 0 and int(quality.clashes.sum()) == 0
    assert float(quality.bond_rmsd.max()) < 0.05  # thermal fluctuations of stiff bonds
    first = structure_quality(md.atoms)
    assert first.attrs["targets"] == "first frame" and float(first.bond_rmsd[0]) == 0.0


def test_structure_quality_counts_a_mirror_image(md):
    truth = md.trajectory.timeseries(order="fac")[:5].astype(float)
    mirror = in_memory(md.atoms, mirrored(truth))
    quality = structure_quality(mirror.atoms, reference=md.atoms)
    assert np.all(quality.chirality_inversions.values == 4)  # every stereocentre
    unreflected = structure_quality(in_memory(md.atoms, truth).atoms, reference=md.atoms)
    np.testing.assert_allclose(quality.bond_rmsd.values, unreflected.bond_rmsd.values, rtol=1e-6)
    with pytest.raises(ValueError, match="pass the same atoms in the same order"):
        structure_quality(mirror.atoms[:5], reference=md.atoms)


def test_structure_quality_errors(md):
    with pytest.raises(TypeError, match="must be a non-empty MDAnalysis AtomGroup"):
        structure_quality(md.atoms[[]])
    frames = md.trajectory.timeseries(order="fac")[:3].copy()
    frames[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        structure_quality(in_memory(md.atoms, frames).atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        structure_quality(md.atoms)  # complete bonds: nothing to guess, no warning
