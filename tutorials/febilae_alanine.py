"""FEBILAE on vacuum alanine dipeptide with an average of autoencoders per iteration (tutorial 05).

The loops of the section "Averaging autoencoders per iteration (`n_models`)" of
``05_iterative_learning.ipynb``, which take 40-47 minutes of one core each and so are not run by the
notebook::

    .venv/bin/python tutorials/febilae_alanine.py --seed 0 --kappa 100   # converged at iteration 3
    .venv/bin/python tutorials/febilae_alanine.py --seed 3 --kappa 40
    .venv/bin/python tutorials/febilae_alanine.py --quick                # a smoke run, about a minute

Inputs: the Kabsch-aligned positions of eight heavy atoms (the acetyl C and O, the alanine's N, CA,
C and O, the N-methyl N and CH3), fitted on those and Cβ; a 24-40-2 ELU encoder per member,
``n_models`` members averaged;
15 ns of eABF per iteration (3.75M steps of 4 fs) on 30 × 30 bins widened by 20 %, a frame every
20 steps; ABF weights, scores under the training weights, ``min_score=0.99`` twice in a row; then a
15 ns eABF production along the final CV. A state file next to ``--out`` lets an interrupted run
resume. Prints the per-iteration table and where the production went.
"""

import argparse
import logging
import time

import numpy as np
import torch

import mdcvkit as mk
from mdcvkit.biasing import IterativeCVLearning
from mdcvkit.features import AlignedPositions, dihedral_angles
from mdcvkit.metrics import unwrap_angles

#: heavy atoms but the acetyl CH3 (the fit: backbone and Cβ), and those of them the encoder reads (no Cβ)
FIT, READ = [1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 1, 2, 3, 5, 6, 7, 8]
#: φ and ψ as quadruplets of the fitted atoms
PHI_PSI = torch.tensor([[0, 2, 3, 5], [2, 3, 5, 7]])


def phi_psi(positions):
    """(φ, ψ) in degrees of the fitted atoms' positions (n_frames, 9, 3) in Å, cut at φ = 120°, ψ = -120°."""
    angles = dihedral_angles(torch.as_tensor(positions, dtype=torch.float64), PHI_PSI).numpy()
    return unwrap_angles(np.degrees(angles), (-240, -120))


def make_loop(seed=0, kappa=100.0, n_models=4, max_iterations=3, steps=3_750_000, quick=False, state_file=None):
    """The loop of this script (``benchmarks/bench_iterative.py`` times its stages); ``quick``: small networks."""
    hidden, epochs = ((8,), {"max_epochs": 5, "patience": 5}) if quick else ((40,), {"max_epochs": 100, "patience": 10})
    setup = mk.datasets.alanine_dipeptide_system("vacuum")  # started in C7eq
    heavy = mk.datasets.alanine_dipeptide("vacuum").select_atoms("not name H*")
    featurizer = AlignedPositions(heavy.positions[FIT], names=[heavy.names[k] for k in FIT], atoms=READ)
    return IterativeCVLearning(
        setup.system, featurizer, particles=heavy.indices[FIT], positions=setup.positions,
        temperature=setup.temperature, integrator=setup.integrator(),
        estimator={"n_cv": 2, "hidden": hidden, "activation": "elu", **epochs}, n_models=n_models,
        sampling={"steps": steps, "sample_frequency": 20, "n_bins": 30, "grid_margin": 0.2, "kappa": kappa,
                  "full_samples": 20, "weights": "abf", "production_steps": steps},
        convergence={"min_score": 0.99, "patience": 2, "max_iterations": max_iterations},
        reference=phi_psi, seed=seed, state_file=state_file,
    )  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kappa", type=float, default=100.0, help="eABF coupling, kJ/mol per CV spread² (100)")
    parser.add_argument("--n-models", type=int, default=4, help="autoencoders averaged per iteration (4)")
    parser.add_argument("--max-iterations", type=int, default=3)
    parser.add_argument("--out", default="febilae_alanine", help="prefix of the state file (febilae_alanine)")
    parser.add_argument("--quick", action="store_true", help="20 ps per run and small networks: a smoke run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    loop = make_loop(args.seed, args.kappa, args.n_models, args.max_iterations, 5_000 if args.quick else 3_750_000,
                     args.quick, f"{args.out}_s{args.seed}_k{args.kappa:g}_n{args.n_models}.state")  # fmt: skip
    begin = time.perf_counter()
    loop.run()
    it = loop.results.iterations
    print(f"\n{(time.perf_counter() - begin) / 60:.1f} min; converged: {loop.results.converged}")
    print("iteration  regscore  kNN regscore  score vs (φ, ψ)  ESS (frames)")
    for i in it.iteration.values:
        row = it.sel(iteration=i)
        print(f"{i:9d}  {float(row.regscore):8.4f}  {float(row.knn_regscore):12.4f}  "
              f"{float(row.reference_score):15.4f}  {float(row.ess):12.0f}")  # fmt: skip
    production = loop.results.production
    phi = unwrap_angles(phi_psi(production.samples.positions.values)[:, 0], -180)
    weights = np.exp(loop.results.production_log_weights)
    c7ax = (phi > 0) & (phi < 120)
    crossings = mk.datasets.basin_crossings(phi)
    print(f"production: {c7ax.mean():.1%} of {len(phi)} frames in C7ax (0° < φ < 120°), {crossings} crossings "
          f"C7eq <-> C7ax, C7ax {weights[c7ax].sum() / weights.sum():.1%} of the weight")  # fmt: skip


if __name__ == "__main__":
    main()
