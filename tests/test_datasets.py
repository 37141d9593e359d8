import numpy as np
import pytest

from mdcvkit import datasets


@pytest.mark.parametrize("kind, n_frames, n_files", [("implicit", 100_000, 4), ("vacuum", 20_000, 1)])
def test_shipped_trajectories(kind, n_frames, n_files):
    u = datasets.alanine_dipeptide(kind)
    assert u.atoms.n_atoms == 22
    assert list(u.residues.resnames) == ["ACE", "ALA", "NME"]
    assert u.trajectory.n_frames == n_frames
    assert u.trajectory.dt == pytest.approx(1.0)  # ps between frames
    assert len(u.trajectory.filenames) == n_files
    positions = u.atoms.positions
    bond = np.linalg.norm(positions[u.select_atoms("resname ALA and name CA").indices[0]]
                          - positions[u.select_atoms("resname ALA and name CB").indices[0]])
    assert 1.4 < bond < 1.65  # Å: lengths are read in Å


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind='water' is not known"):
        datasets.alanine_dipeptide("water")


def test_missing_file_names_the_script():
    with pytest.raises(FileNotFoundError, match="make_data.py"):
        datasets.data_path("nothing.xtc")
