"""Featurisation throughput: ``FeatureCollector`` against a bare MDAnalysis loop, in one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_featurize.py            # about a minute on two busy cores
    .venv/bin/python benchmarks/bench_featurize.py --quick    # a smoke run

What it measures, on the shipped implicit-solvent alanine dipeptide (4 XTC files, 100 000
frames), heavy atoms (10), every ``--step``-th frame:

* ``bare MDAnalysis``: a loop over the same frames that only copies ``ag.positions`` into a
  preallocated array (reading and decompressing the XTC, nothing else), the floor any
  featurisation sits on;
* ``FeatureCollector serial``: aligned Cartesian features (``make_featurizer("aligned",
  heavy)``: Kabsch fit to the first frame and centring, in torch, in chunks of 1000 frames);
* ``FeatureCollector multiprocessing``: the same with ``backend="multiprocessing",
  n_workers=2`` (checked equal to the serial features).

Each is timed ``--repeats`` times, in turn, in the same process; medians are reported, with
frames/s, the ratio of FeatureCollector's throughput to the bare loop's (goal: within 25 %,
i.e. at least 0.75) and the speed-up of 2 workers over serial. Trajectory offsets are built
before any timing. The main process runs torch with ``--threads`` threads (default 1; the
workers always use one). Timings depend on the machine and its load; compare ratios from the
same run.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import print_table  # noqa: E402

import mdcvkit as mk  # noqa: E402
from mdcvkit.features import FeatureCollector, make_featurizer  # noqa: E402

GOAL_RATIO = 0.75


def bare_loop(atomgroup, step):
    """Copy ``atomgroup.positions`` of every ``step``-th frame; return the array."""
    trajectory = atomgroup.universe.trajectory
    n_frames = len(range(0, trajectory.n_frames, step))
    positions = np.empty((n_frames, atomgroup.n_atoms, 3), dtype=np.float32)
    for i, _ in enumerate(trajectory[::step]):
        positions[i] = atomgroup.positions
    return positions


def collect(atomgroup, featurizer, step, backend="serial", n_workers=None):
    """Features of every ``step``-th frame through FeatureCollector."""
    collector = FeatureCollector(atomgroup, featurizer)
    return collector.run(step=step, backend=backend, n_workers=n_workers).results.features


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def run(step=1, repeats=3, n_workers=2, threads=1, verbose=True):
    """Time the three readers side by side; return a dict of figures."""
    torch.set_num_threads(threads)
    u = mk.datasets.alanine_dipeptide()
    heavy = u.select_atoms("not name H*")
    featurizer = make_featurizer("aligned", heavy)
    n_frames = len(range(0, u.trajectory.n_frames, step))
    collect(heavy, featurizer, max(step, 1000))  # warm-up: offsets, imports, torch kernels
    if verbose:
        print(f"{n_frames} frames of {heavy.n_atoms} atoms in {len(u.trajectory.filenames)} files; "
              f"{repeats} repeats; main process {torch.get_num_threads()} torch thread(s)", flush=True)
    names = ("bare", "serial", f"multiprocessing x{n_workers}")
    times = {name: [] for name in names}
    for repeat in range(repeats):
        seconds, _ = timed(bare_loop, heavy, step)
        times["bare"].append(seconds)
        seconds, serial = timed(collect, heavy, featurizer, step)
        times["serial"].append(seconds)
        seconds, parallel = timed(collect, heavy, featurizer, step, "multiprocessing", n_workers)
        times[names[2]].append(seconds)
        if repeat == 0 and not np.allclose(serial, parallel, atol=1e-5):
            raise RuntimeError("the multiprocessing features differ from the serial ones")
        if verbose:
            print(f"  repeat {repeat + 1}: "
                  + ", ".join(f"{name} {times[name][-1]:.2f} s" for name in names), flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    fps = {name: n_frames / seconds for name, seconds in median.items()}
    return {
        "n_frames": n_frames, "n_workers": n_workers, "repeats": repeats, "times": times, "median": median,
        "fps": fps, "ratio_to_bare": fps["serial"] / fps["bare"],
        "speedup_workers": median["serial"] / median[names[2]], "names": names,
    }


def rows(figures):
    """Table rows (benchmark, engine, figure, value, note) for run_all.py."""
    bare, serial, parallel = figures["names"]
    fps, ratio, speedup = figures["fps"], figures["ratio_to_bare"], figures["speedup_workers"]
    return [
        ("featurize", "bare MDAnalysis loop", "frames/s", f"{fps[bare]:.0f}", "copies ag.positions only"),
        ("featurize", "FeatureCollector serial", "frames/s", f"{fps[serial]:.0f}", "aligned heavy atoms"),
        ("featurize", f"FeatureCollector {parallel}", "frames/s", f"{fps[parallel]:.0f}", ""),
        ("featurize", "serial / bare", "ratio", f"{ratio:.2f}",
         f"goal >= {GOAL_RATIO:g}: {'met' if ratio >= GOAL_RATIO else 'MISSED'}"),
        ("featurize", f"{figures['n_workers']} workers / serial", "speed-up", f"{speedup:.2f}x", ""),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=1,
                        help="use every STEP-th frame (default 1: 100 000 frames)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the main process (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: step 20, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.step, args.repeats = 20, 1
    print(f"bench_featurize on {platform.node()} ({platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    figures = run(args.step, args.repeats, args.workers, args.threads)
    print_table([("benchmark", "engine", "figure", "median", "note"), *rows(figures)])
    return figures


if __name__ == "__main__":
    main()
