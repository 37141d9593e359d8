"""Tests of mdcvkit.systems: toy potentials as OpenMM systems with exact free energies."""

import numpy as np
import openmm
import pytest
import torch
from scipy.integrate import trapezoid

from mdcvkit import systems

TOYS = [systems.EntropicSwitch, systems.DoubleWell2D, systems.FourWell1D]


@pytest.fixture(scope="module", params=TOYS, ids=lambda t: t.__name__)
def toy(request):
    return request.param()


def _context(toy):
    context = openmm.Context(
        toy.system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference")
    )
    return context


def test_openmm_energy_and_force_match_the_potential(toy):
    """The OpenMM force is the documented potential in reduced units (nm, kJ/mol) plus the restraint."""
    rng = np.random.default_rng(0)
    context = _context(toy)
    for _ in range(5):
        x = rng.uniform(-1.5, 1.5, size=3)
        context.setPositions([x])
        state = context.getState(getEnergy=True, getForces=True)
        reduced = torch.tensor(x[: toy.n_dim], requires_grad=True)
        energy_tensor = toy.potential(reduced)
        energy_tensor.backward()
        energy = energy_tensor.item()
        restraint = 0.5 * toy.restraint * np.sum(x[toy.n_dim :] ** 2)
        expected_force = np.concatenate([-reduced.grad.numpy(), -toy.restraint * x[toy.n_dim :]])
        assert state.getPotentialEnergy()._value == pytest.approx(float(energy) + restraint, rel=1e-10)
        np.testing.assert_allclose(
            state.getForces(asNumpy=True)._value[0], expected_force, rtol=1e-8, atol=1e-8
        )
        np.testing.assert_allclose(toy.potential(x[: toy.n_dim]), float(energy), rtol=1e-12)


def test_reduced_units_are_readable(toy):
    assert toy.kT == pytest.approx(1 / toy.beta)
    assert toy.temperature * systems.MOLAR_GAS_CONSTANT == pytest.approx(toy.kT)
    assert toy.positions.shape == (1, 3)
    assert toy.system.getNumParticles() == 1


def test_cv_module_maps_angstrom_to_reduced(toy):
    cv = toy.cv("x1")
    positions = torch.tensor([[[7.5, -3.0, 1.0]], [[-12.0, 4.0, 0.0]]], dtype=torch.float64)
    np.testing.assert_allclose(cv(positions).numpy()[:, 0], [0.75, -1.2])
    both = toy.cv(("x1", "x2"))
    np.testing.assert_allclose(both(positions).numpy(), [[0.75, -0.3], [-1.2, 0.4]])


def test_entropic_switch_is_febilae_potential():
    toy = systems.EntropicSwitch()
    assert toy.beta == 4
    free = toy.free_energy("x1")
    assert free.attrs["units"] == "kJ/mol"
    assert free.dims == ("x1",)
    np.testing.assert_allclose(free.values, free.values[::-1], atol=1e-10)  # symmetric in x1
    minima = free.x1.values[np.argsort(free.values)[:2]]
    np.testing.assert_allclose(np.sort(np.abs(minima)), [1.0, 1.0], atol=0.1)


def test_double_well_marginal_is_analytic():
    toy = systems.DoubleWell2D(barrier=1.5)
    grid = np.linspace(-1.8, 1.8, 73)
    free = toy.free_energy("x1", grid=grid)
    exact = 1.5 * (grid**2 - 1) ** 2
    np.testing.assert_allclose(free.values, exact - exact.min(), atol=1e-9)
    along_x2 = toy.free_energy("x2", grid=np.linspace(-1, 1, 21))
    np.testing.assert_allclose(along_x2.values, 0.5 * toy.stiffness * along_x2.x2.values**2, atol=1e-9)


def test_two_dimensional_free_energy_is_the_potential():
    toy = systems.EntropicSwitch()
    x1, x2 = np.linspace(-2, 2, 41), np.linspace(-1, 2, 31)
    free = toy.free_energy(("x1", "x2"), grid=(x1, x2))
    assert free.dims == ("x1", "x2")
    mesh = np.stack(np.meshgrid(x1, x2, indexing="ij"), axis=-1)
    expected = toy.potential(mesh)
    np.testing.assert_allclose(free.values, expected - expected.min(), atol=1e-12)


def test_probability_is_normalised(toy):
    density = toy.probability("x1")
    assert trapezoid(density.values, density.x1.values) == pytest.approx(1.0, rel=1e-9)


def test_four_well_has_four_wells():
    toy = systems.FourWell1D()
    free = toy.free_energy("x1", grid=np.linspace(-1, 1, 801)).values
    interior = (free[1:-1] < free[:-2]) & (free[1:-1] < free[2:])
    assert interior.sum() == 4


def test_brownian_dynamics_samples_boltzmann():
    """The harmonic x2 of DoubleWell2D has variance kT / stiffness (checks kT -> K -> OpenMM)."""
    toy = systems.DoubleWell2D()
    simulation = toy.simulation(seed=3)
    samples = []
    for _ in range(400):
        simulation.step(500)  # about one relaxation time of x2 (0.5 ps)
        samples.append(simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value[0])
    samples = np.array(samples)
    variance = np.var(samples[:, 1])
    # ~400 nearly independent samples: relative standard error of a variance ~ sqrt(2/400) = 7 %
    assert variance == pytest.approx(toy.kT / toy.stiffness, rel=0.25)
    assert np.var(samples[:, 2]) == pytest.approx(toy.kT / toy.restraint, rel=0.25)


def test_seed_repeats_trajectory():
    toy = systems.EntropicSwitch()
    ends = []
    for _ in range(2):
        simulation = toy.simulation(seed=11)
        simulation.step(200)
        ends.append(simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    np.testing.assert_array_equal(ends[0], ends[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"beta": -1.0}, "beta=-1.0 must be a positive"), ({"timestep": 0}, "timestep=0 must be a positive")],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        systems.EntropicSwitch(**kwargs)


def test_bad_free_energy_arguments():
    toy = systems.FourWell1D()
    with pytest.raises(ValueError, match=r"cv='x2' is not a coordinate set of FourWell1D"):
        toy.free_energy("x2")
    with pytest.raises(ValueError, match="must hold 1-D arrays"):
        toy.free_energy("x1", grid=[[0.0, 1.0]])
    with pytest.raises(ValueError, match="name='q' is not a coordinate"):
        toy.cv("q")
    with pytest.raises(ValueError, match="x has last dimension 2"):
        toy.potential(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="barrier=0 must be a positive"):
        systems.DoubleWell2D(barrier=0)
    with pytest.raises(ValueError, match="seed='a' must be an integer"):
        toy.integrator(seed="a")
