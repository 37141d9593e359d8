"""Tests of mdcvkit.frames: reading all frames of an AtomGroup, and Universes built from frames."""

import numpy as np
import pytest

import mdcvkit as mk
from mdcvkit.frames import in_memory, read_frames


def test_read_frames_copies_positions_and_times_and_keeps_the_frame():
    u = mk.datasets.alanine_dipeptide("vacuum")
    heavy = u.select_atoms("not name H*")
    short = in_memory(heavy, np.stack([heavy.positions.copy() for _ in u.trajectory[:5]]))
    short.trajectory[3]
    positions, times = read_frames(short.atoms)
    assert positions.shape == (5, heavy.n_atoms, 3) and positions.dtype == np.float64
    np.testing.assert_allclose(positions, short.trajectory.timeseries(order="fac"))
    assert len(times) == 5 and np.all(np.diff(times) > 0)
    assert short.trajectory.ts.frame == 3  # the caller's frame


def test_in_memory_keeps_the_topology():
    u = mk.datasets.alanine_dipeptide()
    frames = np.random.default_rng(0).normal(size=(4, u.atoms.n_atoms, 3))
    copy = in_memory(u.atoms, frames)
    assert copy.trajectory.n_frames == 4 and len(copy.bonds) == len(u.bonds)
    np.testing.assert_allclose(copy.atoms.masses, u.atoms.masses)
    np.testing.assert_allclose(copy.trajectory.timeseries(order="fac"), frames, atol=1e-6)


def test_frames_with_nan_are_named():
    u = mk.datasets.alanine_dipeptide()
    frames = np.zeros((3, u.atoms.n_atoms, 3))
    frames[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"ensemble holds NaN or infinite coordinates in frames \[2\]"):
        read_frames(in_memory(u.atoms, frames).atoms, "ensemble")
