"""Tests of mdcvkit.repair.core: BondGeometryRepair on noisy MD frames (alanine dipeptide, AdK), its report, errors."""

import warnings

import MDAnalysis as mda
import numpy as np
import openmm
import openmm.app as app
import pytest
from openmm import unit

import mdcvkit as mk
from mdcvkit.frames import in_memory

SIGMAS = (0.1, 0.2, 0.3)


def perturbed(positions, sigma, seed):
    return positions + np.random.default_rng(seed).normal(0.0, sigma, positions.shape)


def heavy_rms(positions, truth, heavy):
    """RMS displacement of the heavy atoms over all frames (Å)."""
    return float(np.sqrt(((positions - truth)[:, heavy] ** 2).sum(-1).mean()))


@pytest.fixture(scope="module")
def ala2():
    """100 frames, 1 ns apart, of the shipped alanine dipeptide in memory (bonds complete, as guessed once)."""
    u = mk.datasets.alanine_dipeptide()
    positions = np.stack([u.atoms.positions.copy() for _ in u.trajectory[::1000]])
    md = in_memory(u.atoms, positions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md.atoms.guess_bonds()
    return md, positions


@pytest.fixture(scope="module", params=SIGMAS)
def ala2_repaired(request, ala2):
    md, truth = ala2
    noisy = perturbed(truth, request.param, seed=1)
    generated = in_memory(md.atoms, noisy)
    repair = mk.BondGeometryRepair(generated.atoms, reference=md.atoms).run()
    return repair, generated, truth, noisy


def test_alanine_dipeptide_fast_stage(ala2_repaired):
    repair, generated, truth, noisy = ala2_repaired
    report = repair.results.report
    heavy = generated.atoms.masses > 2
    assert report.attrs["targets"] == "reference"
    assert report.attrs["converged"]
    assert report.attrs["n_stereocentres"] == 4  # CH3 of ACE and NME, Cα, Cβ
    assert float(report.bond_rmsd_before.mean()) > 0.05  # the noise was there
    assert float(report.bond_rmsd_after.max()) <= 0.01
    assert float(report.angle_rmsd_after.max()) <= 2.0
    assert int(report.chirality_inversions_after.sum()) == 0
    assert heavy_rms(repair.results.positions, truth, heavy) <= heavy_rms(noisy, truth, heavy)


def test_results_universe_and_report(ala2_repaired):
    repair, generated, _, noisy = ala2_repaired
    universe = repair.results.universe
    assert universe.atoms.n_atoms == generated.atoms.n_atoms
    assert list(universe.atoms.names) == list(generated.atoms.names)
    assert universe.trajectory.n_frames == len(noisy)
    np.testing.assert_allclose(universe.trajectory.timeseries(order="fac"), repair.results.positions, atol=1e-4)
    # the caller's frames are untouched
    np.testing.assert_allclose(generated.trajectory.timeseries(order="fac"), noisy, atol=1e-4)
    report = repair.results.report
    assert report.sizes == {"frame": len(noisy)}
    for name, variable in report.data_vars.items():
        assert variable.attrs["long_name"] and variable.attrs["units"], name
    assert report.bond_rmsd_after.attrs["units"] == "Å"
    assert report.angle_rmsd_after.attrs["units"] == "degree"


def mirrored(positions):
    return positions * np.array([-1.0, 1.0, 1.0])


def test_mirror_images_are_restored(ala2):
    """The mirror image inverts every stereocentre; the repair puts each one back."""
    md, truth = ala2
    generated = in_memory(md.atoms, mirrored(truth[:20]))
    report = mk.BondGeometryRepair(generated.atoms, reference=md.atoms).run().results.report
    assert np.all(report.chirality_inversions_before == 4)
    assert np.all(report.chirality_inversions_after == 0)
    assert float(report.bond_rmsd_after.max()) <= 0.01
    assert float(report.angle_rmsd_after.max()) <= 2.0


def test_heavy_atoms_only(ala2):
    """Without hydrogens Cα has three neighbours: it stays a stereocentre and CA–C is no planar bond (ψ is free)."""
    md, truth = ala2
    heavy = md.select_atoms("not name H*")
    reference = in_memory(heavy, truth[:, heavy.indices])
    frames = truth[::5, heavy.indices]
    noisy = perturbed(frames, 0.2, seed=6)
    repair = mk.BondGeometryRepair(in_memory(heavy, noisy).atoms, reference=reference.atoms).run()
    report = repair.results.report
    assert report.attrs["n_stereocentres"] == 1
    assert report.attrs["n_planar_pairs"] == 0  # the amide N lost its H: no bond joins two trigonal atoms
    assert float(report.bond_rmsd_after.max()) <= 0.01
    assert float(report.angle_rmsd_after.max()) <= 2.0
    assert int(report.chirality_inversions_after.sum()) == 0
    assert heavy_rms(repair.results.positions, frames, slice(None)) <= heavy_rms(noisy, frames, slice(None))


def test_first_frame_targets(ala2):
    md, truth = ala2
    target = in_memory(md.atoms, np.concatenate([truth[:1], perturbed(truth[:10], 0.2, seed=2)]))
    report = mk.BondGeometryRepair(target.atoms).run().results.report
    assert report.attrs["targets"] == "first frame"
    assert float(report.bond_rmsd_before[0]) == pytest.approx(0.0, abs=1e-5)
    assert float(report.bond_rmsd_after.max()) <= 0.01


def force_field_energies(topology, positions, minimise=False, forcefield="amber99sbildn.xml"):
    """Vacuum energies (kJ/mol) of frames (Å), optionally after unrestrained minimisation."""
    system = app.ForceField(forcefield).createSystem(topology, nonbondedMethod=app.NoCutoff)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001))
    energies = []
    for frame in positions:
        context.setPositions(frame / 10.0)
        if minimise:
            openmm.LocalEnergyMinimizer.minimize(context, 1.0, 0)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.array(energies)


@pytest.mark.slow
def test_alanine_dipeptide_openmm_refinement(ala2):
    """After refinement: no clashes, and energies between the MD frames' minima and their highest energy."""
    md, truth = ala2
    frames = truth[:10]
    generated = in_memory(md.atoms, perturbed(frames, 0.3, seed=3))
    repair = mk.BondGeometryRepair(generated.atoms, reference=md.atoms, refine="openmm",
                                   forcefield=("amber99sbildn.xml",)).run()
    report = repair.results.report
    topology = app.PDBFile(str(mk.datasets.data_path("ala2.pdb"))).topology
    md_energies = force_field_energies(topology, truth)
    md_minima = force_field_energies(topology, truth, minimise=True)
    assert np.all(report.clashes_after == 0)
    assert np.all(report.energy_before > md_energies.max())  # noise: far above any MD frame
    assert np.all(report.energy_after <= md_energies.max())
    assert np.all(report.energy_after >= md_minima.min() - 1.0)
    np.testing.assert_allclose(report.energy_after, force_field_energies(topology, repair.results.positions),
                               atol=1e-3)


@pytest.fixture(scope="module")
def adk():
    pytest.importorskip("MDAnalysisTests")
    from MDAnalysisTests.datafiles import DCD, PSF

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        u = mda.Universe(PSF, DCD)
        truth = np.stack([u.atoms.positions.copy() for _ in u.trajectory])
    return in_memory(u.atoms, truth), truth


@pytest.mark.parametrize("sigma", SIGMAS)
def test_adenylate_kinase_fast_stage(adk, sigma):
    md, truth = adk
    frames = truth[::10]
    noisy = perturbed(frames, sigma, seed=4)
    generated = in_memory(md.atoms, noisy)
    repair = mk.BondGeometryRepair(generated.atoms, reference=md.atoms).run()
    heavy = md.atoms.masses > 2
    rep = repair.results.report
    assert rep.attrs["n_bonds"] == len(md.atoms.bonds)  # the PSF's bonds, none guessed
    assert rep.attrs["converged"]
    if sigma >= 0.2:
        assert int(rep.chirality_inversions_before.sum()) > 0  # such noise inverts some centres
    assert float(rep.bond_rmsd_after.max()) <= 0.01
    assert float(rep.angle_rmsd_after.max()) <= 2.0
    assert int(rep.chirality_inversions_after.sum()) == 0
    assert heavy_rms(repair.results.positions, frames, heavy) <= heavy_rms(noisy, frames, heavy)


# --- the measures, on inputs with a known answer ---------------------------------------------------------------


# --- bad input -------------------------------------------------------------------------------------------------


def unknown_atoms(positions):
    u = mda.Universe.empty(3, trajectory=True)
    u.add_TopologyAttr("names", ["Q1", "Q2", "Q3"])
    u.add_TopologyAttr("types", ["Q", "Q", "Q"])
    u.add_TopologyAttr("masses", [10.0, 10.0, 10.0])
    u.atoms.positions = positions
    return u


def test_no_bonds_and_none_guessable():
    u = unknown_atoms(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="cannot be guessed"):
        mk.BondGeometryRepair(u.atoms).run()
    carbons = unknown_atoms(np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [20.0, 0.0, 0.0]]))
    carbons.add_TopologyAttr("types", ["C", "C", "C"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no bonds and none could be guessed"):
            mk.BondGeometryRepair(carbons.atoms).run()


def test_reference_with_other_atoms(ala2):
    md, _ = ala2
    with pytest.raises(ValueError, match="reference has 10 atoms"):
        mk.BondGeometryRepair(md.atoms, reference=md.select_atoms("not name H*"))


def test_frames_with_nan(ala2):
    md, truth = ala2
    frames = truth[:5].copy()
    frames[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"frames \[3\] of atomgroup have NaN"):
        mk.BondGeometryRepair(in_memory(md.atoms, frames).atoms, reference=md.atoms).run()


@pytest.mark.parametrize(("setting", "message"), [
    ({"tolerance": 0.0}, "tolerance=0.0 must be a positive"),
    ({"tolerance": float("nan")}, "tolerance=nan must be a positive"),
    ({"max_iterations": 0}, "max_iterations=0 must be a positive integer"),
    ({"max_iterations": 2.5}, "max_iterations=2.5 must be a positive integer"),
    ({"refine": "gromacs"}, r"refine='gromacs' is not known; use None or one of \['openmm'\]"),
])
def test_bad_settings(ala2, setting, message):
    md, _ = ala2
    with pytest.raises(ValueError, match=message):
        mk.BondGeometryRepair(md.atoms, **setting)


def test_bad_frame_slice(ala2):
    md, _ = ala2
    with pytest.raises(ValueError, match="step=0 must be an integer >= 1"):
        mk.BondGeometryRepair(md.atoms).run(step=0)


def test_atomgroup_type():
    with pytest.raises(TypeError, match="atomgroup must be a non-empty MDAnalysis AtomGroup"):
        mk.BondGeometryRepair(np.zeros((3, 3)))


def test_too_few_iterations_warn(ala2):
    md, truth = ala2
    generated = in_memory(md.atoms, perturbed(truth[:5], 0.3, seed=5))
    with pytest.warns(UserWarning, match="did not converge"):
        report = mk.BondGeometryRepair(generated.atoms, reference=md.atoms, max_iterations=2).run().results.report
    assert not report.attrs["converged"]


def test_force_field_that_cannot_be_built(ala2):
    md, truth = ala2
    heavy = md.select_atoms("not name H*")
    generated = in_memory(heavy, truth[:2][:, heavy.indices])
    with pytest.raises(ValueError, match="cannot build a force field"):
        mk.BondGeometryRepair(generated.atoms, refine="openmm", forcefield=("amber99sbildn.xml",)).run()


def test_missing_bonds_are_guessed_with_a_warning():
    """The shipped PDB alone has CONECT records only for ACE and NME: the alanine's bonds are guessed."""
    pdb = mda.Universe(str(mk.datasets.data_path("ala2.pdb")))
    generated = in_memory(pdb.atoms, np.repeat(pdb.atoms.positions[None], 3, axis=0))
    with pytest.warns(UserWarning, match="8 of 22 atoms have no bonds in the topology; guessed"):
        repair = mk.BondGeometryRepair(generated.atoms).run()
    assert repair.results.report.attrs["n_bonds"] == 21


def test_hydrogens_pushed_through_their_carbon(ala2):
    """Hβ1 put on the far side of Cβ traps the projection (stretched bond); it is placed again and repaired."""
    md, truth = ala2
    frames = truth[:10].copy()
    cb, hb1 = (md.select_atoms(f"resname ALA and name {name}")[0].index for name in ("CB", "HB1"))
    frames[:, hb1] = frames[:, cb] - 0.3 * (frames[:, hb1] - frames[:, cb])
    generated = in_memory(md.atoms, frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = mk.BondGeometryRepair(generated.atoms, reference=md.atoms).run().results.report
    assert np.all(report.bond_max_deviation_before > 0.7)
    assert float(report.bond_max_deviation_after.max()) <= 0.05
    assert float(report.angle_rmsd_after.max()) <= 2.0
    assert int(report.chirality_inversions_after.sum()) == 0


def test_adenylate_kinase_openmm_refinement(adk, tmp_path):
    """One AdK frame refined with AMBER14: no clashes, energy below the highest of the MD frames."""
    md, truth = adk
    generated = in_memory(md.atoms, perturbed(truth[:1], 0.2, seed=7))
    report = mk.BondGeometryRepair(generated.atoms, reference=md.atoms, refine="openmm").run().results.report
    path = tmp_path / "adk.pdb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md.atoms.write(str(path))
    md_energies = force_field_energies(app.PDBFile(str(path)).topology, truth, forcefield="amber14-all.xml")
    assert int(report.clashes_after[0]) == 0
    assert float(report.energy_after[0]) <= float(md_energies.max())
    assert float(report.energy_before[0]) > 10 * abs(float(md_energies.max()))


def test_structure_quality_of_md_and_of_noisy_frames(ala2, ala2_repaired):
    md, truth = ala2
    repair, generated, _, noisy = ala2_repaired
    floor = mk.repair.structure_quality(md.atoms, reference=md.atoms)
    assert floor.attrs["targets"] == "reference" and floor.sizes == {"frame": len(truth)}
    assert int(floor.chirality_inversions.sum()) == 0
    assert float(floor.bond_rmsd.max()) < 0.05  # thermal bond fluctuations (constrained X-H, stiff heavy bonds)
    judged = mk.repair.structure_quality(generated.atoms, reference=md.atoms)
    report = repair.results.report
    # the same measures as the repair report's "before" columns
    for name in ("bond_rmsd", "bond_max_deviation", "angle_rmsd", "clashes", "chirality_inversions"):
        np.testing.assert_allclose(judged[name].values, report[f"{name}_before"].values, rtol=1e-10)
        assert judged[name].attrs["units"] == report[f"{name}_before"].attrs["units"]
