"""Wall time of one FEBILAE iteration on vacuum alanine dipeptide, split by stage.

Run from the repository root::

    .venv/bin/python benchmarks/bench_iterative.py            # about four minutes on two busy cores
    .venv/bin/python benchmarks/bench_iterative.py --quick    # a smoke run

What it times: ``mk.biasing.IterativeCVLearning`` with the settings of the alanine-dipeptide
section of ``tutorials/05_iterative_learning.ipynb`` (vacuum, AMBER99SB-ILDN, no cutoff,
HBond constraints, hydrogen mass 4 amu, LangevinMiddle 300 K 1/ps 4 fs, Reference platform;
the 21 body-frame coordinates of the heavy atoms (frame: N, CA, C of the alanine,
``make_featurizer("frame", ...)``, compiled into OpenMM) or, with ``--features aligned``, their 30
Kabsch-aligned coordinates (through the Python force); a 21-40-2-40-21 (30-40-2-40-30) tanh
autoencoder; 2-D eABF on a 15 x 15
grid widened by half its span on each side, κ = 40 kJ/mol per (CV spread)², full ABF force
after 20 samples; ``--steps`` steps per iteration, a frame every ``--sample-frequency`` steps;
100 epochs at most, patience 10; a 10-sample bootstrap
threshold). Iteration 0 (unbiased sampling and the first training) is run and timed for
reference; then one biased iteration is taken apart into the stages ``run()`` chains:

* eABF set-up: the extended System and the OpenMM Context with the CV force (compiled into a
  CustomCVForce expression for body-frame coordinates), an eABF run of 0 steps and one force
  evaluation;
* eABF sampling: the eABF run of ``--steps`` steps along the previous CV (the same run
  again, minus the set-up), CZAR's final estimate included;
* featurisation: the features of the stored frames (the training computes them again, through
  ``AutoencoderCV`` on an in-memory Universe of the frames);
* weights: ``eabf_log_weights`` (the loop's default ABF estimate and histogram of the sampled CV) and the ESS;
* training: a fresh ``AutoencoderCV`` on the weighted frames (``--n-models``: that many, averaged);
* bootstrap threshold: ``n_bootstrap`` autoencoders on 10 % of the frames and their regscores;
* kNN regscores of the same bootstrap CVs, what ``criterion="knn"`` scores them with instead;
* bookkeeping: regscore and kNN regscore against the previous CV, the score against (φ, ψ), the
  reweighted PMF and the next grid.

Then the per-step cost of the routes a learned CV can take into OpenMM, on the same system:
the unbiased step, the compiled expression route (body-frame coordinates as above, and the 25
distances between heavy atoms three or more bonds apart) and the Python route (Kabsch-aligned
heavy-atom coordinates, 30-40-2, PythonForce evaluating the torch module each step), each as a
harmonic bias on a freshly initialised CV; and the body-frame and Python routes again with four times
the hidden units, the size of the average ``n_models=4`` trains.

Timings depend on the machine and its load; compare stages from the same run.
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

from _common import print_table  # noqa: E402

import mdcvkit as mk  # noqa: E402
from mdcvkit.analysis import CollectiveVariable  # noqa: E402
from mdcvkit.biasing import IterativeCVLearning, add_cv_bias  # noqa: E402
from mdcvkit.biasing._febilae import cv_values, histogram_pmf  # noqa: E402
from mdcvkit.biasing.reweight import eabf_log_weights, effective_sample_size  # noqa: E402
from mdcvkit.features import AlignedPositions, PairwiseDistances, make_featurizer  # noqa: E402
from mdcvkit.metrics import knn_regscore, regscore, regscore_threshold, unwrap_angles  # noqa: E402
from mdcvkit.models import AutoEncoder  # noqa: E402


def vacuum_alanine():
    """System, C7eq start (Å), heavy atoms (AtomGroup), their distance pairs, (φ, ψ) reference."""
    setup = mk.datasets.alanine_dipeptide_system("vacuum")  # as make_data.py, first frame of the vacuum run
    group = mk.datasets.alanine_dipeptide("vacuum").select_atoms("not name H*")
    pairs = mk.features.separated_pairs(group, min_bonds=3)
    backbone = make_featurizer("dihedrals", group)

    def phi_psi(positions):  # degrees, cut where alanine dipeptide never goes at 300 K
        angles = mk.features.dihedral_angles(torch.as_tensor(positions, dtype=torch.float64), backbone.quadruplets)
        return unwrap_angles(np.degrees(angles.numpy()), (-240, -120))

    return setup.system, setup.positions * 10, group, pairs, phi_psi


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    out = function(*args, **kwargs)
    return out, time.perf_counter() - start


def per_step(system, start_nm, n_steps, cv=None, particles=None, route=None):
    """Seconds per step of a LangevinMiddle run, unbiased or with a harmonic bias on ``cv``."""
    system = openmm.XmlSerializer.clone(system)
    if cv is not None:
        add_cv_bias(system, cv, "50*(cv0^2+cv1^2)", start_nm, particles=particles, route=route)
    integrator = mk.datasets.alanine_dipeptide_system("vacuum").integrator()
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(start_nm)
    context.setVelocitiesToTemperature(300, 1)
    context.getIntegrator().step(20)
    _, seconds = timed(context.getIntegrator().step, n_steps)
    return seconds / n_steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250_000, help="steps per iteration (default 250,000: 1 ns)")
    parser.add_argument("--sample-frequency", type=int, default=10, help="steps between frames (default 10)")
    parser.add_argument("--route-steps", type=int, default=3000, help="steps per route timing (default 3000)")
    parser.add_argument("--features", choices=("frame", "aligned"), default="frame",
                        help="inputs of the autoencoder (default frame, as tutorial 05)")
    parser.add_argument("--n-models", type=int, default=1,
                        help="autoencoders averaged per training (IterativeCVLearning n_models, default 1)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    steps, route_steps = (5000, 300) if args.quick else (args.steps, args.route_steps)
    hidden, epochs = ((8,), 10) if args.quick else ((40,), 100)
    torch.set_num_threads(1)
    system, start, group, pairs, phi_psi = vacuum_alanine()
    heavy, featurizer = group.indices.tolist(), make_featurizer(args.features, group)
    frames = make_featurizer("frame", group)
    loop = IterativeCVLearning(system, featurizer, particles=heavy, positions=start / 10, temperature=300,
                               integrator=openmm.LangevinMiddleIntegrator(300, 1, 0.004),
                               estimator={"n_cv": 2, "hidden": hidden, "activation": "tanh", "max_epochs": epochs,
                                          "patience": 10},
                               sampling={"steps": steps, "sample_frequency": args.sample_frequency, "n_bins": 15,
                                         "grid_margin": 0.5, "kappa": 40.0, "full_samples": 20},
                               reference=phi_psi, n_models=args.n_models)  # fmt: skip
    print(f"# bench_iterative: OpenMM {openmm.__version__}, torch {torch.__version__}, "
          f"{platform.node()} {platform.processor() or ''}, {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    kind = {"aligned": "Kabsch-aligned", "frame": "body-frame"}[args.features]
    print(f"# vacuum alanine dipeptide, {featurizer.n_features} {kind} coordinates, {featurizer.n_features}-"
          f"{'-'.join(map(str, hidden))}-2 encoder, {steps:,} steps ({steps * 0.004:g} ps) per iteration, "
          f"a frame every {args.sample_frequency} steps, n_models={args.n_models}")  # fmt: skip

    # iteration 0, for reference
    (positions0, last0), t_unbiased = timed(loop._sample_unbiased, 0)
    cv0, t_train0 = timed(loop._train, positions0, None, 0)

    # iteration 1, stage by stage, as IterativeCVLearning._iteration chains them
    grid = loop._grid(cv0, positions0)

    def set_up():  # OpenMM builds (and compiles) the CV force at the first force evaluation
        loop._eabf(cv0, grid, 0, 1, last0)[0].context.getState(getForces=True)

    _, t_setup = timed(set_up)
    (eabf, _), t_eabf = timed(loop._eabf, cv0, grid, steps, 1, last0)
    positions = eabf.results.samples.positions.values
    with torch.no_grad():
        _, t_features = timed(loop.featurizer, torch.as_tensor(positions, dtype=torch.float32))
    start_weights = time.perf_counter()
    log_w = eabf_log_weights(eabf, loop.sampling.weights)
    ess = effective_sample_size(log_w)
    t_weights = time.perf_counter() - start_weights
    cv1, t_train = timed(loop._train, positions, log_w, 1)

    fitted = []

    def fit_cv(indices):
        model = cv1 if indices is None else loop._train(positions, log_w, 1, indices)
        with torch.no_grad():
            fitted.append(model(torch.as_tensor(positions, dtype=torch.float32)).numpy())
        return fitted[-1]

    (threshold, _), t_bootstrap = timed(regscore_threshold, fit_cv, len(positions), n_bootstrap=10, seed=1)
    start_knn = time.perf_counter()
    knn_threshold = np.percentile([knn_regscore(fitted[0], sub) for sub in fitted[1:]], 5)
    t_knn = time.perf_counter() - start_knn
    start_rest = time.perf_counter()
    with torch.no_grad():
        x = torch.as_tensor(positions, dtype=torch.float32)
        score = regscore(cv0(x).numpy(), cv1(x).numpy())
        knn = knn_regscore(cv0(x).numpy(), cv1(x).numpy())
        reference = regscore(cv1(x).numpy(), phi_psi(positions))
    next_grid = loop._grid(cv1, positions)
    histogram_pmf(cv_values(cv1, positions), log_w, next_grid, loop.kT)
    t_rest = time.perf_counter() - start_rest

    stages = [("eABF set-up (Context, CV force)", t_setup), ("eABF sampling", t_eabf - t_setup),
              ("featurisation", t_features), ("weights (CZAR free energy, histogram, ESS)", t_weights),
              ("training", t_train), ("bootstrap threshold (10 fits on 10 %)", t_bootstrap),
              ("kNN regscores of the bootstrap fits (criterion='knn')", t_knn),
              ("bookkeeping (regscores, PMF, grid)", t_rest)]  # fmt: skip
    total = sum(t for _, t in stages)
    table = [("stage of iteration 1", "seconds", "share")]
    table += [(name, f"{t:.2f}", f"{t / total:.0%}") for name, t in stages]
    table.append(("one biased iteration", f"{total:.2f}", "100%"))
    table.append(("(iteration 0: unbiased sampling + training)", f"{t_unbiased + t_train0:.2f}", ""))
    print()
    print_table(table)
    print(f"\n{len(positions)} frames, ESS {ess:.0f}, regscore(ξ0, ξ1) {score:.4f}, threshold {threshold:.4f}, "
          f"kNN regscore {knn:.4f}, threshold {knn_threshold:.4f}, "
          f"score of ξ1 against (φ, ψ) {reference:.4f}")  # fmt: skip

    # per-step cost of the routes a learned CV can take
    torch.manual_seed(0)
    wide = [h * 4 for h in hidden]  # an average of four autoencoders (n_models=4) is one encoder this wide

    def fresh(featurizer, sizes):
        return CollectiveVariable(featurizer, AutoEncoder(featurizer.n_features, 2, hidden=sizes)).eval()

    distances, aligned = PairwiseDistances(len(heavy), pairs), AlignedPositions(start[heavy])
    base = per_step(system, start / 10, route_steps * 10)
    frame = per_step(system, start / 10, route_steps * 10, fresh(frames, hidden), heavy, "expression")
    expression = per_step(system, start / 10, route_steps * 10, fresh(distances, hidden), heavy, "expression")
    python = per_step(system, start / 10, route_steps, fresh(aligned, hidden), heavy, "python")
    frame4 = per_step(system, start / 10, route_steps * 10, fresh(frames, wide), heavy, "expression")
    python4 = per_step(system, start / 10, route_steps, fresh(aligned, wide), heavy, "python")
    table = [("run (Reference platform, 4 fs)", "ms/step", "ratio to unbiased")]
    for name, t in (("unbiased", base), ("expression route: body-frame coordinates -> MLP", frame),
                    ("expression route: distances -> MLP", expression),
                    ("python route: aligned coordinates -> MLP", python),
                    ("expression route: body-frame coordinates -> 4x wider MLP (n_models=4)", frame4),
                    ("python route: aligned coordinates -> 4x wider MLP (n_models=4)", python4)):  # fmt: skip
        table.append((name, f"{t * 1e3:.4f}", f"{t / base:.1f}"))
    print()
    print_table(table)


if __name__ == "__main__":
    main()
