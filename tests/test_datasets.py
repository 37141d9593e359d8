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
    assert len(u.bonds) == 21 and all(len(atom.bonds) > 0 for atom in u.atoms)


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind='water' is not known"):
        datasets.alanine_dipeptide("water")


def test_missing_file_names_the_script(monkeypatch):
    with pytest.raises(ValueError, match=r"name='nothing.xtc' is not a shipped data file; use one of \['ala2.pdb'"):
        datasets.data_path("nothing.xtc")
    monkeypatch.setattr(datasets, "FILES", [*datasets.FILES, "nothing.xtc"])  # listed, but not on disk
    with pytest.raises(FileNotFoundError, match="make_data.py"):
        datasets.data_path("nothing.xtc")


def test_every_listed_file_is_shipped():
    assert all(datasets.data_path(name).is_file() for name in datasets.FILES)


def _make_data_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_data", datasets.data_path("make_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("solvent", ["vacuum", "implicit"])
def test_system_is_the_one_that_made_the_data(solvent):
    import openmm
    import openmm.unit as unit

    setup = datasets.alanine_dipeptide_system(solvent)
    _, system, _ = _make_data_module().build_system(solvent)
    energies = []
    for each in (setup.system, system):
        context = openmm.Context(each, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(setup.positions)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert energies[0] == pytest.approx(energies[1], rel=1e-12)
    assert setup.system.getNumConstraints() == system.getNumConstraints() > 0
    assert setup.timestep == pytest.approx(0.004) and setup.temperature == 300.0


def test_vacuum_start_is_c7eq():
    from MDAnalysis.lib.distances import calc_dihedrals

    setup = datasets.alanine_dipeptide_system("vacuum")
    phi = np.degrees(calc_dihedrals(*setup.positions[[4, 6, 8, 14]]))
    assert -150 < phi < -40


def test_unconstrained_system_for_constant_energy():
    setup = datasets.alanine_dipeptide_system("vacuum", constraints=False)
    assert setup.system.getNumConstraints() == 0 and setup.timestep == pytest.approx(0.0005)
    context = setup.context(seed=3)
    context.getIntegrator().step(10)
    assert np.isfinite(context.getState(getEnergy=True).getPotentialEnergy()._value)


def test_unknown_solvent():
    with pytest.raises(ValueError, match="solvent='water' is not known"):
        datasets.alanine_dipeptide_system("water")


def test_basins_and_crossings_between_the_c7_cores():
    phi = np.array([-80.0, -45.0, 0.0, -70.0, 60.0, 0.0, 50.0, -90.0, 120.0, -150.0])
    np.testing.assert_array_equal(datasets.c7_basins(phi), [0, 0, -1, 0, 1, -1, 1, 0, -1, -1])
    assert datasets.basin_crossings(phi) == 2  # C7eq -> C7ax -> C7ax (through the barrier) -> C7eq
    assert datasets.basin_crossings(np.full(5, -80.0)) == 0 and datasets.basin_crossings([]) == 0
