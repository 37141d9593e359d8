"""Per-step cost of each CV bias route against the unbiased simulation, in one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_bias.py            # about two minutes on two busy cores
    .venv/bin/python benchmarks/bench_bias.py --quick    # a smoke run

What it measures, on the shipped vacuum alanine dipeptide (22 atoms, AMBER99SB-ILDN,
HBond constraints, LangevinMiddle 2 fs, 300 K):

* the fastest OpenMM platform for this size (Reference vs CPU, measured);
* per-step wall time and ns/day of the unbiased run and of a harmonic bias on a 2-D
  AE-like CV (sin/cos of φ, ψ -> MLP 4-32-32-2, tanh) through each route available here
  (``expression``: compiled into a CustomCVForce; ``python``: PythonForce + torch autograd;
  ``torch``: openmm-torch, when installed; ``external``: CustomExternalForce parameters set
  from Python before every step, for OpenMM < 8.6), and through the python route with a CV on
  raw positions (MLP 66-32-32-2), which only the Python-driven routes can run; the
  overhead is reported as a ratio to the unbiased step;
* the cost split of the python route: OpenMM's own step, the torch CV evaluation
  (forward + backward), and the rest (OpenMM -> Python -> OpenMM transfer);
* extended ABF on the same CV (sampling every 10 steps, bias refreshed every 100);
* total-energy drift of a constant-energy (Verlet, 0.5 fs, no constraints) run with and
  without a harmonic bias on the CV (python route), in kJ/mol/ns.

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
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdcvkit.biasing import (  # noqa: E402
    DescriptorCV,
    ExtendedABF,
    Grid,
    TorchCVEvaluator,
    Torsion,
    add_cv_bias,
    available_routes,
    fastest_platform,
    step,
)

PDB = ROOT / "data" / "alanine_dipeptide" / "ala2.pdb"
PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)
HARMONIC = "0.5*k*((cv0-c0)^2+(cv1-c1)^2)"


def ae_like_cv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    return DescriptorCV([Torsion(*PHI), Torsion(*PSI)], model=model)


class PositionsCV(nn.Module):
    """MLP on centred raw positions (Å): a CV only the Python-driven routes can run."""

    def __init__(self, n_atoms=22):
        super().__init__()
        torch.manual_seed(0)
        self.n_atoms = n_atoms
        self.net = nn.Sequential(nn.Linear(3 * n_atoms, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                                 nn.Linear(32, 2))  # fmt: skip

    def forward(self, positions):
        centred = positions - positions.mean(dim=1, keepdim=True)
        return self.net(centred.flatten(1).to(torch.float32))


def alanine(constraints=app.HBonds):
    pdb = app.PDBFile(str(PDB))
    system = app.ForceField("amber99sbildn.xml").createSystem(pdb.topology, constraints=constraints)
    return pdb.topology, system, np.array(pdb.positions.value_in_unit(openmm.unit.nanometer))


def langevin(seed=1):
    integrator = openmm.LangevinMiddleIntegrator(300, 1.0, 0.002)
    integrator.setRandomNumberSeed(seed)
    return integrator


def time_steps(context, n_steps, repeats=3, biases=()):
    """Best of ``repeats`` timings of ``n_steps`` steps, seconds per step (``step`` drives the biases)."""
    step(context, max(10, n_steps // 20), biases)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        step(context, n_steps, biases)
        best = min(best, (time.perf_counter() - start) / n_steps)
    return best


def make_context(system, positions, platform_name):
    context = openmm.Context(system, langevin(), openmm.Platform.getPlatformByName(platform_name))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300, 1)
    return context


def ns_per_day(seconds_per_step, dt_ps=0.002):
    return dt_ps * 1e-3 * 86400 / seconds_per_step


def energy_drift(cv, biased, n_steps, positions):
    _, system, _ = alanine(constraints=None)
    if biased:
        xi = cv(torch.tensor(positions * 10, dtype=torch.float32)[None]).detach().numpy()[0]
        add_cv_bias(system, cv, HARMONIC, positions, route="python",
                    parameters={"k": 200.0, "c0": float(xi[0]) + 0.1, "c1": float(xi[1])})  # fmt: skip
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per route (default 2000)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    n_steps = 200 if args.quick else args.steps
    torch.set_num_threads(1)

    topology, system, positions = alanine()
    print(
        f"# bench_bias: OpenMM {openmm.__version__}, torch {torch.__version__}, {platform.processor() or ''}"
    )
    print(
        f"# alanine dipeptide, vacuum, 22 atoms, LangevinMiddle 2 fs; {n_steps} steps per timing (best of 3)"
    )

    def simulation(name):
        sim = app.Simulation(topology, system, langevin(), openmm.Platform.getPlatformByName(name))
        sim.context.setPositions(positions)
        return sim

    best, platform_timings = fastest_platform(simulation, n_steps=max(100, n_steps // 4))
    print("\n## platform (unbiased)")
    for name, t in platform_timings.items():
        print(f"{name:10s} {t * 1e6:9.1f} us/step  {ns_per_day(t):8.1f} ns/day")
    print(f"fastest: {best}")

    cv = ae_like_cv()
    rows = []
    base = time_steps(make_context(system, positions, best), n_steps * 5)
    rows.append(("unbiased", base))
    xi0 = cv(torch.tensor(positions * 10)[None].to(torch.float32)).detach().numpy()[0]
    parameters = {"k": 100.0, "c0": float(xi0[0]), "c1": float(xi0[1])}
    for route in available_routes(cv):
        biased = openmm.XmlSerializer.clone(system)
        bias = add_cv_bias(biased, cv, HARMONIC, positions, route=route, parameters=parameters)
        steps = n_steps * 5 if route == "expression" else n_steps
        context = make_context(biased, positions, best)
        rows.append((f"AE-like CV, {route} route", time_steps(context, steps, biases=[bias])))
    positions_cv = PositionsCV()
    biased = openmm.XmlSerializer.clone(system)
    xi_p = positions_cv(torch.tensor(positions * 10)[None]).detach().numpy()[0]
    add_cv_bias(biased, positions_cv, HARMONIC, positions, route="python",
                parameters={"k": 100.0, "c0": float(xi_p[0]), "c1": float(xi_p[1])})  # fmt: skip
    rows.append(
        ("positions-MLP CV, python route", time_steps(make_context(biased, positions, best), n_steps))
    )

    grid = Grid([-3.0, -3.0], [3.0, 3.0], [30, 30])
    for route in ("expression", "python"):
        eabf = ExtendedABF(system, positions, cv, grid, kappa=2.494 / 0.1**2, temperature=300, route=route,
                           platform=best, sample_frequency=10, update_frequency=100, seed=1)  # fmt: skip
        steps = n_steps * 5 if route == "expression" else n_steps
        eabf.run(steps // 10)
        start = time.perf_counter()
        eabf.run(steps)
        rows.append((f"eABF 2-D, {route} route", (time.perf_counter() - start) / steps))

    print(f"\n## per-step cost on {best} (ratio = biased / unbiased step time)")
    print(f"{'run':34s} {'us/step':>9s} {'ns/day':>8s} {'ratio':>7s}")
    for name, t in rows:
        print(f"{name:34s} {t * 1e6:9.1f} {ns_per_day(t):8.1f} {t / base:7.2f}")

    # cost split of the python route
    evaluator = TorchCVEvaluator(cv, 2)
    p = positions.copy()
    cv_time = np.inf
    for _ in range(3):
        start = time.perf_counter()
        for k in range(n_steps):
            p[0, 0] += 1e-7 * (1 if k % 2 else -1)  # new positions each call: no cache hit
            evaluator(p)
        cv_time = min(cv_time, (time.perf_counter() - start) / n_steps)
    python_total = dict(rows)["AE-like CV, python route"]
    print("\n## python route, cost split per step")
    print(f"OpenMM step (unbiased)         {base * 1e6:9.1f} us")
    print(f"CV forward + backward (torch)  {cv_time * 1e6:9.1f} us")
    print(f"transfer and CustomCVForce     {(python_total - base - cv_time) * 1e6:9.1f} us (rest; noisy)")

    n_verlet = 2000 if args.quick else 20000
    print(f"\n## energy conservation, Verlet 0.5 fs, no constraints, {n_verlet * 0.0005:g} ps (Reference)")
    for biased in (False, True):
        slope, spread = energy_drift(cv, biased, n_verlet, alanine(constraints=None)[2])
        label = "harmonic bias on the CV (python)" if biased else "unbiased"
        print(f"{label:34s} drift {slope:9.2f} kJ/mol/ns   std {spread:.4f} kJ/mol")


if __name__ == "__main__":
    main()
