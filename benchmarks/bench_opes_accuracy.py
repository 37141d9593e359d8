"""Accuracy, not speed: OPES (``mk.biasing.OPES``) against exact toys, eABF and metadynamics, seed by seed.

Run from the repository root::

    .venv/bin/python benchmarks/bench_opes_accuracy.py            # about 25 minutes on two cores
    .venv/bin/python benchmarks/bench_opes_accuracy.py --quick    # a smoke run (numbers mean nothing)

1. **Toys** (Brownian dynamics, reduced units): along x1 of ``DoubleWell2D`` (1M steps, OPES barrier
   8 kT) and ``EntropicSwitch`` (4M steps, barrier 12 kT), seeds 1-5: RMSE in kT against the exact free
   energy over the bins of exact weight > 1e-3, for OPES's kernel-density estimate (``results.pmf``), the
   reweighted histogram of its samples (``results.reweighted_pmf``) and eABF/CZAR with the same steps.
2. **Alanine dipeptide in vacuum along φ** (the system of ``tests/test_biasing_metad.py``: 4 fs Langevin
   steps, 300 K, Reference platform), 5 ns each, seeds 0-2: eABF (CZAR, κ = kT/(0.1 rad)²), OPES (barrier
   30 kJ/mol, a kernel every 1 ps, adaptive width) and OpenMM's well-tempered metadynamics (bias factor 8,
   1.2 kJ/mol every 1 ps, 0.3 rad): A(C7ax) - A(C7eq) from the basin populations of each profile
   (C7ax: 0° < φ < 120°, C7eq: the rest) and from the basin minima, and C7eq <-> C7ax crossings.
3. **A learned CV**: a 1-D autoencoder on the backbone dihedrals, trained on the frames of the seed-0
   φ-eABF run (as in ``tests/test_biasing_metad.py``), biased by eABF (σ = range / 62) and by OPES
   (barrier 30 kJ/mol) for 5 ns each, seeds 0-2: crossings, counted on φ of the stored frames.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import MDAnalysis as mda
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from MDAnalysis.coordinates.memory import MemoryReader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mdcvkit as mk  # noqa: E402
from benchmarks._common import print_table  # noqa: E402
from mdcvkit.analysis import CollectiveVariable  # noqa: E402
from mdcvkit.biasing import OPES, ExtendedABF, Grid  # noqa: E402
from mdcvkit.datasets import basin_crossings  # noqa: E402
from mdcvkit.export import evaluate_cv  # noqa: E402
from mdcvkit.features import Dihedrals  # noqa: E402

PHI = (4, 6, 8, 14)
TEMPERATURE, TIMESTEP = 300.0, 0.004
KT = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin) * TEMPERATURE
ALA_BARRIER = 30.0  # kJ/mol, about 12 kT


def rmse_in_kT(toy, pmf):
    """RMSE (kT) of a PMF along x1 against the exact one over bins of exact weight > 1e-3 (NaN if one is missing)."""
    exact = toy.free_energy("x1", grid=pmf.x1.values).values
    weight = np.exp(-toy.beta * exact)
    region = weight / weight.sum() > 1e-3
    diff = pmf.values[region] - exact[region]
    return float(np.sqrt(np.mean((diff - diff.mean()) ** 2)) * toy.beta)


def toys(quick):
    rows = [("toy", "seed", "steps", "OPES kernel density", "OPES reweighted", "eABF/CZAR", "OPES s", "eABF s")]
    settings = {"DoubleWell2D": (1_000_000, 8), "EntropicSwitch": (4_000_000, 12)}
    for name, (steps, barrier) in settings.items():
        steps = steps // 20 if quick else steps
        toy = mk.systems.TOYS[name]()
        for seed in range(1, 3 if quick else 6):
            start = time.perf_counter()
            opes = OPES.for_toy(toy, "x1", grid=(-2, 2, 80), barrier=barrier * toy.kT, sample_frequency=50,
                                seed=seed).run(steps)  # fmt: skip
            middle = time.perf_counter()
            eabf = ExtendedABF.for_toy(toy, "x1", grid=(-2, 2, 80), sample_frequency=10, update_frequency=1000,
                                       full_samples=100, seed=seed).run(steps)  # fmt: skip
            end = time.perf_counter()
            rows.append((name, seed, steps, f"{rmse_in_kT(toy, opes.results.pmf):.3f}",
                         f"{rmse_in_kT(toy, opes.results.reweighted_pmf):.3f}",
                         f"{rmse_in_kT(toy, eabf.results.pmf):.3f}", f"{middle - start:.1f}",
                         f"{end - middle:.1f}"))  # fmt: skip
            print(*rows[-1], flush=True)
    print_table(rows)


def basin_gap(phi_rad, free):
    """A(C7ax) - A(C7eq) in kT from the populations (C7ax 0° < φ < 120°) and from the basin minima."""
    deg, free = np.degrees(phi_rad), np.asarray(free, dtype=float)
    weight = np.nan_to_num(np.exp(-(free - np.nanmin(free)) / KT))
    ax = (deg > 0) & (deg < 120)
    minima = np.nanmin(free[(deg > 30) & (deg < 100)]) - np.nanmin(free[(deg > -150) & (deg < -40)])
    return -np.log(weight[ax].sum() / weight[~ax].sum()), minima / KT


def langevin(seed):
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, 1.0, TIMESTEP)
    integrator.setRandomNumberSeed(seed + 1)
    return integrator


def phi_cv(atoms=PHI, n_atoms=22):
    return CollectiveVariable.from_featurizer(Dihedrals(n_atoms, [atoms], trig=False), names=["phi"])


def metadynamics(setup, variable, n_steps, seed):
    """OpenMM's well-tempered metadynamics: φ (°) every 10 ps, its grid nodes and its free energy there."""
    system = openmm.XmlSerializer.clone(setup.system)
    meta = app.Metadynamics(system, [variable], TEMPERATURE, 8.0, 1.2, 250)
    sim = app.Simulation(setup.topology, system, langevin(seed), openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(setup.positions)
    sim.context.setVelocitiesToTemperature(TEMPERATURE, seed + 1)
    frames = []
    for _ in range(n_steps // 2500):
        meta.step(sim, 2500)
        frames.append(sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    phi = np.degrees(evaluate_cv(phi_cv(), np.array(frames))[:, 0])
    grid = np.linspace(variable.minValue, variable.maxValue, variable.gridWidth)
    return phi, grid, meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)


def alanine(quick):
    setup = mk.datasets.alanine_dipeptide_system("vacuum")
    n_steps = 25_000 if quick else 1_250_000  # 5 ns
    grid = Grid(-np.pi, np.pi, 72, periodic=True, names=["phi"])
    rows = [("method", "seed", "ΔA pop (kT)", "ΔA minima (kT)", "crossings", "s")]
    gaps = {}
    eabf0 = None
    for seed in range(3):
        start = time.perf_counter()
        eabf = ExtendedABF(setup.system, setup.positions, phi_cv(), grid, kappa=KT / 0.1**2, temperature=TEMPERATURE,
                           integrator=langevin(seed), sample_frequency=10, update_frequency=500, seed=seed,
                           store_positions=seed == 0).run(n_steps)  # fmt: skip
        eabf0 = eabf if seed == 0 else eabf0
        runs = {"eABF (CZAR)": (eabf.results.pmf, np.degrees(eabf.results.samples.xi.values[:, 0]),
                                time.perf_counter() - start)}  # fmt: skip
        start = time.perf_counter()
        opes = OPES(setup.system, setup.positions, phi_cv(), grid, ALA_BARRIER, TEMPERATURE, pace=250,
                    sample_frequency=10, integrator=langevin(seed), seed=seed).run(n_steps)  # fmt: skip
        seconds = time.perf_counter() - start
        phi = np.degrees(opes.results.samples.xi.values[:, 0])
        runs["OPES (kernel density)"] = (opes.results.pmf, phi, seconds)
        runs["OPES (reweighted)"] = (opes.results.reweighted_pmf, phi, seconds)
        start = time.perf_counter()
        force = openmm.CustomTorsionForce("theta")
        force.addTorsion(*PHI, [])
        variable = app.BiasVariable(force, -np.pi, np.pi, 0.3, periodic=True, gridWidth=73)
        phi, nodes, free = metadynamics(setup, variable, n_steps, seed)
        runs["WT metadynamics"] = (free[:-1], phi, time.perf_counter() - start, nodes[:-1])
        for method, (pmf, phi, seconds, *nodes) in runs.items():
            where = nodes[0] if nodes else pmf.phi.values
            pop, minima = basin_gap(where, getattr(pmf, "values", pmf))
            gaps.setdefault(method, []).append(pop)
            rows.append((method, seed, f"{pop:.2f}", f"{minima:.2f}", basin_crossings(phi), f"{seconds:.0f}"))
            print(*rows[-1], flush=True)
    print_table(rows)
    print("\nA(C7ax) - A(C7eq) from populations, kT: mean ± standard error over seeds (min-max)")
    for method, values in gaps.items():
        values = np.asarray(values)
        error = values.std(ddof=1) / np.sqrt(len(values))
        print(f"  {method}: {values.mean():.2f} ± {error:.2f} ({values.min():.2f}-{values.max():.2f})")
    return eabf0, n_steps


def learned_cv(eabf, n_steps, barrier=ALA_BARRIER, explore=False):
    setup = mk.datasets.alanine_dipeptide_system("vacuum")
    frames = eabf.results.samples.positions.values[::25].astype(np.float32)
    pdb = ROOT / "data" / "alanine_dipeptide" / "ala2.pdb"
    heavy = mda.Universe(str(pdb), frames, format=MemoryReader).select_atoms("not name H*")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ae = mk.AutoencoderCV(heavy, n_cv=1, features="dihedrals", hidden=(16, 16), seed=0).run()
    cv, z = ae.results.model, ae.results.cv.values[:, 0]
    span = z.max() - z.min()
    grid = Grid(z.min() - 0.1 * span, z.max() + 0.1 * span, 100, names=["ae"])
    phi_atoms = np.searchsorted(heavy.indices, PHI)
    rows = [("sampler along the AE CV", "seed", "crossings", "route", "s")]
    for seed in range(3):
        for name in ("eABF", "OPES"):
            start = time.perf_counter()
            common = {"particles": heavy.indices, "integrator": langevin(seed), "sample_frequency": 10, "seed": seed,
                      "store_positions": True}  # fmt: skip
            if name == "eABF":
                run = ExtendedABF(setup.system, setup.positions, cv, grid, kappa=KT / (span / 62) ** 2,
                                  temperature=TEMPERATURE, update_frequency=500, **common)  # fmt: skip
            else:
                run = OPES(setup.system, setup.positions, cv, grid, barrier, TEMPERATURE, pace=250, explore=explore,
                           **common)  # fmt: skip
            try:
                run.run(n_steps)
            except FloatingPointError as err:
                rows.append((name, seed, f"blew up: {err}"[:60], run.route, f"{time.perf_counter() - start:.0f}"))
                continue
            phi = np.degrees(evaluate_cv(phi_cv(phi_atoms, len(heavy)), run.results.samples.positions.values)[:, 0])
            rows.append((name, seed, basin_crossings(phi), run.route, f"{time.perf_counter() - start:.0f}"))
            print(*rows[-1], flush=True)
    print_table(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--part", choices=["toys", "alanine", "learned", "all"], default="all",
                        help="'learned': only the seed-0 φ-eABF run and the learned CV")
    parser.add_argument("--learned-barrier", type=float, default=ALA_BARRIER, help="OPES barrier along the AE CV")
    parser.add_argument("--explore", action="store_true", help="OPES-explore along the AE CV")
    args = parser.parse_args()
    print(f"# bench_opes_accuracy: OpenMM {openmm.__version__}, quick={args.quick}")
    if args.part in ("toys", "all"):
        toys(args.quick)
    if args.part in ("alanine", "all"):
        eabf, n_steps = alanine(args.quick)
        learned_cv(eabf, n_steps, args.learned_barrier, args.explore)
    if args.part == "learned":
        setup = mk.datasets.alanine_dipeptide_system("vacuum")
        n_steps = 25_000 if args.quick else 1_250_000
        eabf = ExtendedABF(setup.system, setup.positions, phi_cv(), Grid(-np.pi, np.pi, 72, periodic=True),
                           kappa=KT / 0.1**2, temperature=TEMPERATURE, integrator=langevin(0), sample_frequency=10,
                           update_frequency=500, seed=0, store_positions=True).run(n_steps)  # fmt: skip
        learned_cv(eabf, n_steps, args.learned_barrier, args.explore)


if __name__ == "__main__":
    main()
