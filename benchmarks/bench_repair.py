"""Structures repaired per second by ``mk.BondGeometryRepair`` against per-frame OpenMM minimisation, in one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_repair.py            # about two minutes on two busy cores
    .venv/bin/python benchmarks/bench_repair.py --quick    # a smoke run

What it measures, for alanine dipeptide (22 atoms, the shipped implicit-solvent MD) and adenylate
kinase (3341 atoms, PSF + DCD of MDAnalysisTests):

* *mdcvkit*: wall time of ``BondGeometryRepair(noisy.atoms, reference=md.atoms).run()`` (fast stage:
  projection, chirality restoration, report) on MD frames perturbed with Gaussian noise of
  0.2 Å per coordinate, all frames in one call; the time includes reading the reference frames
  and computing the targets;
* *OpenMM*: the baseline a user would otherwise pick: ``LocalEnergyMinimizer.minimize`` of each
  noisy frame, one after the other, in vacuum (alanine dipeptide AMBER99SB-ILDN, the force field
  of its MD; adenylate kinase AMBER14), default tolerance (10 kJ/mol/nm), CPU platform with one
  thread; the Context is built once, outside the timing;
* the ratio of the two rates, and the geometry each reaches: bond-length and angle RMSD from the
  reference's mean geometry, inverted stereocentres and heavy-atom clashes (``mdcvkit.repair`` measures).

Both use one CPU thread. Each timing is repeated (default 3×, alternating) and the median reported.
"""

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import MDAnalysis as mda
import numpy as np
import openmm
import openmm.app as app
import torch
from MDAnalysis.coordinates.memory import MemoryReader
from openmm import unit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import print_table, timing_args  # noqa: E402

import mdcvkit as mk  # noqa: E402

SIGMA = 0.2


def in_memory(atomgroup, positions):
    universe = mda.Merge(atomgroup)
    universe.load_new(np.asarray(positions, dtype=np.float32), format=MemoryReader)
    return universe


def alanine_dipeptide(n_frames, n_reference):
    """MD reference (bonds complete) and ``n_frames`` noisy MD frames."""
    u = mk.datasets.alanine_dipeptide()
    step = u.trajectory.n_frames // max(n_frames, n_reference)
    frames = np.stack([u.atoms.positions.copy() for _ in u.trajectory[::step]])
    reference = in_memory(u.atoms, frames[:n_reference])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.atoms.guess_bonds()
    return reference, frames[:n_frames], ("amber99sbildn.xml",)


def adenylate_kinase(n_frames):
    from MDAnalysisTests.datafiles import DCD, PSF

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        u = mda.Universe(PSF, DCD)
        frames = np.stack([u.atoms.positions.copy() for _ in u.trajectory])
    reference = in_memory(u.atoms, frames)
    return reference, frames[np.arange(n_frames) % len(frames)], ("amber14-all.xml",)


def openmm_minimiser(atomgroup, forcefield):
    """Minimise one frame (Å) with OpenMM; returns the minimised positions (Å)."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_repair_{os.getpid()}.pdb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atomgroup.write(str(path))
    pdb = app.PDBFile(str(path))
    path.unlink()
    system = app.ForceField(*forcefield).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    platform_ = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform_, {"Threads": "1"})

    def minimise(positions):
        context.setPositions(positions / 10.0)
        openmm.LocalEnergyMinimizer.minimize(context)
        return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)

    return minimise


def bench(name, reference, truth, forcefield, n_baseline, repeats, seed=0):
    noisy = truth + np.random.default_rng(seed).normal(0.0, SIGMA, truth.shape)
    generated = in_memory(reference.atoms, noisy)
    minimise = openmm_minimiser(reference.atoms, forcefield)
    minimise(noisy[0])  # warm-up
    mdcvkit_times, openmm_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        repair = mk.BondGeometryRepair(generated.atoms, reference=reference.atoms).run()
        mdcvkit_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        minimised = np.stack([minimise(frame) for frame in noisy[:n_baseline]])
        openmm_times.append(time.perf_counter() - start)
    report = repair.results.report
    rate = len(noisy) / np.median(mdcvkit_times)
    baseline = n_baseline / np.median(openmm_times)
    with warnings.catch_warnings():  # one sweep only, to measure the minimised frames: it warns
        warnings.simplefilter("ignore")
        check = mk.BondGeometryRepair(in_memory(reference.atoms, minimised).atoms, reference=reference.atoms,
                                      max_iterations=1).run().results.report
        floor = mk.BondGeometryRepair(in_memory(reference.atoms, truth).atoms, reference=reference.atoms,
                                      max_iterations=1).run().results.report.clashes_before
    return [
        (name, "mdcvkit BondGeometryRepair, structures/s", f"{rate:,.0f}", f"{len(noisy)} frames, "
         f"{report.attrs['iterations']} sweeps; repeats {len(noisy) / max(mdcvkit_times):,.0f}–"
         f"{len(noisy) / min(mdcvkit_times):,.0f}"),
        (name, "OpenMM minimisation per frame, structures/s", f"{baseline:,.2f}", f"{n_baseline} frames; repeats "
         f"{n_baseline / max(openmm_times):,.2f}–{n_baseline / min(openmm_times):,.2f}"),
        (name, "ratio mdcvkit / OpenMM", f"{rate / baseline:,.0f}x", ""),
        (name, "bond RMSD after, Å, median (max): mdcvkit / OpenMM",
         f"{float(report.bond_rmsd_after.median()):.4f} ({float(report.bond_rmsd_after.max()):.4f}) / "
         f"{float(check.bond_rmsd_before.median()):.4f} ({float(check.bond_rmsd_before.max()):.4f})",
         f"input {float(report.bond_rmsd_before.median()):.3f}"),
        (name, "angle RMSD after, degrees, median: mdcvkit / OpenMM",
         f"{float(report.angle_rmsd_after.median()):.2f} / {float(check.angle_rmsd_before.median()):.2f}",
         f"input {float(report.angle_rmsd_before.median()):.1f}"),
        (name, "inverted stereocentres per frame: input -> mdcvkit / OpenMM",
         f"{float(report.chirality_inversions_before.mean()):.2f} -> "
         f"{float(report.chirality_inversions_after.mean()):.2f} / "
         f"{float(check.chirality_inversions_before.mean()):.2f}", ""),
        (name, "heavy-atom clashes per frame: input -> mdcvkit / OpenMM",
         f"{float(report.clashes_before.mean()):.2f} -> {float(report.clashes_after.mean()):.2f} / "
         f"{float(check.clashes_before.mean()):.2f}", f"MD frames {float(floor.mean()):.2f}"),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ala2-frames", type=int, default=10000)
    parser.add_argument("--adk-frames", type=int, default=100)
    parser.add_argument("--ala2-baseline", type=int, default=100, help="frames minimised by OpenMM (alanine)")
    parser.add_argument("--adk-baseline", type=int, default=2, help="frames minimised by OpenMM (AdK)")
    args = timing_args(parser, quick={"ala2_frames": 500, "adk_frames": 10, "ala2_baseline": 10, "adk_baseline": 1,
                                      "repeats": 1})
    print(f"machine {platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}, OpenMM {openmm.__version__}, MDAnalysis {mda.__version__}; "
          f"noise σ = {SIGMA} Å per coordinate")
    table = [("system", "figure", "value", "note")]
    table += bench("alanine dipeptide", *alanine_dipeptide(args.ala2_frames, 1000), args.ala2_baseline, args.repeats)
    table += bench("adenylate kinase", *adenylate_kinase(args.adk_frames), args.adk_baseline, args.repeats)
    print_table(table)


if __name__ == "__main__":
    main()
