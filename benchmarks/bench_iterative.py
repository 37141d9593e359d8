"""Wall time of one FEBILAE iteration on vacuum alanine dipeptide, split by stage.

Run from the repository root::

    .venv/bin/python benchmarks/bench_iterative.py                 # 3 ns per iteration, ~10 min on two cores
    .venv/bin/python benchmarks/bench_iterative.py --steps 3750000 # the 15 ns iterations of the script
    .venv/bin/python benchmarks/bench_iterative.py --quick         # a smoke run

What it times: ``mk.biasing.IterativeCVLearning`` as ``tutorials/febilae_alanine.py`` builds it
(vacuum, AMBER99SB-ILDN, HBond constraints, hydrogen mass 4 amu, LangevinMiddle 300 K 1/ps 4 fs,
Reference platform; the Kabsch-aligned backbone fitted with Cβ, 24-40-2 ELU encoders,
``--n-models`` of them averaged per iteration; eABF with κ 100 on 30 × 30 bins, a frame every 20
steps, ABF weights), with ``--steps`` steps per iteration. Iteration 0 (unbiased sampling and the
first training) is run and timed; then one biased iteration is taken apart into the stages
``run()`` chains: eABF along the CV of iteration 0 (set-up, CZAR's estimate and the stored frames
included), the weights and their ESS, the training, the scores (regscore and kNN regscore against
the previous CV, score against (φ, ψ)) and the bookkeeping (the reweighted PMF and the next grid).

The eABF stage is timed twice, in one run: with the "python" route's evaluator as it is now (the
CV's NumPy form, :mod:`mdcvkit.export.numpy`) and with the torch evaluator it used before (torch
forward and autograd per step, :class:`mdcvkit.export.TorchCVEvaluator`); the latter on a fifth of
the steps and scaled, as it is five times slower. Timings depend on the machine and its load;
compare stages from the same run. Times are the CPU time of the (single-threaded) process, which
contention from other processes on the machine does not inflate much, unlike wall time.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tutorials"))

from _common import print_table  # noqa: E402
from febilae_alanine import make_loop  # noqa: E402

import mdcvkit.export.openmm as export_openmm  # noqa: E402
from mdcvkit.biasing._febilae import cv_values  # noqa: E402
from mdcvkit.biasing.reweight import effective_sample_size, histogram_pmf  # noqa: E402
from mdcvkit.metrics import knn_regscore, regscore  # noqa: E402


def timed(function, *args, **kwargs):
    """``function(*args, **kwargs)`` and the CPU seconds of this process it took (one thread: the cost on an
    idle core, whatever else the machine runs)."""
    start = time.process_time()
    out = function(*args, **kwargs)
    return out, time.process_time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=750_000, help="steps per iteration (default 750,000: 3 ns)")
    parser.add_argument("--n-models", type=int, default=4, help="autoencoders averaged per iteration (default 4)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    steps = 5000 if args.quick else args.steps
    torch.set_num_threads(1)
    loop = make_loop(n_models=args.n_models, steps=steps, quick=args.quick)
    print(f"# bench_iterative: OpenMM {openmm.__version__}, torch {torch.__version__}, "
          f"{platform.node()} {platform.processor() or ''}, {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    print(f"# vacuum alanine dipeptide, tutorials/febilae_alanine.py settings, {steps:,} steps ({steps * 0.004:g} ps) "
          f"per iteration, n_models={args.n_models}")  # fmt: skip

    (positions0, last0), t_unbiased = timed(loop._sample_unbiased, 0)
    cv0, t_train0 = timed(loop._train, positions0, None, 0)
    grid = loop._grid(cv0, positions0)
    (run, _), t_eabf = timed(loop._biased, cv0, grid, steps, 1, last0)
    numpy_evaluator = export_openmm.cv_evaluator
    export_openmm.cv_evaluator = export_openmm.TorchCVEvaluator  # the python route before the NumPy form
    try:
        short = max(loop.sampling.sample_frequency * 10, steps // 5 // 20 * 20)
        _, t_torch = timed(loop._biased, cv0, grid, short, 1, last0)
    finally:
        export_openmm.cv_evaluator = numpy_evaluator
    positions = run.results.samples.positions.values
    log_w, t_weights = timed(loop._log_weights, run)
    ess = effective_sample_size(log_w)
    cv1, t_train = timed(loop._train, positions, log_w, 1)
    start = time.process_time()
    weights = np.exp(log_w)
    before, after = cv_values(cv0, positions), cv_values(cv1, positions)
    score, knn = regscore(before, after, weights=weights), knn_regscore(before, after, weights=weights)
    reference = loop._reference_score(cv1, positions, weights)
    t_scores = time.process_time() - start
    start = time.process_time()
    next_grid = loop._grid(cv1, positions)
    histogram_pmf(cv_values(cv1, positions), log_w, next_grid, loop.kT)
    t_rest = time.process_time() - start

    stages = [("eABF (set-up, sampling, CZAR)", t_eabf), ("weights and ESS", t_weights),
              (f"training ({args.n_models} autoencoders)", t_train), ("scores (regscore, kNN, vs (φ, ψ))", t_scores),
              ("bookkeeping (PMF, next grid)", t_rest)]  # fmt: skip
    total = sum(t for _, t in stages)
    table = [("stage of iteration 1", "CPU seconds", "share")]
    table += [(name, f"{t:.1f}", f"{t / total:.0%}") for name, t in stages]
    table.append(("one biased iteration", f"{total:.1f}", "100%"))
    torch_eabf = t_torch * steps / short
    table.append((f"  with the torch evaluator (eABF scaled from {short:,} steps)",
                  f"{total - t_eabf + torch_eabf:.1f}", f"eABF {torch_eabf:.1f} s"))  # fmt: skip
    table.append(("iteration 0 (unbiased sampling + training)", f"{t_unbiased + t_train0:.1f}", ""))
    print()
    print_table(table)
    print(f"\neABF µs/step: NumPy evaluator {t_eabf / steps * 1e6:.0f}, torch evaluator {t_torch / short * 1e6:.0f}; "
          f"{len(positions)} frames, ESS {ess:.0f}, regscore(ξ0, ξ1) {score:.4f}, kNN regscore {knn:.4f}, "
          f"score of ξ1 against (φ, ψ) {reference:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
