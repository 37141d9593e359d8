"""Tests of mdcvkit.repair.projection: the mass-weighted projection onto target distances."""

import numpy as np
import pytest

from mdcvkit.repair.projection import _colour_groups, _Projector


def chain(n_frames, seed):
    """Frames of a bent 4-atom chain with noisy bonds (Å)."""
    rng = np.random.default_rng(seed)
    base = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.0, 1.4, 0.0], [3.5, 1.5, 0.3]])
    return base + rng.normal(0.0, 0.2, (n_frames, 4, 3))


PAIRS = np.array([[0, 1], [1, 2], [2, 3], [0, 2], [1, 3]])  # bonds and 1–3 distances
TARGETS = np.array([1.5, 1.5, 1.5, 2.5, 2.5])


def test_colour_groups_never_hold_an_atom_twice():
    groups = _colour_groups(PAIRS, 4)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(PAIRS)))
    for group in groups:
        atoms = PAIRS[group].ravel()
        assert len(atoms) == len(set(atoms.tolist()))


def test_projection_meets_every_target_in_every_frame():
    frames = chain(50, seed=0)
    projected, sweeps, converged = _Projector(PAIRS, TARGETS, np.full(4, 12.0))(frames, 1e-5, 500)
    assert converged.all() and 0 < sweeps < 500
    distances = np.linalg.norm(projected[:, PAIRS[:, 1]] - projected[:, PAIRS[:, 0]], axis=-1)
    np.testing.assert_allclose(distances, np.broadcast_to(TARGETS, distances.shape), atol=1e-3)


def test_heavy_atoms_move_less_than_light_ones():
    frames = chain(20, seed=1)
    bend = np.pi - np.arccos(1 - 2.5**2 / (2 * 1.5**2))  # the exterior angle that makes |0-2| = 2.5 Å
    exact = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [1.5 + 1.5 * np.cos(bend), 1.5 * np.sin(bend), 0.0]])
    # the three heavy atoms exactly on their targets
    frames[:, :3] = exact
    masses = np.array([1e6, 1e6, 1e6, 1.0])  # a noisy hydrogen on a rigid frame of three heavy atoms
    projected, _, converged = _Projector(PAIRS, TARGETS, masses)(frames, 1e-5, 2000)
    moved = np.linalg.norm(projected - frames, axis=-1)
    assert converged.all()
    assert moved[:, :3].max() < 0.01 * moved[:, 3].mean()


def test_unconverged_frames_are_reported():
    frames = chain(5, seed=2)
    _, sweeps, converged = _Projector(PAIRS, TARGETS, np.full(4, 12.0))(frames, 1e-12, 2)
    assert sweeps == 2 and not converged.any()
    with pytest.raises(IndexError):
        _Projector(np.array([[0, 7]]), np.array([1.0]), np.ones(4))
