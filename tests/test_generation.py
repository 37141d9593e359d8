"""Tests of mdcvkit.generation: decoding latent points and sampling priors into Universes or features."""

import MDAnalysis as mda
import numpy as np
import pytest
import torch
from conftest import SHORT, STEP

import mdcvkit as mk


@pytest.mark.filterwarnings("ignore:(Unit cell dimensions|Found missing chainIDs):UserWarning")
def test_generate_universe_with_topology(tmp_path, ala2, heavy):
    cv = mk.AutoencoderCV(heavy, n_cv=2, model="vae", **SHORT).run(step=STEP)
    u = cv.generate(7, seed=1)
    assert isinstance(u, mda.Universe) and u.trajectory.n_frames == 7 and u.atoms.n_atoms == heavy.n_atoms
    assert list(u.atoms.names) == list(heavy.names) and list(u.atoms.resids) == list(heavy.resids)
    assert list(u.residues.resnames) == list(heavy.residues.resnames)
    assert len(u.atoms.bonds) == len(heavy.intra_bonds) > 0
    # what repair and comparison read: masses, segments (MDAnalysis' Ramachandran needs segids)
    np.testing.assert_allclose(u.atoms.masses, heavy.masses)
    assert list(u.atoms.segids) == list(heavy.segids)
    np.testing.assert_array_equal(u.trajectory.timeseries(), cv.generate(7, seed=1).trajectory.timeseries())
    assert not np.array_equal(u.trajectory.timeseries(), cv.generate(7, seed=2).trajectory.timeseries())
    with mda.Writer(str(tmp_path / "generated.pdb"), u.atoms.n_atoms) as writer:
        for _ in u.trajectory:
            writer.write(u.atoms)
    assert mda.Universe(str(tmp_path / "generated.pdb")).trajectory.n_frames == 7
    # decode a straight path through CV space, given as a DataArray of the training CV
    path = cv.decode(cv.results.cv[:3])
    positions = path.trajectory.timeseries(order="fac")
    features = cv.results.model.model.decode(torch.as_tensor(cv.results.cv.values[:3])).detach().numpy()
    np.testing.assert_allclose(positions.reshape(3, -1), features, rtol=1e-6)


def test_generate_features_for_other_featurizers(heavy):
    cv = mk.AutoencoderCV(heavy, n_cv=2, model="wae", features="distances", **SHORT).run(step=STEP)
    decoded = cv.generate(4)
    assert decoded.dims == ("sample", "feature") and decoded.shape == (4, 45)
    assert decoded["label"].values[0].startswith("d(")


def test_generate_and_decode_errors(heavy, short_fit):
    if short_fit.model_name in ("ae", "tae", "dae"):
        with pytest.raises(ValueError, match="has no prior to sample from"):
            short_fit.generate(3)
    else:
        with pytest.raises(ValueError, match="n=0 must be a positive integer"):
            short_fit.generate(0)
    with pytest.raises(ValueError, match="z holds 1 NaN or infinite values"):
        short_fit.decode([[0.0, np.inf]])
    with pytest.raises(ValueError, match=r"z has shape \(2, 3\); pass latent points of shape \(n, 2\)"):
        short_fit.decode(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="call run\\(\\) before generate"):
        mk.AutoencoderCV(heavy, model="vae").generate(3)


def test_masses_are_guessed_for_tables_without_them(heavy):
    table = {"names": list(heavy.names), "resnames": list(heavy.resnames), "resids": list(heavy.resids)}
    u = mk.generation.topology_universe(table)
    np.testing.assert_allclose(u.atoms.masses, heavy.masses, rtol=1e-3)
    assert len(u.segments) == 1 and len(u.residues) == len(heavy.residues)


def test_decode_a_cv_on_a_subset_of_the_aligned_atoms(heavy):
    """AlignedPositions(atoms=...) feeds only some atoms: decode gives those atoms, in that order, with their bonds."""
    from mdcvkit.analysis import CollectiveVariable, _atom_table
    from mdcvkit.models import AutoEncoder

    keep = [k for k, name in enumerate(heavy.names) if name != "CB"][::-1]
    featurizer = mk.features.AlignedPositions(heavy.positions, names=list(heavy.names), atoms=keep)
    torch.manual_seed(0)
    cv = CollectiveVariable(featurizer, AutoEncoder(featurizer.n_features, 2, hidden=(8,)))
    u = mk.generation.decode(cv, np.zeros((3, 2)), _atom_table(heavy))
    assert u.atoms.n_atoms == len(keep) and u.trajectory.n_frames == 3
    assert list(u.atoms.names) == [heavy.names[k] for k in keep]
    bonds = {frozenset((heavy.names[keep[i]] + str(keep[i]), heavy.names[keep[j]] + str(keep[j])))
             for i, j in u.atoms.bonds.indices}  # fmt: skip
    expected = {frozenset((heavy.names[i] + str(i), heavy.names[j] + str(j)))
                for i, j in (np.searchsorted(heavy.indices, b) for b in heavy.intra_bonds.indices)
                if i in keep and j in keep}  # fmt: skip
    assert bonds == expected and len(bonds) == len(heavy.intra_bonds) - 1  # the Cα-Cβ bond is gone
    features = cv.model.decode(torch.zeros(3, 2)).detach().numpy()
    np.testing.assert_allclose(u.trajectory.timeseries(order="fac").reshape(3, -1), features, rtol=1e-6)
