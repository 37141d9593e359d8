"""Speed of each sampler against unbiased MD, in one run: eABF, OPES and OpenMM's metadynamics on a CV.

Run from the repository root::

    .venv/bin/python benchmarks/bench_samplers.py            # about two minutes on two cores
    .venv/bin/python benchmarks/bench_samplers.py --quick    # a smoke run (ratios mean nothing)

Vacuum alanine dipeptide as the shipped data were made (``mk.datasets.alanine_dipeptide_system``: 22
atoms, 4 fs Langevin steps, 300 K, Reference platform, the package's choice for this size). Two CVs,
both compiled into OpenMM (route "expression", no Python per step): the dihedral φ, and a 1-D autoencoder
on the backbone dihedrals of the heavy atoms (hidden 16-16 tanh, trained for a few epochs on the shipped
frames: the cost does not depend on how well it is trained). Along each:

* ``mk.biasing.ExtendedABF`` (samples every 10 steps, table refreshed every 500),
* ``mk.biasing.OPES`` (openmm-opes; samples ξ and the bias every 10 steps, a kernel every 250 steps,
  adaptive width), and the same sampling every 50 steps,
* ``openmm.app.Metadynamics``, well-tempered, a Gaussian every 250 steps (φ only: OpenMM's own
  sampler, with the CV as its BiasVariable, through ``mk.biasing.cv_force`` for the AE).

Each timing runs ``--steps`` steps through the sampler's own ``run``/``step`` (its Python work
included); the contenders alternate, each is timed ``--repeats`` times, and the median is reported with
the ratio unbiased / biased time per step (1 = as fast as unbiased MD).
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mdcvkit as mk  # noqa: E402
from benchmarks._common import print_table  # noqa: E402
from mdcvkit.analysis import CollectiveVariable  # noqa: E402
from mdcvkit.biasing import OPES, ExtendedABF, Grid, cv_force, default_platform  # noqa: E402
from mdcvkit.export import evaluate_cv  # noqa: E402
from mdcvkit.features import Dihedrals  # noqa: E402

PHI = (4, 6, 8, 14)
KT = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin) * 300.0


def autoencoder_cv(max_epochs, step):
    """A 1-D AE CV on the dihedrals of the heavy atoms (compiles to an expression), its atoms and grid."""
    heavy = mk.datasets.alanine_dipeptide().select_atoms("not name H*")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few epochs: not converged, on purpose
        ae = mk.AutoencoderCV(heavy, n_cv=1, features="dihedrals", hidden=(16, 16), seed=0,
                              max_epochs=max_epochs).run(step=step)  # fmt: skip
    z = ae.results.cv.values[:, 0]
    span = z.max() - z.min()
    return ae.results.model, heavy.indices, Grid(z.min() - 0.5 * span, z.max() + 0.5 * span, 100, names=["ae"]), span


def contenders(setup):
    """{name: a function running n steps} for unbiased MD and each sampler along each CV."""
    platform = default_platform(setup.system.getNumParticles())
    context = openmm.Context(openmm.XmlSerializer.clone(setup.system), setup.integrator(), platform)
    context.setPositions(setup.positions)
    context.setVelocitiesToTemperature(setup.temperature, 1)
    runs = {"unbiased MD": lambda n, context=context: context.getIntegrator().step(n)}  # keeps the context alive
    phi = CollectiveVariable.from_featurizer(Dihedrals(22, [PHI], trig=False), names=["phi"])
    return runs, phi


def add_samplers(runs, setup, name, cv, particles, grid, width):
    common = {"particles": particles, "integrator": setup.integrator(), "sample_frequency": 10, "seed": 1}
    eabf = ExtendedABF(setup.system, setup.positions, cv, grid, kappa=KT / width**2, temperature=setup.temperature,
                       update_frequency=500, **common)  # fmt: skip
    opes = OPES(setup.system, setup.positions, cv, grid, 30.0, setup.temperature, pace=250, **common)
    system = openmm.XmlSerializer.clone(setup.system)
    periodic = bool(grid.periodic[0])
    force = cv_force(cv, particles, system.getNumParticles())
    variable = app.BiasVariable(force, float(grid.lower[0]), float(grid.upper[0]), 3 * width, periodic=periodic,
                                gridWidth=2 * grid.shape[0] + 1)  # fmt: skip
    meta = app.Metadynamics(system, [variable], setup.temperature, 8.0, 1.2, 250)
    simulation = app.Simulation(setup.topology, system, setup.integrator(),
                                default_platform(system.getNumParticles()))  # fmt: skip
    simulation.context.setPositions(setup.positions)
    simulation.context.setVelocitiesToTemperature(setup.temperature, 1)
    runs[f"eABF along {name}"] = eabf.run
    runs[f"OPES along {name}"] = opes.run
    sparse = OPES(setup.system, setup.positions, cv, grid, 30.0, setup.temperature, pace=250,
                  **{**common, "sample_frequency": 50})  # fmt: skip
    runs[f"OPES along {name}, samples every 50 steps"] = sparse.run
    runs[f"WT metadynamics along {name}"] = lambda n: meta.step(simulation, n)
    return eabf.route


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--steps", type=int, default=20_000, help="steps per timing (4 fs each), a multiple of 500")
    parser.add_argument("--repeats", type=int, default=3, help="timings per contender (median reported)")
    args = parser.parse_args()
    steps, repeats = (1000, 1) if args.quick else (args.steps, args.repeats)
    if steps % 500:
        parser.error(f"--steps={steps} must be a multiple of 500 (the samplers' strides)")
    torch.set_num_threads(1)
    setup = mk.datasets.alanine_dipeptide_system("vacuum")
    runs, phi = contenders(setup)
    routes = {"φ": add_samplers(runs, setup, "φ", phi, np.arange(22), Grid(-np.pi, np.pi, 72, periodic=True), 0.1)}
    ae, particles, grid, span = autoencoder_cv(max_epochs=2 if args.quick else 10, step=100 if args.quick else 20)
    assert grid.contains(evaluate_cv(ae, setup.positions[particles] * 10))[0]
    routes["AE CV"] = add_samplers(runs, setup, "AE CV", ae, particles, grid, span / 62)
    for run in runs.values():  # warm up: contexts, the first kernels, caches
        run(steps // 10 // 50 * 50)
    timings = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run(steps)
            timings[name].append((time.perf_counter() - start) / steps)
    base = np.median(timings["unbiased MD"])
    print(f"# bench_samplers: OpenMM {openmm.__version__}, torch {torch.__version__}; {steps} steps of 4 fs per "
          f"timing, median of {repeats}; routes {routes}")  # fmt: skip
    rows = [("sampler", "µs/step", "ratio to unbiased", "ns/day")]
    for name, values in timings.items():
        t = np.median(values)
        rows.append((name, f"{t * 1e6:.1f}", f"{base / t:.2f}", f"{0.004e-3 * 86400 / t:.0f}"))
    print_table(rows)


if __name__ == "__main__":
    main()
