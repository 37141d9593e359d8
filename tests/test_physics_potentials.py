"""Tests of mdcvkit.physics.potentials: analytic and OpenMM energies as differentiable torch functions."""

import numpy as np
import openmm
import pytest
import torch

import mdcvkit as mk
from mdcvkit.physics import OpenMMPotential, TorchPotential
from mdcvkit.systems import TiltedDoubleWell2D


@pytest.fixture(scope="module")
def setup():
    return mk.datasets.alanine_dipeptide_system("vacuum", constraints=False)


@pytest.fixture(scope="module")
def frames():
    """Five frames of the shipped vacuum trajectory, positions in Å."""
    universe = mk.datasets.alanine_dipeptide("vacuum")
    return torch.tensor(np.stack([universe.trajectory[k].positions for k in range(0, 500, 100)]),
                        dtype=torch.float64)


def _openmm_energies(setup, positions_angstrom):
    context = openmm.Context(setup.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    energies = []
    for frame in positions_angstrom:
        context.setPositions(frame.numpy() / 10.0)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy()._value)
    return np.array(energies)


def test_torch_potential_of_a_toy_is_its_energy_with_autograd_forces():
    toy = TiltedDoubleWell2D()
    potential = TorchPotential.from_toy(toy)
    x = torch.tensor([[0.5, 0.1], [-1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    energy = potential.energy(x)
    energy.sum().backward()
    np.testing.assert_allclose(energy.detach().numpy(), toy.potential(x.detach().numpy()))
    x1, x2 = x.detach().numpy().T
    np.testing.assert_allclose(x.grad.numpy()[:, 0], toy.a * x1 ** 3 - toy.b * x1 + toy.c)
    np.testing.assert_allclose(x.grad.numpy()[:, 1], toy.d * x2)


@pytest.mark.parametrize("frame", [None, (4, 6, 8)], ids=["cartesian", "body-frame"])
def test_openmm_energies_match_openmm_and_forces_match_finite_differences(setup, frames, frame):
    """Energies equal OpenMM's own (kJ/mol); the backward pass equals central differences (kJ/mol/Å)."""
    potential = OpenMMPotential(setup.system, frame=frame, platform="Reference")
    x = potential.features(frames).requires_grad_(True)
    energy = potential.energy(x)
    np.testing.assert_allclose(energy.detach().numpy(), _openmm_energies(setup, frames), rtol=1e-9, atol=1e-8)
    energy.sum().backward()
    h, x0 = 1e-4, x.detach()[:1]
    for i in range(0, potential.n_features, 5):
        step = torch.zeros_like(x0)
        step[0, i] = h
        central = (potential.energy(x0 + step) - potential.energy(x0 - step)) / (2 * h)
        assert float(central[0]) == pytest.approx(float(x.grad[0, i]), abs=1e-4 * max(1.0, abs(float(x.grad[0, i]))))


def test_body_frame_coordinates_round_trip_to_the_same_energies(setup, frames):
    """positions(features(p)) is p moved rigidly: distances and energies unchanged; 6 coordinates fewer."""
    potential = OpenMMPotential(setup.system, frame=(4, 6, 8), platform="Reference")
    x = potential.features(frames)
    assert x.shape == (len(frames), 3 * 22 - 6)
    back = potential.positions(x)
    np.testing.assert_allclose(torch.cdist(back, back).numpy(), torch.cdist(frames, frames).numpy(), atol=1e-9)
    np.testing.assert_allclose(potential.log_jacobian(x).numpy(),
                               2 * np.log(x[:, 0].numpy()) + np.log(x[:, 2].numpy()))


def test_workers_give_the_energies_of_one_context(setup, frames):
    """A pool of two processes (one Context each) returns what one Context does."""
    single = OpenMMPotential(setup.system, platform="Reference")
    pool = OpenMMPotential(setup.system, platform="Reference", n_workers=2)
    try:
        x = single.features(frames)
        np.testing.assert_allclose(pool.energy(x).numpy(), single.energy(x).numpy(), rtol=1e-12)
    finally:
        pool.close()
    assert single.n_evaluations == len(frames)


def test_bad_potential_settings_are_named(setup):
    with pytest.raises(TypeError, match="openmm.System"):
        OpenMMPotential("not a system")
    with pytest.raises(ValueError, match="frame="):
        OpenMMPotential(setup.system, frame=(1, 1, 2))
    with pytest.raises(ValueError, match="n_workers"):
        OpenMMPotential(setup.system, n_workers=0)
    with pytest.raises(TypeError, match="callable"):
        TorchPotential(3.0, 2)
    with pytest.raises(ValueError, match="shape"):
        OpenMMPotential(setup.system).positions(torch.zeros(2, 5))
