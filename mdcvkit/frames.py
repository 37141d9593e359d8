"""Frames: read an AtomGroup's positions over its trajectory, build a Universe from frames, read on a cluster.

The two steps every comparison and repair of ensembles takes: :func:`read_frames`
copies the positions of all frames (checked finite) and leaves the trajectory on
the frame it was on; :func:`in_memory` gives frames a Universe of their own with
the atoms' topology. :class:`DaskClientBackend` reads and featurises frames on a
``dask.distributed`` cluster.
"""

from contextlib import contextmanager

import MDAnalysis as mda
import numpy as np
from MDAnalysis.analysis.backends import BackendBase
from MDAnalysis.coordinates.memory import MemoryReader

__all__ = ["DaskClientBackend", "in_memory", "read_frames", "same_frame"]


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


class DaskClientBackend(BackendBase):
    """MDAnalysis parallel backend that computes on a ``dask.distributed`` cluster through its Client.

    MDAnalysis's own ``backend="dask"`` computes with dask's local process scheduler and ignores a
    distributed Client; this backend sends each part of the trajectory to the cluster
    (``client.map``) instead. Every worker opens the trajectory files itself, so they must be
    readable at the same paths on every worker. :class:`mdcvkit.AutoencoderCV` (``run``,
    ``transform``) and :class:`mdcvkit.features.FeatureCollector` accept it as ``backend``.

    Parameters
    ----------
    client : dask.distributed.Client
        Client of the cluster, e.g. ``Client("tcp://scheduler:8786")`` or ``Client(LocalCluster())``.
    n_workers : int, optional
        Parts the frames are split into; default the number of workers of the cluster now.

    Raises
    ------
    TypeError
        When ``client`` has no ``map`` and ``gather`` (is not a distributed Client).
    ValueError
        When ``n_workers`` is not a positive integer, or the cluster has no worker.

    Examples
    --------
    >>> from dask.distributed import Client                                      # doctest: +SKIP
    >>> backend = mk.frames.DaskClientBackend(Client("tcp://scheduler:8786"))     # doctest: +SKIP
    >>> cv.run(backend=backend)                                                  # doctest: +SKIP
    """

    def __init__(self, client, n_workers=None):
        if not (callable(getattr(client, "map", None)) and callable(getattr(client, "gather", None))):
            raise TypeError(f"client={client!r} is not a dask.distributed Client; pass Client(address) or "
                            "Client(LocalCluster())")
        if n_workers is None:
            n_workers = len(client.scheduler_info()["workers"])
            if n_workers == 0:
                raise ValueError(f"the cluster of {client!r} has no worker; start workers or pass n_workers")
        self.client = client
        super().__init__(n_workers=n_workers)

    def apply(self, func, computations):
        """``func`` of each computation (a part of the frames), computed on the cluster, in order."""
        return self.client.gather(self.client.map(func, computations, pure=False))
