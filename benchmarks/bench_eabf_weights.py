"""How well eABF weights give the C7ax population of vacuum alanine dipeptide, per estimator.

Run from the repository root::

    .venv/bin/python benchmarks/bench_eabf_weights.py            # about 12 minutes on one core
    .venv/bin/python benchmarks/bench_eabf_weights.py --quick    # a smoke run

Accuracy, not speed. ``mk.biasing.reweight.eabf_log_weights`` reweights eABF frames to the
Boltzmann density with one of two free-energy estimates, the run's CZAR free energy or its own
ABF estimate (``estimator="czar"`` or ``"abf"``). FEBILAE trains each autoencoder on such
weights, so an error in them is an error in what the next CV learns. The script measures the
weight that each estimator gives to C7ax (0° < φ < 120°) on the vacuum system of
``data/alanine_dipeptide/make_data.py`` started in C7eq (AMBER99SB-ILDN, no cutoff, HBond
constraints, hydrogen mass 4 amu, LangevinMiddle 300 K 1/ps 4 fs, Reference platform):

* reference: 1-D eABF along φ (72 bins, κ = kT/(0.1 rad)², ABF force after 100 samples),
  ``--reference-steps`` steps for each of two seeds, hundreds of crossings;
* 2-D eABF along (φ, ψ), the CV FEBILAE should find, from the same start: periodic grids of
  15 × 15 (tutorial 05's bin count) and 36 × 36 bins, κ = 88 kJ/mol/rad² (a coupling width of
  10°), ABF force after 20 samples, each ``--steps`` value for each seed.

Each row gives the C7eq ↔ C7ax crossings (core regions -150° < φ < -40° and 30° < φ < 100°),
the share of the frames in C7ax, and the share of the weight in C7ax with each estimator.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import print_table  # noqa: E402

import mdcvkit as mk  # noqa: E402
from mdcvkit.analysis import CollectiveVariable  # noqa: E402
from mdcvkit.biasing import ExtendedABF, Grid  # noqa: E402
from mdcvkit.biasing.reweight import ESTIMATORS, eabf_log_weights  # noqa: E402
from mdcvkit.features import Dihedrals  # noqa: E402

PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)


def measure(setup, cv, grid, kappa, full_samples, steps, seed):
    """One eABF run: crossings, C7ax share of the frames and of each estimator's weight."""
    eabf = ExtendedABF(setup.system, setup.positions, cv, grid, kappa=kappa, temperature=setup.temperature,
                       integrator=setup.integrator(), sample_frequency=10, update_frequency=1000,
                       full_samples=full_samples, seed=seed).run(steps)  # fmt: skip
    phi = np.degrees(eabf.results.samples.xi.values[:, 0])
    c7ax = (phi > 0) & (phi < 120)
    shares = [float(np.exp(eabf_log_weights(eabf, name))[c7ax].sum()) for name in ESTIMATORS]
    return [mk.datasets.basin_crossings(phi), f"{c7ax.mean():.1%}", *(f"{s:.2%}" for s in shares)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[250_000, 750_000, 3_750_000])
    parser.add_argument("--reference-steps", type=int, default=1_875_000)
    parser.add_argument("--seeds", type=int, default=8,
                        help="seeds of 2-D runs under 10 ns on 15 x 15 bins (at most 4 on 36 x 36, 2 longer)")
    parser.add_argument("--quick", action="store_true", help="20 ps runs, one seed")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.reference_steps, args.seeds = [5_000], 5_000, 1
    setup = mk.datasets.alanine_dipeptide_system("vacuum")
    kT = setup.temperature * mk.biasing.eabf.MOLAR_GAS_CONSTANT
    header = ("run", "steps", "seed", "crossings", "C7ax frames", *(f"C7ax weight, {name}" for name in ESTIMATORS))
    table = [header]
    phi_cv = CollectiveVariable.from_featurizer(Dihedrals(22, [PHI], trig=False))
    for seed in range(2):
        row = measure(setup, phi_cv, Grid(-np.pi, np.pi, 72, periodic=True), kT / 0.1**2, 100, args.reference_steps,
                      seed)  # fmt: skip
        table.append(("φ, 72 bins", args.reference_steps, seed, *row))
    plane = CollectiveVariable.from_featurizer(Dihedrals(22, [PHI, PSI], trig=False))
    for bins in (15, 36):
        grid = Grid([-np.pi] * 2, [np.pi] * 2, [bins, bins], periodic=True)
        for steps in args.steps:
            long_run = steps * 0.004 >= 10_000  # ps
            seeds = min(args.seeds, 2 if long_run else args.seeds if bins == 15 else 4)
            for seed in range(seeds):
                row = measure(setup, plane, grid, 88.0, 20, steps, seed)
                table.append((f"(φ, ψ), {bins}x{bins}", steps, seed, *row))
    print_table(table)


if __name__ == "__main__":
    main()
