"""Tests of mdcvkit.biasing.eabf: extended ABF with CZAR against exact free energies of toys."""

from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch

import mdcvkit as mk
from mdcvkit import systems
from mdcvkit.analysis import CollectiveVariable
from mdcvkit.biasing import ExtendedABF, Grid
from mdcvkit.features import Dihedrals

PDB = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide" / "ala2.pdb"
PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)


def rmse_in_kT(toy, pmf, names):
    """RMSE of a PMF against the exact free energy, in kT, over bins of exact weight > 1e-3."""
    grids = tuple(pmf[n].values for n in names)
    exact = toy.free_energy(names if len(names) > 1 else names[0], grid=grids if len(names) > 1 else grids[0])
    weight = np.exp(-toy.beta * exact.values)
    region = weight / weight.sum() > 1e-3
    diff = pmf.values[region] - exact.values[region]
    assert np.all(np.isfinite(diff)), "the eABF run left bins of weight > 1e-3 unsampled"
    diff -= diff.mean()
    return float(np.sqrt(np.mean(diff**2)) * toy.beta), int(region.sum())


@pytest.fixture(scope="module")
def double_well_run():
    toy = systems.DoubleWell2D()
    eabf = ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 80), sample_frequency=10, update_frequency=1000,
                               full_samples=100, seed=1)  # fmt: skip
    return toy, eabf.run(600_000)


def test_double_well_pmf_matches_exact(double_well_run):
    toy, eabf = double_well_run
    error, n_bins = rmse_in_kT(toy, eabf.results.pmf, ["x1"])
    # measured ~0.1 kT at 400k steps and ~0.03 kT at 2M steps over 54 bins (seeds 1, 2)
    assert n_bins > 40
    assert error < 0.2


def test_results_are_labelled_xarray(double_well_run):
    toy, eabf = double_well_run
    results = eabf.results
    assert results.pmf.dims == ("x1",)
    assert results.pmf.attrs["units"] == "kJ/mol" and "long_name" in results.pmf.attrs
    assert results.counts.sum() + 0 <= 60_000
    samples = results.samples
    assert samples.sizes["sample"] == 60_000
    assert samples.time.attrs["units"] == "ps"
    np.testing.assert_allclose(samples.time.values[:2], [0.01, 0.02])  # every 10 steps of 1 fs
    assert set(samples.data_vars) == {"xi", "lam", "bias"}
    assert results.abf_bias.attrs["units"] == "kJ/mol"
    # λ follows ξ: |ξ - λ| stays within a few σ = sqrt(kT/κ) = 0.1 plus the mean-force shift
    assert np.abs(samples.xi.values - samples.lam.values).max() < 1.0
    # the ABF bias on λ converges to -A_κ, the free energy of λ: A convolved with the coupling
    # A_κ(λ) = -kT ln ∫ exp(-β [A(ξ) + κ/2 (ξ - λ)²]) dξ  (differs from A by ~1 kT near the walls)
    full = results.abf_counts.values >= 100
    xs = np.linspace(-3, 3, 3001)
    free = toy.free_energy("x1", grid=xs).values
    lam = results.abf_bias.x1.values
    kappa = eabf.kappa[0]
    a_kappa = [
        -np.log(np.trapezoid(np.exp(-toy.beta * (free + 0.5 * kappa * (xs - x) ** 2)), xs)) for x in lam
    ]
    diff = results.abf_bias.values[full] + np.array(a_kappa)[full] / toy.beta
    assert np.sqrt(np.mean((diff - diff.mean()) ** 2)) * toy.beta < 0.1  # measured 0.1 kJ/mol = 0.03 kT
    # the ABF bias flattens the barrier: both wells are visited
    assert (samples.xi.values < -0.5).mean() > 0.2 and (samples.xi.values > 0.5).mean() > 0.2


@pytest.mark.slow
def test_entropic_switch_along_x1_matches_exact():
    """FEBILAE's toy along x1 (4M Brownian steps, ~10 s): CZAR close to the exact marginal.

    The hidden channels in x2 make this marginal converge slowly: over seeds 1-5, 10, 11 the RMSE
    at 4M steps was 0.04-0.27 kT (median 0.08 kT, 6 of 7 below 0.2 kT), hence the 0.3 kT bound.
    """
    toy = systems.EntropicSwitch()
    eabf = ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 80), sample_frequency=10, update_frequency=1000,
                               full_samples=100, seed=2)  # fmt: skip
    eabf.run(4_000_000)
    error, n_bins = rmse_in_kT(toy, eabf.results.pmf, ["x1"])
    assert n_bins == 34
    assert error < 0.3


@pytest.mark.slow
def test_entropic_switch_in_two_dimensions_matches_exact():
    """2-D eABF along (x1, x2) with least-squares integration of the CZAR gradient.

    Measured at 1.5M steps on a 24 x 24 grid: 0.08-0.13 kT over the 50 bins of weight > 1e-3 (seeds 1-3);
    0.15-0.19 kT when CZAR's restraint term took λ minus the bin centre instead of λ - ξ.
    """
    toy = systems.EntropicSwitch()
    grid = Grid([-2.0, -1.5], [2.0, 2.5], [24, 24], names=["x1", "x2"])
    eabf = ExtendedABF.for_toy(toy, ("x1", "x2"), grid=grid, sample_frequency=10, update_frequency=1000,
                               full_samples=100, seed=1)  # fmt: skip
    eabf.run(1_500_000)
    assert eabf.results.pmf.dims == ("x1", "x2")
    error, n_bins = rmse_in_kT(toy, eabf.results.pmf, ["x1", "x2"])
    assert n_bins == 50
    assert error < 0.3


def test_python_route_follows_expression_route():
    """Same seed, same physics: the Python-driven CVs reproduce the compiled one step for step."""
    toy = systems.DoubleWell2D()
    runs = []
    for route in ("expression", "python"):
        eabf = ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40), route=route, sample_frequency=10,
                                   update_frequency=100, seed=4)  # fmt: skip
        assert eabf.route == route
        runs.append(eabf.run(300).results.samples)
    for run in runs[1:]:
        np.testing.assert_allclose(run.xi.values, runs[0].xi.values, atol=1e-6)
        np.testing.assert_allclose(run.lam.values, runs[0].lam.values, atol=1e-6)


def test_restart_continues_the_same_estimate(tmp_path):
    toy = systems.DoubleWell2D()

    def make(grid=(-2, 2, 40)):
        return ExtendedABF.for_toy(toy, "x1", grid=grid, sample_frequency=10, update_frequency=500, seed=2)

    first = make().run(20_000)
    first.save(tmp_path / "state.npz")
    second = make().restore(tmp_path / "state.npz")
    np.testing.assert_array_equal(second.abf_counts, first.abf_counts)
    np.testing.assert_array_equal(second.results.counts.values, first.results.counts.values)
    assert second.n_steps == 20_000
    np.testing.assert_allclose(
        second.context.getState(getPositions=True).getPositions(asNumpy=True)._value,
        first.context.getState(getPositions=True).getPositions(asNumpy=True)._value,
    )
    second.run(20_000)
    assert second.results.counts.sum() + 0 <= 4000
    assert second.results.samples.sizes["sample"] == 4000
    assert second.results.samples.time.values[-1] == pytest.approx(40.0)
    assert np.all(second.abf_counts >= first.abf_counts)
    with pytest.raises(ValueError, match=r"sampler.grid.n_bins: \[40\] in the file, \[50\] now"):
        make(grid=(-2, 2, 50)).restore(tmp_path / "state.npz")


@pytest.mark.parametrize("change, setting", [
    ({"kappa": 50.0}, "sampler.kappa"),
    ({"full_samples": 20}, "sampler.full_samples"),
    ({"cv": "x2"}, "cv.featurizer.axes"),
    ({"seed_system": True}, "system.digest"),
])  # fmt: skip
def test_restore_refuses_other_settings_naming_them(tmp_path, change, setting):
    toy = systems.DoubleWell2D()
    ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40), sample_frequency=10, update_frequency=500).run(1000).save(
        tmp_path / "s")
    other = systems.DoubleWell2D(barrier=2.0) if change.pop("seed_system", False) else toy
    eabf = ExtendedABF.for_toy(other, change.pop("cv", "x1"), grid=(-2, 2, 40), sample_frequency=10,
                               update_frequency=500, **change)  # fmt: skip
    with pytest.raises(ValueError, match=f"{setting}: .* in the file, .* now"):
        eabf.restore(tmp_path / "s")


def test_state_files_round_trip_atomically_and_refuse_foreign_files(tmp_path):
    toy = systems.DoubleWell2D()

    def make():
        return ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40), sample_frequency=10, update_frequency=500,
                                   store_positions=True)  # fmt: skip

    written = make().run(1000).save(tmp_path / "s")
    assert written == tmp_path / "s.npz" and not list(tmp_path.glob(".*"))  # no temporary file left
    restored = make().restore(tmp_path / "s").run(1000)  # store_positions: the positions come back too
    assert restored.results.samples.positions.shape == (200, 1, 3)
    (tmp_path / "text.npz").write_text("not a state")
    with pytest.raises(ValueError, match="text.npz' is not an ExtendedABF state"):
        make().restore(tmp_path / "text.npz")
    (tmp_path / "cut.npz").write_bytes(written.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.npz' is not an ExtendedABF state"):
        make().restore(tmp_path / "cut.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz': no such file"):
        make().restore(tmp_path / "missing")


def test_caller_system_is_not_modified():
    toy = systems.DoubleWell2D()
    n_forces = toy.system.getNumForces()
    eabf = ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40))
    assert toy.system.getNumParticles() == 1 and toy.system.getNumForces() == n_forces
    assert eabf.system.getNumParticles() == 2 and eabf.lambda_index == 1


def test_alanine_phi_periodic_smoke():
    """eABF along φ on vacuum alanine dipeptide: a periodic grid, the λ particle in a NonbondedForce."""
    pdb = app.PDBFile(str(PDB))
    system = app.ForceField("amber99sbildn.xml").createSystem(pdb.topology, constraints=app.HBonds)
    cv = CollectiveVariable.from_featurizer(Dihedrals(22, [PHI], trig=False), names=["phi"])
    kT = 2.494
    eabf = ExtendedABF(system, pdb.positions, cv, Grid(-np.pi, np.pi, 36, periodic=True, names=["phi"]),
                       kappa=kT / 0.1**2, temperature=300, seed=0, update_frequency=50)  # fmt: skip
    eabf.run(500)
    samples = eabf.results.samples
    assert np.all(np.abs(samples.xi.values) <= np.pi)
    assert np.all(np.isfinite(samples.bias.values))
    delta = np.angle(np.exp(1j * (samples.xi.values - samples.lam.values)))
    assert np.abs(delta).max() < 0.6  # λ follows φ across the periodic boundary too


def test_alanine_phi_psi_periodic_table_is_consistent():
    """2-D periodic grid: the tabulated bias matches at opposite edges (OpenMM's periodic splines need it)."""
    pdb = app.PDBFile(str(PDB))
    system = app.ForceField("amber99sbildn.xml").createSystem(pdb.topology, constraints=app.HBonds)
    cv = CollectiveVariable.from_featurizer(
        Dihedrals(22, [PHI, PSI], trig=False), names=["phi", "psi"]
    )
    grid = Grid([-np.pi] * 2, [np.pi] * 2, 24, periodic=True, names=["phi", "psi"])
    eabf = ExtendedABF(system, pdb.positions, cv, grid, kappa=2.494 / 0.15**2, temperature=300, seed=0,
                       update_frequency=50, full_samples=2, verbose=True)  # fmt: skip
    eabf.run(1000)
    assert np.any(eabf._abf_edges != 0)
    np.testing.assert_array_equal(eabf._abf_edges[0], eabf._abf_edges[-1])
    np.testing.assert_array_equal(eabf._abf_edges[:, 0], eabf._abf_edges[:, -1])
    assert eabf.results.pmf.dims == ("phi", "psi")
    with pytest.raises(ValueError, match="must be periodic in both components or in neither"):
        ExtendedABF(system, pdb.positions, cv, Grid([-np.pi] * 2, [np.pi] * 2, 24, periodic=[True, False]),
                    kappa=100.0, temperature=300)  # fmt: skip


# --- error contracts ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy():
    return systems.DoubleWell2D()


def test_grid_must_contain_the_start(toy):
    with pytest.raises(ValueError, match=r"does not contain the starting CV value \[-1.0\]; widen the grid"):
        ExtendedABF.for_toy(toy, "x1", grid=(0, 2, 40))


@pytest.mark.parametrize("kappa", [0.0, -3.0, float("nan")])
def test_kappa_must_be_positive(toy, kappa):
    with pytest.raises(ValueError, match="must be a positive coupling constant"):
        ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40), kappa=kappa)


def test_cv_output_checked(toy):
    with pytest.raises(ValueError, match="must return a tensor of shape"):
        ExtendedABF.for_toy(toy, lambda x: x[:, 0, 0], grid=(-2, 2, 40))
    with pytest.raises(ValueError, match="the CV is not finite"):
        ExtendedABF.for_toy(toy, lambda x: torch.log(x[:, :, 0]), grid=(-2, 2, 40))
    with pytest.raises(ValueError, match="ExtendedABF supports 1 or 2"):
        ExtendedABF.for_toy(toy, lambda x: x[:, 0, :], grid=(-2, 2, 40))
    with pytest.raises(ValueError, match="grid has 2 component"):
        ExtendedABF.for_toy(toy, lambda x: x[:, 0, :1], grid=[(-2, 2, 40), (-2, 2, 40)])
    with pytest.raises(ValueError, match=r"names=\['x1'\] must have one entry per CV component \(2\)"):
        ExtendedABF.for_toy(toy, "x1", grid=[(-2, 2, 40), (-2, 2, 40)])


@pytest.mark.parametrize("route", ["python", "expression"])
def test_blow_up_names_the_step_and_the_remedy(toy, route):
    # κ 1e9 kJ/mol/Å² with 10 fs steps: the coupling spring is unstable and the positions overflow
    stiff = ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40), kappa=1e9, route=route, sample_frequency=10,
                                integrator=openmm.LangevinMiddleIntegrator(toy.temperature, 1, 0.01))  # fmt: skip
    with pytest.raises(FloatingPointError, match="non-finite.*[Ll]ower the time step"):
        stiff.run(1000)


def test_particle_count_checked(toy):
    two = openmm.System()
    two.addParticle(1.0)
    two.addParticle(1.0)
    with pytest.raises(ValueError, match="positions has 1 rows but the system has 2 particles"):
        ExtendedABF(two, toy.positions, toy.cv("x1"), (-2, 2, 40), 25.0, toy.temperature)


def test_frequencies_and_mass_checked(toy):
    with pytest.raises(ValueError, match="sample_frequency=3 must divide update_frequency=100"):
        ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40), sample_frequency=3)
    with pytest.raises(ValueError, match="is too light for Brownian dynamics"):
        ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40), lambda_mass=0.01)
    with pytest.raises(ValueError, match="n_steps=-5 must be a non-negative integer"):
        ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40)).run(-5)


def test_unsupported_per_particle_force(toy):
    system = openmm.XmlSerializer.clone(toy.system)
    gb = openmm.CustomGBForce()
    gb.addParticle([])
    system.addForce(gb)
    with pytest.raises(ValueError, match="holds a CustomGBForce, to which ExtendedABF cannot add"):
        ExtendedABF(system, toy.positions, toy.cv("x1"), (-2, 2, 40), 25.0, toy.temperature)



def test_lambda_particle_is_inert_in_obc_implicit_solvent():
    """The λ particle, parked far away, changes neither the energy differences nor the forces of the molecule."""
    from mdcvkit.biasing.extended import PARKING, extended_system

    setup = mk.datasets.alanine_dipeptide_system("implicit")
    extended, park = extended_system(setup.system, 10.0)
    assert park == PARKING

    def energy_forces(system, positions):
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(positions)
        state = context.getState(getEnergy=True, getForces=True)
        return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value

    plain, plain_forces = energy_forces(setup.system, setup.positions)
    offsets = []
    for lam in ([0.3, 0.0, park], [-2.0, 0.5, park]):
        energy, forces = energy_forces(extended, np.vstack([setup.positions, lam]))
        np.testing.assert_allclose(forces[:-1], plain_forces, rtol=1e-9, atol=1e-9)
        assert np.abs(forces[-1]).max() < 1e-9
        offsets.append(energy - plain)
    assert offsets[0] == pytest.approx(offsets[1], abs=1e-9)  # a constant self-energy of the dummy


def test_alanine_phi_in_implicit_solvent_smoke():
    setup = mk.datasets.alanine_dipeptide_system("implicit")
    cv = CollectiveVariable.from_featurizer(Dihedrals(22, [PHI], trig=False), names=["phi"])
    eabf = ExtendedABF(setup.system, setup.positions, cv, Grid(-np.pi, np.pi, 36, periodic=True, names=["phi"]),
                       kappa=2.494 / 0.1**2, temperature=300, integrator=setup.integrator(1), seed=0,
                       update_frequency=50)  # fmt: skip
    eabf.run(500)
    samples = eabf.results.samples
    assert np.all(np.isfinite(samples.xi.values)) and np.all(np.isfinite(samples.lam.values))
    delta = np.angle(np.exp(1j * (samples.xi.values - samples.lam.values)))
    assert np.abs(delta).max() < 0.6
