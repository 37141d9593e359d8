"""Cost of a bias on a learned CV per MD step, per route × bias stride × solvent, against unbiased MD.

Run from the repository root::

    .venv/bin/python benchmarks/bench_bias.py            # about three minutes on two cores
    .venv/bin/python benchmarks/bench_bias.py --quick    # a smoke run

Alanine dipeptide as the shipped data were made (``mk.datasets.alanine_dipeptide_system``: 22 atoms,
AMBER99SB-ILDN, no cutoff, X-H bonds constrained, hydrogen mass 4 amu, 300 K, Reference platform, the
package's choice for this size), in vacuum and in OBC implicit solvent. The CVs are 2-D autoencoders
with a hidden layer of 40 tanh units on the 10 heavy atoms, trained here for a few epochs on the
shipped frames (the cost does not depend on how well they are trained):

* *aligned AE* (Kabsch-aligned coordinates, the package's default features): routes "python"
  (PythonForce, torch forward and backward per evaluation) and "torch" where openmm-torch is installed;
* *body-frame AE* (coordinates in the frame of N, CA, C): routes "expression" (compiled, no Python per
  step) and "python".

For each, a harmonic restraint on the CV is evaluated every ``bias_stride`` steps (1 = LangevinMiddle,
more = ``MTSLangevinIntegrator`` through ``mk.biasing.bias_integrator``, 4 fs inner steps). The table
gives µs per 4 fs step and the ratio unbiased / biased time per step, measured in the same run (goal of
issue 31: ≥ 0.5 in vacuum, ≥ 0.8 in OBC). Strides above 2 with 4 fs steps exceed the stability limit of
eABF's coupling (``mk.biasing.bias``), not that of a soft restraint.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import openmm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mdcvkit as mk  # noqa: E402
from mdcvkit.biasing import add_cv_bias, bias_integrator, default_platform  # noqa: E402
from mdcvkit.export import available_routes, evaluate_cv  # noqa: E402

HARMONIC = "0.5*100*((cv0-c0)^2+(cv1-c1)^2)"
STRIDES = (1, 2, 4, 8)


def train(max_epochs, step):
    """The two 2-D AE CVs of the module docstring: {name: (cv, system indices of its atoms)}."""
    heavy = mk.datasets.alanine_dipeptide().select_atoms("not name H*")
    settings = {"n_cv": 2, "seed": 0, "max_epochs": max_epochs, "hidden": (40,)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few epochs: not converged, on purpose
        aligned = mk.AutoencoderCV(heavy, features="aligned", **settings).run(step=step)
        frame = mk.AutoencoderCV(heavy, features="frame", **settings).run(step=step)
    return {"aligned AE": (aligned.results.model, heavy.indices), "body-frame AE": (frame.results.model, heavy.indices)}


def seconds_per_step(setup, system, integrator, n_steps):
    """Best of three timings of ``n_steps`` MD steps (an MTS step counts as bias_stride steps)."""
    stride = getattr(integrator, "bias_stride", 1)
    context = openmm.Context(system, integrator, default_platform(system.getNumParticles()))
    context.setPositions(setup.positions)
    context.setVelocitiesToTemperature(setup.temperature, 1)
    integrator.step(max(1, n_steps // (20 * stride)))
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        integrator.step(n_steps // stride)
        best = min(best, (time.perf_counter() - start) / (n_steps // stride * stride))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    n_python, n_compiled = (80, 400) if args.quick else (1600, 16000)
    torch.set_num_threads(1)
    cvs = train(max_epochs=2 if args.quick else 10, step=100 if args.quick else 20)
    print(f"# bench_bias: OpenMM {openmm.__version__}, torch {torch.__version__}; µs per 4 fs step, best of 3")
    print(f"{'solvent':9s} {'CV':14s} {'route':11s} {'stride':>6s} {'µs/step':>9s} {'ratio':>7s}")
    for solvent in ("vacuum", "implicit"):
        setup = mk.datasets.alanine_dipeptide_system(solvent)
        base = seconds_per_step(setup, openmm.XmlSerializer.clone(setup.system), setup.integrator(), n_compiled)
        print(f"{solvent:9s} {'(unbiased)':14s} {'':11s} {'':>6s} {base * 1e6:9.1f} {1.0:7.3f}")
        for name, (cv, particles) in cvs.items():
            xi = evaluate_cv(cv, setup.positions[particles] * 10)[0]
            for route in available_routes(cv, particles):
                for stride in STRIDES:
                    system = openmm.XmlSerializer.clone(setup.system)
                    bias = add_cv_bias(system, cv, HARMONIC.replace("c0", repr(float(xi[0]) + 0.1)).replace(
                        "c1", repr(float(xi[1]))), setup.positions, particles=particles, route=route)  # fmt: skip
                    integrator = bias_integrator(system, bias, setup.temperature, timestep=setup.timestep,
                                                 bias_stride=stride)  # fmt: skip
                    t = seconds_per_step(setup, system, integrator, n_compiled if route == "expression" else n_python)
                    print(f"{solvent:9s} {name:14s} {route:11s} {stride:6d} {t * 1e6:9.1f} {base / t:7.3f}", flush=True)


if __name__ == "__main__":
    main()
