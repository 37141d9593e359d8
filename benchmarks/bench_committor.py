"""Committor learning on the 2-D double well against the exact committor and rate (docs/findings/committor.md).

Runs :class:`mdcvkit.biasing.Committor` on ``DoubleWell2D(barrier=2)`` (8 kT, Brownian dynamics) and
compares with the committor and transition-path-theory rate of the generator on a 201² grid
(tests/committor_cases.py): RMSE of q on the window frames with 0.1 < q_exact < 0.9, the rate from
the reactive flux with its bootstrap interval, a committor test from q ≈ 0.5, and the wall time of
each stage per iteration. Usage: ``python benchmarks/bench_committor.py [--seed 0] [--iterations 6]
[--sampler umbrella|opes] [--samples N]`` (``--samples``: frames per umbrella window, or per OPES iteration).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import mdcvkit as mk
from mdcvkit.biasing import Basin, Committor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from committor_cases import exact_committor  # noqa: E402  (the oracle shared with the tests)

EDGE = 0.8  # nm: A is x1 <= -EDGE, B is x1 >= EDGE


def main(seed, iterations, n_samples, sampler):
    toy = mk.systems.DoubleWell2D(barrier=2.0)
    a, b = Basin(toy.cv("x1"), -5, -EDGE), Basin(toy.cv("x1"), EDGE, 5)
    q_exact, k_exact = exact_committor(toy.potential, toy.bounds, toy.beta, lambda x: x[:, 0] <= -EDGE,
                                       lambda x: x[:, 0] >= EDGE, n=201)
    start = time.perf_counter()
    loop = Committor(toy, state_a=a, state_b=b, starts=[toy.positions, -toy.positions], max_iterations=iterations,
                     sampling={"sampler": sampler, "n_samples": n_samples}, seed=seed).run()
    wall = time.perf_counter() - start
    frames = loop.results.frames
    xy = frames["positions"].values[:, 0, :2] / 10.0
    exact = q_exact(xy)
    middle = (exact > 0.1) & (exact < 0.9)
    rmse = float(np.sqrt(np.mean((frames["q"].values[middle] - exact[middle]) ** 2)))
    rate = loop.rate(n_bootstrap=20, seed=seed)
    test = loop.committor_test(n_configurations=20, n_trajectories=20, seed=seed)
    print(loop.results.iterations.to_dataframe().round(4).to_string())
    print(f"wall time {wall:.0f} s; frames {len(xy)}, {int(middle.sum())} with 0.1 < q_exact < 0.9")
    print(f"RMSE of q against exact (0.1 < q < 0.9): {rmse:.4f}")
    print(f"rate {float(rate.rate):.3e} 1/ps [{float(rate.low):.3e}, {float(rate.high):.3e}], exact {k_exact:.3e}; "
          f"ratio {float(rate.rate) / k_exact:.3f}")
    print(f"committor test from q in [0.45, 0.55]: mean p_B {float(test.p_b.mean()):.3f} "
          f"(std {float(test.p_b.std()):.3f}, {len(test.p_b)} configurations x 20)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--samples", type=int, help="frames per window (umbrella, 100) or iteration (opes, 1000)")
    parser.add_argument("--sampler", choices=("umbrella", "opes"), default="umbrella")
    args = parser.parse_args()
    main(args.seed, args.iterations, args.samples or {"umbrella": 100, "opes": 1000}[args.sampler], args.sampler)
