"""Tests of mdcvkit.biasing.bias: a bias on a CV as an OpenMM force, and multiple time stepping of it."""

import numpy as np
import openmm
import pytest
from export_cases import HEAVY, PHI, featurizers, frames, random_cv, vacuum_system

import mdcvkit as mk
from mdcvkit.analysis import CollectiveVariable
from mdcvkit.biasing import ExtendedABF, add_cv_bias, bias_integrator, cv_force, default_platform
from mdcvkit.export import NM_TO_ANGSTROM, evaluate_cv
from mdcvkit.features import Dihedrals

POSITIONS = frames(2)
FEATURIZERS = featurizers(POSITIONS)
START = POSITIONS[0] / NM_TO_ANGSTROM  # nm
HARMONIC = "0.5*k*(cv0-0.3)^2 + 0.5*k*(cv1+0.1)^2"


def _context(system, integrator=None):
    integrator = integrator or openmm.VerletIntegrator(0.0005)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(START)
    return context


def _bias_energy_and_forces(context, group, positions=START):
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True, groups={group})
    return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value


@pytest.mark.parametrize("name, route", [("dihedrals", "expression"), ("aligned", "python"), ("frame", "expression")])
def test_bias_forces_are_minus_the_gradient_of_its_energy(name, route):
    """Central finite differences of the bias energy (kJ/mol) give its forces (kJ/mol/nm), rel. 1e-5."""
    system = vacuum_system()
    bias = add_cv_bias(system, random_cv(FEATURIZERS[name]), HARMONIC, START, particles=HEAVY, route=route,
                       parameters={"k": 80.0})  # fmt: skip
    assert bias.route == route and bias.n_cv == 2 and bias.getForceGroup() == 31  # a group of its own
    context = _context(system)
    energy, forces = _bias_energy_and_forces(context, 31)
    assert energy > 0 and np.all(forces[np.setdiff1d(np.arange(22), HEAVY)] == 0)
    h = 1e-5
    for i in HEAVY[:4]:
        for d in range(3):
            shifted = [START.copy(), START.copy()]
            shifted[0][i, d] += h
            shifted[1][i, d] -= h
            up, down = (_bias_energy_and_forces(context, 31, s)[0] for s in shifted)
            assert -(up - down) / (2 * h) == pytest.approx(forces[i, d], rel=1e-5, abs=1e-6 * np.abs(forces).max())


def test_routes_give_the_same_bias():
    cv = random_cv(FEATURIZERS["concatenate"], seed=3)
    results = []
    for route in ("expression", "python"):
        system = vacuum_system()
        add_cv_bias(system, cv, HARMONIC, START, particles=HEAVY, route=route, parameters={"k": 80.0}, force_group=7)
        results.append(_bias_energy_and_forces(_context(system), 7))
    xi = evaluate_cv(cv, POSITIONS[0, HEAVY])[0]
    assert results[0][0] == pytest.approx(0.5 * 80.0 * ((xi[0] - 0.3) ** 2 + (xi[1] + 0.1) ** 2), rel=1e-10)
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-10)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-8, atol=1e-8)


def test_verlet_conserves_energy_with_a_python_bias():
    """The python route evaluates in float64: a Verlet run with the bias drifts no more than without."""
    drifts = []
    for biased in (False, True):
        system = vacuum_system()
        if biased:
            add_cv_bias(system, random_cv(FEATURIZERS["aligned"]), HARMONIC, START, particles=HEAVY,
                        route="python", parameters={"k": 200.0})  # fmt: skip
        context = _context(system)
        context.setVelocitiesToTemperature(300, 1)
        energies = []
        for _ in range(20):
            context.getIntegrator().step(25)
            state = context.getState(getEnergy=True)
            energies.append(state.getPotentialEnergy()._value + state.getKineticEnergy()._value)
        drifts.append(np.ptp(energies))
    assert drifts[1] < 3 * drifts[0] + 0.05


def test_bias_integrator_puts_the_bias_in_the_slow_group():
    system = vacuum_system()
    bias = add_cv_bias(system, random_cv(FEATURIZERS["dihedrals"]), "cv0^2", START, particles=HEAVY, force_group=0)
    plain = bias_integrator(system, bias, 300, bias_stride=1)
    assert isinstance(plain, openmm.LangevinMiddleIntegrator) and plain.bias_stride == 1
    mts = bias_integrator(system, bias, 300, timestep=0.002, bias_stride=4)
    assert isinstance(mts, openmm.MTSLangevinIntegrator) and mts.bias_stride == 4
    assert mts.getStepSize()._value == pytest.approx(0.008)  # the outer step: four steps of 2 fs
    assert bias.getForceGroup() != 0  # moved out of the group it shared with the force field
    assert {f.getForceGroup() for f in system.getForces()} - {bias.getForceGroup()} == {0}
    context = _context(system, mts)
    context.setVelocitiesToTemperature(300, 1)
    mts.step(10)
    assert np.all(np.isfinite(context.getState(getPositions=True).getPositions(asNumpy=True)._value))


def test_bias_integrator_and_add_cv_bias_refuse_bad_input():
    system = vacuum_system()
    bias = add_cv_bias(system, random_cv(FEATURIZERS["dihedrals"]), "cv0^2", START, particles=HEAVY)
    for stride in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"bias_stride={stride!r} must be a positive integer"):
            bias_integrator(system, bias, 300, bias_stride=stride)
    with pytest.raises(ValueError, match="is not a force of this system"):
        bias_integrator(vacuum_system(), bias, 300, bias_stride=2)
    with pytest.raises(ValueError, match="force_group=40 must be an integer from 0 to 31"):
        add_cv_bias(vacuum_system(), random_cv(FEATURIZERS["dihedrals"]), "cv0", START, particles=HEAVY,
                    force_group=40)  # fmt: skip
    with pytest.raises(ValueError, match="positions has 21 rows but the system has 22 particles"):
        add_cv_bias(vacuum_system(), random_cv(FEATURIZERS["dihedrals"]), "cv0", START[:21], particles=HEAVY)
    with pytest.raises(ValueError, match="the CV was built for n_atoms=10 atoms but 22 particles are given"):
        add_cv_bias(vacuum_system(), random_cv(FEATURIZERS["dihedrals"]), "cv0", START)
    with pytest.raises(ValueError, match="must be indices of system particles"):
        add_cv_bias(vacuum_system(), random_cv(FEATURIZERS["dihedrals"]), "cv0", START, particles=[*HEAVY[:9], 40])
    with pytest.raises(ValueError, match="component=2 must be an integer from 0 to 1"):
        cv_force(random_cv(FEATURIZERS["dihedrals"]), HEAVY, 22, component=2)


def test_default_platform_is_reference_for_small_systems():
    assert default_platform(22).getName() in ("Reference", "CUDA")
    assert default_platform(5000).getName() in ("CPU", "CUDA")


def test_extended_abf_stride_must_divide_its_frequencies():
    toy = mk.systems.DoubleWell2D()
    langevin = openmm.LangevinMiddleIntegrator(toy.temperature, 1.0, 0.002)
    with pytest.raises(ValueError, match="bias_stride=4 must divide sample_frequency=10"):
        ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40), integrator=langevin, bias_stride=4, sample_frequency=10)
    with pytest.raises(ValueError, match="bias_stride=2 needs a Langevin integrator"):
        ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40), bias_stride=2, sample_frequency=2)  # Brownian
    eabf = ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 40), integrator=langevin, bias_stride=4, sample_frequency=8,
                               update_frequency=400)  # fmt: skip
    with pytest.raises(ValueError, match="n_steps=10 must be a multiple of bias_stride=4"):
        eabf.run(10)
    eabf.run(800)
    np.testing.assert_allclose(eabf.results.samples.time.values[:2], [0.016, 0.032])  # every 8 steps of 2 fs


def _toy_pmf(stride, seed):
    toy = mk.systems.DoubleWell2D()
    langevin = openmm.LangevinMiddleIntegrator(toy.temperature, 5.0, 0.002)
    eabf = ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 80), integrator=langevin, bias_stride=stride,
                               sample_frequency=8, update_frequency=800, full_samples=100, seed=seed)  # fmt: skip
    return toy, eabf.run(1_200_000).results.pmf


@pytest.mark.slow
@pytest.mark.parametrize("stride", [1, 4, 8])
def test_mts_toy_free_energy_matches_exact(stride):
    """eABF with the coupling evaluated every 1, 4, 8 steps: the same exact free energy (RMSE < 0.3 kT)."""
    toy, pmf = _toy_pmf(stride, seed=1)
    exact = toy.free_energy("x1", grid=pmf.x1.values).values
    region = np.exp(-toy.beta * exact) / np.exp(-toy.beta * exact).sum() > 1e-3
    diff = pmf.values[region] - exact[region]
    assert np.all(np.isfinite(diff))
    assert np.sqrt(np.mean((diff - diff.mean()) ** 2)) * toy.beta < 0.3


@pytest.mark.slow
def test_mts_alanine_phi_free_energy_agrees_with_stride_one():
    """Vacuum alanine dipeptide along φ (2 ns of 2 fs steps, eABF + CZAR): A(C7ax) - A(C7eq) with strides 2
    and 4 (outer steps of 4 and 8 fs) within 0.5 kT of stride 1. An outer step of 16 fs blows up with this
    coupling (κ = kT / 0.1 rad²), whatever the inner step: the stability limit documented in bias_integrator."""
    setup = mk.datasets.alanine_dipeptide_system("vacuum")
    phi = CollectiveVariable.from_featurizer(Dihedrals(setup.system.getNumParticles(), [PHI], trig=False))
    kT = 0.008314462618 * 300
    gaps = {}
    for stride in (1, 2, 4):
        grid = mk.biasing.Grid(-np.pi, np.pi, 72, periodic=True)
        langevin = openmm.LangevinMiddleIntegrator(300, 1, 0.002)
        eabf = ExtendedABF(setup.system, setup.positions, phi, grid, kappa=kT / 0.1**2, temperature=300,
                           integrator=langevin, bias_stride=stride, sample_frequency=8, update_frequency=400,
                           seed=3).run(1_000_000)  # fmt: skip
        pmf = eabf.results.pmf
        centres = pmf[pmf.dims[0]].values
        c7eq = pmf.values[(centres > np.radians(-150)) & (centres < np.radians(-40))]
        c7ax = pmf.values[(centres > np.radians(30)) & (centres < np.radians(100))]
        gaps[stride] = (-np.log(np.exp(-c7ax / kT).sum()) + np.log(np.exp(-c7eq / kT).sum()))
    assert abs(gaps[2] - gaps[1]) < 0.5 and abs(gaps[4] - gaps[1]) < 0.5, gaps
