"""Frames in memory: read an AtomGroup's positions over its trajectory, and build a Universe from frames.

The two steps every comparison and repair of ensembles takes: :func:`read_frames`
copies the positions of all frames (checked finite) and leaves the trajectory on
the frame it was on; :func:`in_memory` gives frames a Universe of their own with
the atoms' topology.
"""

from contextlib import contextmanager

import MDAnalysis as mda
import numpy as np
from MDAnalysis.coordinates.memory import MemoryReader

__all__ = ["in_memory", "read_frames", "same_frame"]


@contextmanager
def same_frame(trajectory):
    """Context in which a trajectory may be iterated; it is put back on its current frame afterwards."""
    current = trajectory.ts.frame
    try:
        yield trajectory
    finally:
        trajectory[current]


def read_frames(atomgroup, name="atomgroup"):
    """Positions and times of ``atomgroup`` over every frame of its trajectory.

    Parameters
    ----------
    atomgroup : AtomGroup
    name : str, default "atomgroup"
        How error messages call it.

    Returns
    -------
    positions : numpy.ndarray of float64, shape (n_frames, n_atoms, 3)
        Å.
    times : numpy.ndarray, shape (n_frames,)
        ps.

    Raises
    ------
    ValueError
        When a frame holds NaN or infinite coordinates.
    """
    trajectory = atomgroup.universe.trajectory
    with same_frame(trajectory):
        frames = [(atomgroup.positions.astype(np.float64), ts.time) for ts in trajectory]
    positions = np.stack([p for p, _ in frames])
    if not np.isfinite(positions).all():
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=(1, 2)))
        raise ValueError(f"{name} holds NaN or infinite coordinates in frames {bad[:10].tolist()}; remove or "
                         "repair those frames first")
    return positions, np.array([t for _, t in frames])


def in_memory(atomgroup, positions):
    """A new Universe with the topology of ``atomgroup`` and the frames ``positions``.

    Parameters
    ----------
    atomgroup : AtomGroup
        Atoms whose topology (names, residues, masses, bonds) the Universe copies.
    positions : array_like, shape (n_frames, n_atoms, 3)
        Å.

    Returns
    -------
    MDAnalysis.Universe
        In memory (``MemoryReader``).
    """
    universe = mda.Merge(atomgroup)
    universe.load_new(np.asarray(positions, dtype=np.float32), format=MemoryReader)
    return universe
