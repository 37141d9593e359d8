"""Throughput of alanine dipeptide biased on an autoencoder CV, against the same simulation unbiased.

Run from the repository root::

    .venv/bin/python benchmarks/bench_bias.py            # about five minutes on two busy cores
    .venv/bin/python benchmarks/bench_bias.py --quick    # a smoke run

What it measures, on alanine dipeptide in vacuum and in OBC implicit solvent as the shipped
data were made (``mk.datasets.alanine_dipeptide_system``: 22 atoms, AMBER99SB-ILDN, no cutoff,
X-H bonds constrained, hydrogen mass 4 amu, LangevinMiddle 4 fs, 300 K), for each solvent:

* the fastest OpenMM platform for this size (Reference vs CPU, measured);
* ns/day of the unbiased run and of a harmonic restraint on a 2-D CV learned by
  ``mk.AutoencoderCV`` from the shipped implicit-solvent frames (heavy atoms, trained here in
  a few seconds), on the same platform:

  - *distances AE* (45 heavy-atom distances, hidden layer of 16, tanh): compiled into a
    CustomCVForce (route ``"expression"``, no Python per step; normalisation and first layer
    folded into 16 collective variables), and the fitted module through the python route for
    comparison;
  - *aligned AE* (Kabsch-aligned heavy-atom coordinates, mdcvkit's default features, hidden
    layer of 40): only the Python-driven routes can run it (route ``"python"``: PythonForce
    + the CV's NumPy twin, value and gradient, every step);

  the ratio biased / unbiased throughput is the figure of merit (goal >= 0.5);
* the cost split of the python route on the aligned AE: OpenMM's own step (the unbiased
  step), the CV evaluation (value and gradient through the Kabsch fit, NumPy twin), and the rest
  (OpenMM -> Python -> OpenMM transfer, the CustomCVForce, the PythonForce call);
* 2-D extended ABF on each AE (samples every 10 steps, bias refreshed every 100);
* total-energy drift of a constant-energy (Verlet, 0.5 fs, no constraints) run with and
  without a harmonic bias on the aligned AE (python route), in kJ/mol/ns.

Timings depend on the machine and its load; compare ratios from the same run.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mdcvkit as mk  # noqa: E402
from mdcvkit.biasing import (  # noqa: E402
    DescriptorCV,
    ExtendedABF,
    Grid,
    TorchCVEvaluator,
    add_cv_bias,
    evaluate_cv,
    fastest_platform,
    step,
)

TIMESTEP = 0.004  # ps, with hydrogen mass repartitioning as in make_data.py
HARMONIC = "0.5*k*((cv0-c0)^2+(cv1-c1)^2)"


def train_autoencoders(step_frames, max_epochs):
    """2-D AE CVs on heavy-atom distances (compiled and as fitted) and on aligned coordinates; (cv, particles)."""
    u = mk.datasets.alanine_dipeptide()
    heavy = u.select_atoms("not name H*")
    settings = {"n_cv": 2, "seed": 0, "max_epochs": max_epochs}
    distances = mk.AutoencoderCV(heavy, features="distances", hidden=(16,), **settings).run(step=step_frames)
    aligned = mk.AutoencoderCV(heavy, features="aligned", **settings).run(step=step_frames)
    positions = heavy.positions[None].astype(float)
    compiled = DescriptorCV.from_collective_variable(distances.results.model, positions)
    return {
        "distances": (compiled, heavy.indices),
        "distances, fitted": (distances.results.model, heavy.indices),
        "aligned": (aligned.results.model, heavy.indices),
    }


def time_steps(context, n_steps, repeats=3, biases=()):
    """Best of ``repeats`` timings of ``n_steps`` steps, seconds per step (``step`` drives the biases)."""
    step(context, max(10, n_steps // 20), biases)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        step(context, n_steps, biases)
        best = min(best, (time.perf_counter() - start) / n_steps)
    return best


def make_context(setup, system, platform_name):
    """Context of ``system`` (``setup.system`` or a biased copy) with the setup's integrator, at its start."""
    context = openmm.Context(system, setup.integrator(), openmm.Platform.getPlatformByName(platform_name))
    context.setPositions(setup.positions)
    context.setVelocitiesToTemperature(setup.temperature, 1)
    return context


def ns_per_day(seconds_per_step, dt_ps=TIMESTEP):
    return dt_ps * 1e-3 * 86400 / seconds_per_step


def restraint(cv, particles, positions):
    """Harmonic restraint parameters around the CV at ``positions`` (k in kJ/mol per CV unit²)."""
    xi = evaluate_cv(cv, positions[particles] * 10)[0]
    return {"k": 100.0, "c0": float(xi[0]) + 0.1, "c1": float(xi[1])}


def energy_drift(cv, particles, biased, n_steps):
    setup = mk.datasets.alanine_dipeptide_system("vacuum", constraints=False)
    system, positions = setup.system, setup.positions
    if biased:
        add_cv_bias(system, cv, HARMONIC, positions, particles=particles, route="python",
                    parameters=restraint(cv, particles, positions))  # fmt: skip
    integrator = openmm.VerletIntegrator(0.0005)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300, 1)
    times, energies = [], []
    for k in range(n_steps // 100):
        integrator.step(100)
        state = context.getState(getEnergy=True)
        times.append((k + 1) * 100 * 0.0005)
        energies.append(state.getPotentialEnergy()._value + state.getKineticEnergy()._value)
    slope = np.polyfit(np.array(times) * 1e-3, energies, 1)[0]  # kJ/mol per ns
    return slope, np.std(energies)


def cv_evaluation_time(cv, particles, positions, n_calls):
    """Seconds per CV value and gradient at one configuration (new positions each call), as the python route."""
    evaluator = TorchCVEvaluator(cv, 2)
    p = positions[particles].copy()
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        for k in range(n_calls):
            p[0, 0] += 1e-7 * (1 if k % 2 else -1)  # no cache hit
            evaluator(p)
        best = min(best, (time.perf_counter() - start) / n_calls)
    return best


def throughput(setup, cvs, n_steps, solvent):
    """Print the platform timings and the throughput table of one solvent; return {run: s/step}."""
    system, positions = setup.system, setup.positions

    def simulation(name):
        sim = app.Simulation(setup.topology, system, setup.integrator(), openmm.Platform.getPlatformByName(name))
        sim.context.setPositions(positions)
        return sim

    best, platform_timings = fastest_platform(simulation, n_steps=max(100, n_steps // 4))
    print(f"\n## {solvent}: platform (unbiased)")
    for name, t in platform_timings.items():
        print(f"{name:10s} {t * 1e6:9.1f} us/step  {ns_per_day(t):8.1f} ns/day")
    print(f"fastest: {best}")

    base = time_steps(make_context(setup, system, best), n_steps * 10)
    rows = [("unbiased", base)]
    for label, kind, route in (("distances AE, expression route", "distances", "expression"),
                               ("distances AE, python route", "distances, fitted", "python"),
                               ("aligned AE, python route", "aligned", "python")):  # fmt: skip
        cv, particles = cvs[kind]
        biased = openmm.XmlSerializer.clone(system)
        bias = add_cv_bias(biased, cv, HARMONIC, positions, particles=particles, route=route,
                           parameters=restraint(cv, particles, positions))  # fmt: skip
        assert bias.route == route
        steps = n_steps * 10 if route == "expression" else n_steps
        rows.append((label, time_steps(make_context(setup, biased, best), steps, biases=[bias])))

    for label, kind, route in (("eABF 2-D, distances AE, expression", "distances", "expression"),
                               ("eABF 2-D, aligned AE, python", "aligned", "python")):  # fmt: skip
        cv, particles = cvs[kind]
        xi0 = evaluate_cv(cv, positions[particles] * 10)[0]
        grid = Grid(xi0 - 3.0, xi0 + 3.0, [30, 30])
        eabf = ExtendedABF(system, positions, cv, grid, kappa=2.494 / 0.1**2, temperature=300, route=route,
                           particles=particles, integrator=setup.integrator(), platform=best, sample_frequency=10,
                           update_frequency=100, seed=1)  # fmt: skip
        steps = n_steps * 10 if route == "expression" else n_steps
        eabf.run(steps // 10)
        start = time.perf_counter()
        eabf.run(steps)
        rows.append((label, (time.perf_counter() - start) / steps))

    print(f"\n## {solvent}: throughput on {best} (ratio = biased / unbiased ns/day; goal >= 0.5)")
    print(f"{'run':36s} {'us/step':>9s} {'ns/day':>9s} {'ratio':>7s}")
    for name, t in rows:
        print(f"{name:36s} {t * 1e6:9.1f} {ns_per_day(t):9.0f} {base / t:7.3f}")
    return dict(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed steps of the python route (default 2000)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    n_steps = 200 if args.quick else args.steps
    torch.set_num_threads(1)

    print(f"# bench_bias: OpenMM {openmm.__version__}, torch {torch.__version__}, {platform.processor() or ''}")
    print(f"# alanine dipeptide, 22 atoms, HMR, LangevinMiddle {TIMESTEP * 1000:g} fs; "
          f"{n_steps} steps per python-route timing, 10x that for compiled ones (best of 3)")  # fmt: skip
    start = time.perf_counter()
    cvs = train_autoencoders(step_frames=50 if args.quick else 20, max_epochs=20 if args.quick else 100)
    print(f"(two 2-D AEs trained on the shipped implicit-solvent frames in {time.perf_counter() - start:.0f} s)")
    bases = {}
    for solvent in ("vacuum", "implicit"):
        setup = mk.datasets.alanine_dipeptide_system(solvent)
        bases[solvent] = throughput(setup, cvs, n_steps, solvent)

    cv, particles = cvs["aligned"]
    cv_time = cv_evaluation_time(cv, particles, mk.datasets.alanine_dipeptide_system().positions, n_steps)
    python_total = bases["vacuum"]["aligned AE, python route"]
    base = bases["vacuum"]["unbiased"]
    print("\n## python route (aligned AE, vacuum), cost split per step")
    print(f"OpenMM step (unbiased)               {base * 1e6:9.1f} us  {base / python_total:6.1%}")
    print(f"CV value + gradient (NumPy twin)     {cv_time * 1e6:9.1f} us  {cv_time / python_total:6.1%}")
    rest = python_total - base - cv_time
    print(f"transfer, PythonForce, CustomCVForce {rest * 1e6:9.1f} us  {rest / python_total:6.1%} (the rest)")

    n_verlet = 2000 if args.quick else 20000
    print(f"\n## energy conservation, Verlet 0.5 fs, no constraints, {n_verlet * 0.0005:g} ps (Reference)")
    for biased in (False, True):
        slope, spread = energy_drift(cv, particles, biased, n_verlet)
        label = "harmonic bias on the aligned AE" if biased else "unbiased"
        print(f"{label:34s} drift {slope:9.2f} kJ/mol/ns   std {spread:.4f} kJ/mol")


if __name__ == "__main__":
    main()
