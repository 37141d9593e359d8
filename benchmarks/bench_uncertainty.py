"""Bayesian uncertainty of the generative model's predictions: the numbers of docs/findings/uncertainty.md.

Run from the repository root::

    .venv/bin/python benchmarks/bench_uncertainty.py                 # every part, ~25 min on two busy cores
    .venv/bin/python benchmarks/bench_uncertainty.py --part toy      # toy, hessian, ala2, ard

Parts:

(toy) Linear-Gaussian data x = W z + b + σ ε (D = 3, dim z = 1, W = (2, 1, −1), b = (1, −2, 0.5),
σ = 0.5, N = 200), a linear VAE (``hidden=()``, ``activation=None``) with a Gaussian decoder prior
(precision 1), trained by ``Trainer`` (full batch, lr 0.02); toy and oracle from
tests/linear_gaussian_cases.py, shared with the tests. Exactness: the Laplace precision against
the analytic one of Bayesian linear regression given the encoder means (``latents="fixed"``) and
against N (WWᵀ + σ²)⁻¹ for the bias block (``latents="integrated"``). Coverage: 50 repetitions on
fresh data; how often the 90 % interval of the predicted mean of x₀ (``predict``, 200 draws × 2000
structures) holds the truth b₀ = 1, with latents integrated and fixed.

(hessian) A small VAE (30-8-2-8-30, tanh) on 200 alanine-dipeptide frames with an ARD prior: the exact
Hessian of the negative log posterior (latents fixed, likelihood Hessian by autograd + the E-step
precision) against the generalised Gauss–Newton forms full, diag and last_layer: predictive standard
deviation of the decoded features (linearised, 500 prior samples of z) and width of the 90 % interval
of the predicted mean Rg.

(ala2) N = 50, 200, 500 frames evenly spaced over the 100 ns of ``alanine_dipeptide()``, heavy atoms,
aligned, dim z = 2, ``model="vae"``, ``decoder_prior="ard"``; Laplace (last_layer, latents
integrated) and a deep ensemble of 5; mean Rg with its 90 % interval against the Rg of all 100 000
frames. Times of training, the Laplace step and ``predict``. The figure goes to
docs/_static/uncertainty_rg.png.

(ard) N = 50, 5 seeds, with and without ARD: kNN R² of the CV to (sin, cos)(φ, ψ) on every 10th frame
(``mk.metrics.knn_score``), and the fraction of decoder parameters ARD switches off.
"""

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from linear_gaussian_cases import (  # noqa: E402  (the toy and its oracle, shared with the tests)
    B_TRUE,
    analytic_precision,
    linear_gaussian,
    marginal_bias_precision,
    train_linear,
)

import mdcvkit as mk  # noqa: E402
from mdcvkit.features import FeatureCollector, make_featurizer  # noqa: E402
from mdcvkit.models import VariationalAutoEncoder, fit_laplace  # noqa: E402
from mdcvkit.models.laplace import LaplaceApproximation  # noqa: E402
from mdcvkit.training import Trainer  # noqa: E402
from mdcvkit.uncertainty import LaplacePosterior  # noqa: E402

matplotlib.use("Agg")
warnings.filterwarnings("ignore")
torch.set_num_threads(1)

VAE_SETTINGS = dict(max_epochs=2000, batch_size=64, learning_rate=3e-3, patience=100)


def part_toy(repetitions):
    x = linear_gaussian(200, 0)
    model = train_linear(x, 0, max_epochs=1000, patience=50)
    exact = analytic_precision(model, x)
    fixed = fit_laplace(model, x, structure="full", latents="fixed").precision.numpy()
    bias_exact = marginal_bias_precision(model, len(x))
    integrated = fit_laplace(model, x, structure="full", latents="integrated").precision.numpy()[3:, 3:]
    print(f"toy exactness: latents fixed, max relative error of the covariance "
          f"{np.abs(np.linalg.inv(fixed) - np.linalg.inv(exact)).max() / np.abs(np.linalg.inv(exact)).max():.2e}; "
          f"latents integrated, bias block {np.abs(integrated - bias_exact).max() / np.abs(bias_exact).max():.2e}")
    hits = {"integrated": [], "fixed": []}
    start = time.perf_counter()
    for rep in range(repetitions):
        x = linear_gaussian(200, 100 + rep)
        model = train_linear(x, rep, max_epochs=1000, patience=50)
        for latents in hits:
            posterior = LaplacePosterior(None, None, fit_laplace(model, x, structure="full", latents=latents))
            ds = posterior.predict(lambda f: f[:, 0], n_samples=200, n_structures=2000, seed=rep)
            lower, upper = ds.mean_interval.values
            hits[latents].append(lower <= B_TRUE[0] <= upper)
    for latents, hit in hits.items():
        print(f"toy coverage, latents {latents}: {np.mean(hit):.2f} of {repetitions} repetitions")
    print(f"toy coverage: {time.perf_counter() - start:.0f} s")


def _linearised_std(model, laplace, covariance, z):
    """Predictive std of the decoded (normalised) features, linearised around θ_MAP, for each z."""
    decoder = copy.deepcopy(model.decoder).double()
    params = {name: p.detach() for name, p in decoder.named_parameters()}
    covered = {name: params[name] for name in laplace.names}

    def mean(theta):
        return torch.func.functional_call(decoder, {**params, **theta}, (z,))

    jac = torch.func.jacrev(mean)(covered)
    j = torch.cat([jac[name].reshape(len(z), model.n_features, -1) for name in laplace.names], dim=-1)
    return torch.einsum("nkp,pq,nkq->nk", j, covariance, j).sqrt()


def part_hessian(features, atoms, featurizer):
    rng = np.random.default_rng(0)
    x = features[np.sort(rng.choice(len(features), 200, replace=False))]
    torch.manual_seed(0)
    model = VariationalAutoEncoder(30, 2, hidden=(8,), decoder_prior="ard", scale_groups=featurizer.scale_groups)
    model = Trainer(**VAE_SETTINGS, seed=0).fit(model, x).model
    double = copy.deepcopy(model).double()
    xt = torch.as_tensor(x, dtype=torch.float64)
    with torch.no_grad():
        z = double.encode(xt)
        target = double.normalization(xt)
    names = [name for name, _ in double.decoder.named_parameters()]
    params = {name: p.detach() for name, p in double.decoder.named_parameters()}
    shapes = [params[n].shape for n in names]
    theta0 = torch.cat([params[n].reshape(-1) for n in names])
    variance = torch.exp(double.decoder_log_var.detach())

    def negative_log_likelihood(theta):
        split = dict(zip(names, [t.reshape(s) for t, s in zip(theta.split([s.numel() for s in shapes]), shapes,
                                                                  strict=True)], strict=True))
        out = torch.func.functional_call(double.decoder, split, (z,))
        return 0.5 * (((target - out) ** 2) / variance).sum()

    hessian = torch.autograd.functional.hessian(negative_log_likelihood, theta0)
    exact_precision = hessian + torch.diag(model._decoder_prior.prior_precision(theta0))
    eigenvalues, vectors = torch.linalg.eigh(exact_precision)
    floor = float(model._decoder_prior.prior_precision(theta0).min())
    print(f"hessian: {len(theta0)} decoder parameters; exact precision eigenvalues {eigenvalues.min():.3g} .. "
          f"{eigenvalues.max():.3g}, {int((eigenvalues < 0).sum())} negative (floored at the smallest prior "
          f"precision, {floor:.3g}, for the comparison)")
    exact_precision = (vectors * eigenvalues.clamp(min=floor)) @ vectors.T
    full_exact = LaplaceApproximation(model, names, theta0, exact_precision, "full", "fixed", len(x))
    z_test = torch.randn(500, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = _linearised_std(model, full_exact, full_exact.covariance(), z_test)
    rows = []
    for structure, latents, approx in [("exact Hessian", "fixed", full_exact),
                                       *[(s, lat, fit_laplace(model, x, structure=s, latents=lat))
                                         for lat in ("fixed", "integrated") for s in ("full", "diag", "last_layer")]]:
        cov = approx.covariance()
        std = _linearised_std(model, approx, cov, z_test)
        std_ratio = (std / reference).median()  # last_layer: the other layers have no variance
        ds = LaplacePosterior(featurizer, atoms, approx).predict("rg", n_samples=200, n_structures=500)
        width = float(np.diff(ds.mean_interval.values)[0])
        rows.append((structure, latents, f"{float(std_ratio):.2f}", f"{width:.4f}"))
    print("hessian: structure | latents | median predictive std / exact | 90 % width of mean Rg (Å)")
    for row in rows:
        print("  " + " | ".join(row))


def evenly(n_total, n):
    return np.linspace(0, n_total - 1, n).astype(int)


def part_ala2(heavy, rg_reference):
    import matplotlib.pyplot as plt

    datasets = {}
    print(f"ala2: reference mean Rg over {len(rg_reference)} frames {rg_reference.mean():.4f} Å")
    for n in (50, 200, 500):
        start = time.perf_counter()
        cv = mk.AutoencoderCV(heavy, n_cv=2, model="vae", decoder_prior="ard", seed=0, **VAE_SETTINGS).run(
            frames=evenly(heavy.universe.trajectory.n_frames, n))
        t_train = time.perf_counter() - start
        start = time.perf_counter()
        posterior = mk.uncertainty.laplace_posterior(cv)
        t_laplace = time.perf_counter() - start
        start = time.perf_counter()
        ds = posterior.predict("rg", n_samples=200, n_structures=1000, bins=np.linspace(2.0, 2.8, 41))
        t_predict = time.perf_counter() - start
        start = time.perf_counter()
        ensemble = mk.uncertainty.deep_ensemble(cv, n_models=5)
        t_ensemble = time.perf_counter() - start
        ds_ens = ensemble.predict("rg", n_structures=1000, bins=np.linspace(2.0, 2.8, 41))
        datasets[f"N = {n}"] = ds
        model = cv.results.model.model
        off = float(model._decoder_prior.switched_off(model.decoder_parameters()).float().mean())
        for name, d in (("laplace", ds), ("ensemble", ds_ens)):
            lower, upper = d.mean_interval.values
            print(f"ala2 N={n} {name}: mean Rg {float(d['mean']):.4f} [{lower:.4f}, {upper:.4f}] width "
                  f"{upper - lower:.4f}; reference inside: {lower <= rg_reference.mean() <= upper}")
        print(f"ala2 N={n}: train {t_train:.1f} s, laplace {t_laplace:.1f} s, predict (200 x 1000) {t_predict:.1f} s, "
              f"4 more ensemble members {t_ensemble:.1f} s; ARD switched off {off:.2f} of the decoder parameters")
    axes = mk.plot.predicted_distribution(datasets, reference=rg_reference)
    axes[0].figure.savefig("docs/_static/uncertainty_rg.png", dpi=110)
    plt.close(axes[0].figure)


def part_ard(heavy, u):
    step = 10
    dihedrals = FeatureCollector(u.atoms, make_featurizer("dihedrals", u.atoms)).run(step=step).results.features
    frames = evenly(u.trajectory.n_frames, 50)
    scores = {"none": [], "ard": []}
    off = []
    for seed in range(5):
        for prior in scores:
            kwargs = {} if prior == "none" else {"decoder_prior": "ard"}
            cv = mk.AutoencoderCV(heavy, n_cv=2, model="vae", seed=seed, **VAE_SETTINGS, **kwargs).run(frames=frames)
            values = cv.transform(heavy, step=step)
            scores[prior].append(mk.metrics.knn_score(values, dihedrals))
            if prior == "ard":
                model = cv.results.model.model
                off.append(float(model._decoder_prior.switched_off(model.decoder_parameters()).float().mean()))
    for prior, values in scores.items():
        print(f"ard N=50 prior {prior}: kNN R² to (sin, cos)(φ, ψ) {np.round(values, 3).tolist()} mean "
              f"{np.mean(values):.3f}")
    print(f"ard N=50: fraction of decoder parameters switched off {np.round(off, 3).tolist()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["toy", "hessian", "ala2", "ard"], action="append")
    parser.add_argument("--repetitions", type=int, default=50)
    args = parser.parse_args()
    parts = args.part or ["toy", "hessian", "ala2", "ard"]
    if "toy" in parts:
        part_toy(args.repetitions)
    if not set(parts) - {"toy"}:
        return
    u = mk.datasets.alanine_dipeptide()
    heavy = u.select_atoms("not name H*")
    if "hessian" in parts:
        featurizer = make_featurizer("aligned", heavy)
        features = FeatureCollector(heavy, featurizer).run(step=50).results.features
        from mdcvkit.analysis import _atom_table

        part_hessian(np.asarray(features, dtype=np.float32), _atom_table(heavy), featurizer)
    if "ala2" in parts:
        start = time.perf_counter()
        rg = np.array([heavy.radius_of_gyration() for _ in u.trajectory])
        print(f"ala2: reference Rg of {len(rg)} frames in {time.perf_counter() - start:.0f} s")
        part_ala2(heavy, rg)
    if "ard" in parts:
        part_ard(heavy, u)


if __name__ == "__main__":
    main()
