"""Tests of mdcvkit.frames: reading all frames of an AtomGroup, Universes built from frames, a dask cluster."""

import logging

import numpy as np
import pytest

import mdcvkit as mk
from mdcvkit.features import FeatureCollector
from mdcvkit.frames import DaskClientBackend, in_memory, read_frames


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


@pytest.mark.filterwarnings("ignore::mdcvkit.training.ConvergenceWarning")  # one epoch: only the features count
def test_dask_cluster_featurises_like_serial():
    """A dask.distributed LocalCluster of 2 worker processes, reached through its Client as a remote cluster
    would be (:class:`DaskClientBackend`), gives the serial features and CV of the shipped data, bit for bit."""
    from dask.distributed import Client, LocalCluster

    u = mk.datasets.alanine_dipeptide()  # the four shipped trajectories, chained
    heavy = u.select_atoms("not name H*")
    cv = mk.AutoencoderCV(heavy, n_cv=1, max_epochs=1, seed=0).run(step=500)
    featurizer = cv.results.model.featurizer
    serial = FeatureCollector(heavy, featurizer).run(step=20)
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                       silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client):
        backend = DaskClientBackend(client)
        assert backend.n_workers == 2
        parallel = FeatureCollector(heavy, featurizer).run(step=20, backend=backend)
        transformed = cv.transform(heavy, step=20, backend=backend)
    assert serial.results.features.shape == (5000, featurizer.n_features)
    np.testing.assert_array_equal(parallel.results.features, serial.results.features)
    np.testing.assert_array_equal(parallel.frames, serial.frames)
    np.testing.assert_array_equal(parallel.times, serial.times)
    np.testing.assert_array_equal(transformed.values, cv.transform(heavy, step=20).values)
    np.testing.assert_array_equal(transformed["trajectory"].values, np.repeat(np.arange(4), 1250))


def test_dask_client_backend_checks_its_client():
    with pytest.raises(TypeError, match="client='tcp://x:8786' is not a dask.distributed Client"):
        DaskClientBackend("tcp://x:8786")
