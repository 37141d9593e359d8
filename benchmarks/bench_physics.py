"""Energy evaluations per second of an OpenMM System through mdcvkit's torch bridge, and reverse-KL epochs/s.

Run from the repository root::

    .venv/bin/python benchmarks/bench_physics.py            # about a minute on two busy cores
    .venv/bin/python benchmarks/bench_physics.py --quick    # a smoke run

What it measures, on alanine dipeptide in vacuum (``alanine_dipeptide_system("vacuum",
constraints=False)``, 22 atoms, AMBER99SB-ILDN, no cutoff), at configurations near the shipped
start (Gaussian displacements of 0.05 Å):

* ``bare OpenMM``: the leanest loop, ``setPositions`` + ``getState(energy, forces)`` on one
  Reference Context, the floor of any per-configuration bridge;
* ``OpenMMPotential, n workers``: energy and forces (forward + backward) of a batch through
  :class:`mdcvkit.physics.OpenMMPotential`, with 1 and 2 worker processes (one Context each);
* ``reverse-KL epochs/s``: epochs of :class:`mdcvkit.physics.PhysicsVAE` training on that potential
  (body-frame coordinates, 60 dimensions, 10 steps of 256 samples per epoch plus a validation
  of 1024 samples: 3,584 energy evaluations per epoch), and on the toy ``TiltedDoubleWell2D``.

Each timing is repeated (``--repeats``) and the median reported. Timings depend on the machine
and its load; compare numbers from the same run.
"""

import argparse
import statistics
import time
import warnings

import numpy as np
import openmm
import torch
from _common import print_table, timing_args

import mdcvkit as mk
from mdcvkit.physics import OpenMMPotential, PhysicsVAE, TorchPotential
from mdcvkit.systems import TiltedDoubleWell2D
from mdcvkit.training import Trainer


def median_time(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def epochs_per_second(potential, beta, n_cv, epochs, reference=None):
    estimator = PhysicsVAE(potential, beta, n_cv=n_cv, beta_start=beta, kl_threshold=np.inf, reference=reference,
                           trainer=Trainer(max_epochs=epochs, patience=epochs, seed=0), max_stages=1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit()
    return epochs / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="configurations per timing")
    parser.add_argument("--epochs", type=int, default=10, help="reverse-KL epochs per timing")
    args = timing_args(parser, quick={"n": 200, "epochs": 2, "repeats": 1})
    setup = mk.datasets.alanine_dipeptide_system("vacuum", constraints=False)
    rng = np.random.default_rng(0)
    positions = setup.positions[None] * 10.0 + rng.normal(0, 0.05, (args.n, 22, 3))
    batch = torch.tensor(positions.reshape(args.n, -1))

    context = openmm.Context(setup.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))

    def bare():
        for frame in positions / 10.0:
            context.setPositions(frame)
            context.getState(getEnergy=True, getForces=True)

    rows = [("what", "per second"),
            ("bare OpenMM (Reference, 1 Context)", f"{args.n / median_time(bare, args.repeats):,.0f}")]
    for workers in (1, 2):
        potential = OpenMMPotential(setup.system, platform="Reference", n_workers=workers)
        x = batch.clone().requires_grad_(True)
        potential.energy(x[:8])  # starts the worker pool outside the timing

        def through_torch(potential=potential, x=x):
            potential.energy(x).sum().backward()

        rows.append((f"OpenMMPotential, {workers} worker(s), energy+forces",
                     f"{args.n / median_time(through_torch, args.repeats):,.0f}"))
        potential.close()
    body = OpenMMPotential(setup.system, frame=(4, 6, 8), platform="Reference")
    reference = body.features(torch.tensor(setup.positions[None] * 10.0, dtype=torch.float32))[0]
    rows.append(("reverse-KL epochs, alanine dipeptide (60-D, 3,584 evaluations each)",
                 f"{epochs_per_second(body, 0.401, 2, args.epochs, reference):.2f}"))
    rows.append(("reverse-KL epochs, TiltedDoubleWell2D",
                 f"{epochs_per_second(TorchPotential.from_toy(TiltedDoubleWell2D()), 1.0, 1, 5 * args.epochs):.2f}"))
    print_table(rows)


if __name__ == "__main__":
    main()
