"""Issue 32, classes 3-5: any Universe works, the atoms are checked (not just their names), no feature
file is leaked."""

import glob
import os
import tempfile
import warnings

import MDAnalysis as mda
import numpy as np
import pytest
import torch

import mdcvkit as mk


def _bare_universe(n_atoms=6, n_frames=60, seed=0, **attributes):
    """A Universe built from arrays: no names, residues, segments or masses unless given."""
    rng = np.random.default_rng(seed)
    base = rng.normal(scale=3.0, size=(n_atoms, 3))
    t = np.linspace(0, 2 * np.pi, n_frames)
    positions = base[None] + np.sin(t)[:, None, None] * rng.normal(size=(n_atoms, 3))[None] \
        + 0.05 * rng.normal(size=(n_frames, n_atoms, 3))
    u = mda.Universe.empty(n_atoms, trajectory=True)
    u.load_new(positions.astype(np.float32), order="fac")
    for name, values in attributes.items():
        u.add_TopologyAttr(name, values)
    return u


def _fit(atoms, **settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mk.AutoencoderCV(atoms, n_cv=1, hidden=(6,), max_epochs=2, seed=0, **settings).run()


@pytest.mark.parametrize("features", ["aligned", "positions", "distances"])
def test_a_universe_without_names_residues_or_segments_trains_saves_loads_and_decodes(tmp_path, features):
    u = _bare_universe()
    cv = _fit(u.atoms, features=features)
    loaded = mk.AutoencoderCV.load(cv.save(tmp_path / "cv.pt"))
    np.testing.assert_array_equal(loaded.transform(u.atoms).values, cv.results.cv.values)
    decoded = cv.decode(cv.results.cv[:3])
    if features in ("aligned", "positions"):
        assert decoded.atoms.n_atoms == 6 and decoded.trajectory.n_frames == 3
    assert cv.feature_importance(per="residue").sizes["residue"] == 1


def test_the_same_atoms_in_another_order_are_refused(tmp_path):
    u = mk.datasets.alanine_dipeptide()
    heavy = u.select_atoms("not name H*")
    cv = _fit(heavy, features="distances")
    loaded = mk.AutoencoderCV.load(cv.save(tmp_path / "cv.pt"))
    reordered = heavy[[1, 0, *range(2, heavy.n_atoms)]]
    for model in (cv, loaded):
        with pytest.raises(ValueError, match=r"atomgroup does not hold the same atoms: its atom 0 has name"):
            model.transform(reordered)


def test_other_atoms_with_the_same_names_are_refused():
    """Same names, other residues: before, only names were compared and this gave a CV of other atoms."""
    names = ["N", "CA", "C", "O"] * 3
    trained = _bare_universe(12, names=names, resids=[1], resnames=["ALA"])  # one residue
    cv = _fit(trained.atoms, features="distances")
    other = _bare_universe(12, names=names, resids=[7], resnames=["GLY"])
    with pytest.raises(ValueError, match=r"atomgroup does not hold the same atoms: its atom 0 has resname 'GLY'"):
        cv.transform(other.atoms)
    heavier = _bare_universe(12, names=names, resids=[1], resnames=["ALA"], masses=[20.0] * 12)
    withmasses = _bare_universe(12, names=names, resids=[1], resnames=["ALA"], masses=[12.0] * 12)
    cv = _fit(withmasses.atoms, features="distances")
    with pytest.raises(ValueError, match=r"its atom 0 has mass 20\.0, but the CV was trained on 12\.0"):
        cv.transform(heavier.atoms)
    with pytest.raises(ValueError, match=r"atomgroup has 11 atoms, but the CV was trained on 12 atoms"):
        cv.transform(withmasses.atoms[:11])


def test_trajectories_of_other_atoms_are_refused_at_construction():
    a = _bare_universe(12, names=["C"] * 12, resids=[1], resnames=["ALA"])
    b = _bare_universe(12, names=["C"] * 12, resids=[2], resnames=["ALA"])
    with pytest.raises(ValueError, match=r"atomgroup\[1\] does not hold the same atoms: its atom 0 has resid 2"):
        mk.AutoencoderCV([a.atoms, b.atoms])


def _feature_files():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "mdcvkit-features-*")))


def test_memory_mapped_features_leave_no_file_after_run_transform_or_an_error():
    before = _feature_files()
    u = _bare_universe()
    cv = _fit(u.atoms, memory_budget=1)  # every feature matrix spills to a memory map
    assert isinstance(cv.results.features, np.memmap)
    assert np.isfinite(np.asarray(cv.results.features)).all()  # still readable after its file is gone
    cv.transform(u.atoms)
    assert _feature_files() == before
    positions = u.trajectory.coordinate_array.copy()
    positions[30] = np.nan
    bad = mda.Universe.empty(6, trajectory=True)
    bad.load_new(positions, order="fac")
    with pytest.raises(ValueError, match="frame 30 .* NaN"):
        cv.transform(bad.atoms)
    with pytest.raises(ValueError, match="frame 30 .* NaN"):
        _fit(bad.atoms, memory_budget=1, features="distances")
    assert _feature_files() == before


@pytest.mark.parametrize(("name", "value", "match"), [
    ("memory_budget", 0, r"memory_budget=0 must be a finite number > 0"),
    ("memory_budget", -5.0, r"memory_budget=-5.0 must be a finite number > 0"),
    ("memory_budget", "lots", r"memory_budget='lots' must be a number of bytes"),
    ("chunk_size", 0, r"chunk_size=0 must be an integer >= 1"),
    ("chunk_size", 2.5, r"chunk_size=2.5 must be an integer >= 1"),
])
def test_reading_settings_are_checked(name, value, match):
    with pytest.raises(ValueError, match=match):
        mk.AutoencoderCV(_bare_universe().atoms, n_cv=1, **{name: value})


def test_frames_out_of_range_and_empty_slices_are_clear():
    u = _bare_universe()
    with pytest.raises(ValueError, match=r"frames holds 60, out of range for a trajectory of 60 frames"):
        mk.AutoencoderCV(u.atoms, n_cv=1).run(frames=[0, 60])
    cv = _fit(u.atoms)
    with pytest.raises(ValueError, match=r"start=40, stop=10, step=None, frames select no frame"):
        cv.transform(u.atoms, start=40, stop=10)
    with pytest.raises(ValueError, match=r"frames holds -61"):
        cv.transform(u.atoms, frames=[-61])
    assert torch.is_tensor(next(iter(cv.results.model.state_dict().values())))


def test_ensemble_comparison_and_repair_on_a_universe_without_names():
    from mdcvkit import metrics
    from mdcvkit.repair import BondGeometryRepair

    a, b = _bare_universe(seed=0), _bare_universe(seed=1)
    result = metrics.compare_ensembles(a, b, select="all", dihedrals=False, n_bootstrap=3)
    assert np.isfinite(float(result["rmsd_wasserstein"])) and list(result["name"].values) == [str(i) for i in
                                                                                            range(6)]
    with pytest.raises(ValueError, match=r"select='name CA' needs an atom attribute this topology does not have"):
        metrics.compare_ensembles(a, b)
    with pytest.raises(ValueError, match=r"backbone dihedrals of reference cannot be computed"):
        metrics.compare_ensembles(a, b, select="all", n_bootstrap=3)
    with pytest.raises(ValueError, match=r"atomgroup has no masses"):
        BondGeometryRepair(a.atoms)
    with pytest.raises(TypeError, match=r"select=3 must be an MDAnalysis selection string"):
        metrics.compare_ensembles(a, b, select=3)


def test_decode_of_strings_is_clear():
    cv = _fit(_bare_universe().atoms)
    with pytest.raises(ValueError, match=r"z must be latent points, numbers of shape \(n, 1\), not str"):
        cv.decode("abc")
