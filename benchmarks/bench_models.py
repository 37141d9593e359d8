"""Training time per epoch of the autoencoder family, and mdcvkit's ``"tae"`` against deeptime's ``TAE``.

Run from the repository root::

    .venv/bin/python benchmarks/bench_models.py            # about a minute on two busy cores
    .venv/bin/python benchmarks/bench_models.py --quick    # a smoke run

Data, for every part: the shipped implicit-solvent alanine dipeptide, heavy atoms (10), aligned
Cartesian features (``make_featurizer("aligned", heavy)`` + ``FeatureCollector``), every
``--step``-th frame (default 5: 20 000 frames, four trajectories of 5 000), computed once before
any timing; time-lagged pairs never cross the four trajectories. Network 30-40-2-40-30, tanh on
the hidden layer, linear bottleneck and output; Adam, lr 1e-3; batch 256; one torch thread.
Lag of the time-lagged models: 1 analysed frame (5 ps at step 5). The heavy-atom positions lose
their memory fast: predicting x(t + lag) by the mean of the training frames scores 0.141 Å², and
a TAE reaches about 0.08 Å² at lag 1, 0.10 at lag 2 but 0.140 at lag 10 (50 ps), where the
validation loss could no longer tell a trained network from a constant.
Held out: mdcvkit's contiguous validation blocks (``validation_mask``, 20 %); a pair is held out
when both of its frames are, and pairs that straddle the split are dropped (as ``Trainer`` does).

(a) **The family**: each model of ``mdcvkit.models.MODELS`` with its defaults and the
normalisation ``mk.AutoencoderCV`` uses (the featurizer's scale groups), trained by
``Trainer(...).fit`` (``lag`` for ``"tae"``, 0 for the others) with ``patience=epochs`` so that
every epoch runs. s/epoch = wall time of the whole ``fit`` / epochs.

(b) **"tae" against deeptime** (``deeptime.decomposition.deep.TAE``, Wehmeyer & Noé's
time-lagged autoencoder), fed the way deeptime's examples feed its deep estimators:
``TimeLaggedDataset`` of the training pairs, ``DataLoader(batch_size, shuffle=True)``,
``tae.fit(loader, n_epochs, validation_loader=...)`` with the validation pairs in one batch
(mdcvkit also evaluates them once per epoch). deeptime has no input normalisation, so it is
given the features standardised with the per-feature mean and standard deviation of the training
inputs, and mdcvkit's model runs with per-feature standardisation (``scale_groups=None``) fitted
on the same frames: both minimise the same squared error of standardised x(t + lag) (deeptime
sums it, mdcvkit averages; Adam does not care). deeptime's encoder and decoder are its own
``MLP`` (30-40-2, 2-40-30, tanh) loaded with the initial weights of mdcvkit's model, so both
start from the same network. A third row, ``deeptime, batched loader``, feeds the same
``TAE.fit`` whole minibatches (a ``BatchSampler`` over the dataset, and the validation pairs as
one slice: no per-frame collation): how much of the gap is deeptime's data loading. The
standardisation and loader set-up count in deeptime's time, as the split and normalisation count
in mdcvkit's ``fit``. The contenders are timed alternately, ``--repeats`` times; medians.

Validation loss: one function, :func:`held_out_mse`, scores every fitted model: the MSE, in Å²
(mean over held-out pairs and the 30 coordinates), of the reconstruction of x(t + lag) from x(t)
(lag 0 for the family's non-lagged models). mdcvkit's ``Trainer`` restores the weights of its best
validation epoch; deeptime keeps the last; the best epoch is printed.
Timings depend on the machine and its load; compare ratios from the same run.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import load_features, print_table  # noqa: E402

from mdcvkit.models import MODELS, TimeLaggedAutoEncoder  # noqa: E402
from mdcvkit.training import Trainer, lagged_pairs, validation_mask  # noqa: E402

HIDDEN = 40
N_CV = 2
SEED = 0
GOAL_SPEEDUP = 3.0




def split_pairs(lengths, lag):
    """Training and held-out (source, target) index pairs, as ``Trainer.fit`` builds them."""
    val_mask = validation_mask(lengths, 0.2, 20, SEED)
    source, target = lagged_pairs(lengths, lag)
    keep = val_mask[source] == val_mask[target]
    source, target = source[keep], target[keep]
    held_out = val_mask[source]
    return (source[~held_out], target[~held_out]), (source[held_out], target[held_out]), val_mask


def held_out_mse(reconstruct, features, pairs):
    """MSE in Å² of ``reconstruct(x(t))`` against x(t + lag) over the held-out ``pairs``.

    ``reconstruct`` maps raw features (torch, float32) to raw features; the mean runs over
    pairs and features in float64.
    """
    source, target = pairs
    with torch.no_grad():
        prediction = reconstruct(torch.as_tensor(features[source])).double().numpy()
    return float(np.mean((prediction - features[target].astype(np.float64)) ** 2))


def mdcvkit_reconstruct(model):
    """x(t) -> decoded CV, in feature units, for a fitted mdcvkit model."""
    model = model.eval()
    return lambda x: model.decode(model.encode(x))


def fit_mdcvkit(model, features, lengths, lag, epochs, batch_size):
    """Train ``model`` with mdcvkit's Trainer; return (s/epoch, TrainingResult)."""
    trainer = Trainer(max_epochs=epochs, batch_size=batch_size, patience=epochs, seed=SEED, device="cpu",
                      n_threads=1)
    start = time.perf_counter()
    result = trainer.fit(model, features, lengths=lengths, lag=lag)
    seconds = time.perf_counter() - start
    if len(result.history.epoch) != epochs:
        raise RuntimeError(f"mdcvkit ran {len(result.history.epoch)} epochs instead of {epochs}")
    return seconds / epochs, result


def new_tae(n_features):
    """mdcvkit's TAE with per-feature standardisation and the benchmark's initial weights."""
    torch.manual_seed(SEED)
    return TimeLaggedAutoEncoder(n_features, N_CV, hidden=(HIDDEN,), activation="tanh", scale_groups=None)


def fit_deeptime(initial, features, train, val, epochs, batch_size, batched=False):
    """Train deeptime's TAE from the weights of mdcvkit's model ``initial``; return (s/epoch, reconstruct).

    ``batched=False`` is the loader of deeptime's examples (per-frame items, default collation);
    ``batched=True`` hands ``TAE.fit`` whole minibatches through a ``BatchSampler`` and the
    validation pairs in one indexing call.
    """
    from deeptime.decomposition.deep import TAE
    from deeptime.util.data import TimeLaggedDataset
    from deeptime.util.torch import MLP
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    n_features = features.shape[1]
    encoder = MLP([n_features, HIDDEN, N_CV], nonlinearity=torch.nn.Tanh)
    decoder = MLP([N_CV, HIDDEN, n_features], nonlinearity=torch.nn.Tanh)
    encoder._sequential.load_state_dict(initial.encoder.state_dict())
    decoder._sequential.load_state_dict(initial.decoder.state_dict())
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)

    start = time.perf_counter()
    sources = features[train[0]].astype(np.float64)
    mean, std = sources.mean(axis=0), sources.std(axis=0)

    def standardise(x):
        return ((x - mean) / std).astype(np.float32)

    train_set = TimeLaggedDataset(standardise(features[train[0]]), standardise(features[train[1]]))
    val_set = TimeLaggedDataset(standardise(features[val[0]]), standardise(features[val[1]]))
    if batched:
        sampler = BatchSampler(RandomSampler(train_set, generator=generator), batch_size, drop_last=False)
        loader = DataLoader(train_set, sampler=sampler, batch_size=None)
        val_loader = DataLoader(val_set, sampler=[np.arange(len(val_set))], batch_size=None)
    else:
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator)
        val_loader = DataLoader(val_set, batch_size=len(val_set), shuffle=False)
    tae = TAE(encoder, decoder, learning_rate=1e-3, device="cpu")
    tae.fit(loader, n_epochs=epochs, validation_loader=val_loader)
    seconds = time.perf_counter() - start
    if not np.all(np.isfinite(tae.validation_losses[:, 1])):
        raise FloatingPointError("deeptime's TAE diverged")
    model = tae.fetch_model()
    scale, offset = torch.as_tensor(std, dtype=torch.float32), torch.as_tensor(mean, dtype=torch.float32)

    def reconstruct(x):
        model.encoder.eval()
        model.decoder.eval()
        return model.decoder(model.encoder((x - offset) / scale)) * scale + offset

    return seconds / epochs, reconstruct


def run_family(features, featurizer, lengths, lag, epochs, batch_size, repeats, verbose=True):
    """Time every model of MODELS; return {name: (median s/epoch, held-out MSE Å², best epoch)}."""
    times = {name: [] for name in MODELS}
    fitted = {}
    for repeat in range(repeats):
        for name, cls in MODELS.items():
            torch.manual_seed(SEED)
            model = cls(features.shape[1], N_CV, hidden=(HIDDEN,), activation="tanh",
                        scale_groups=featurizer.scale_groups)
            model_lag = lag if cls.time_lagged else 0
            seconds, result = fit_mdcvkit(model, features, lengths, model_lag, epochs, batch_size)
            times[name].append(seconds)
            fitted.setdefault(name, (result, model_lag))
        if verbose:
            print(f"  repeat {repeat + 1}: " + ", ".join(f"{n} {t[-1]:.4f}" for n, t in times.items())
                  + " s/epoch", flush=True)
    figures = {}
    for name, (result, model_lag) in fitted.items():
        _, val, _ = split_pairs(lengths, model_lag)
        figures[name] = (statistics.median(times[name]),
                         held_out_mse(mdcvkit_reconstruct(result.model), features, val), result.best_epoch)
    return figures


def run_deeptime(features, lengths, lag, epochs, batch_size, repeats, verbose=True):
    """Time mdcvkit's "tae" against deeptime's TAE side by side; return a dict of figures."""
    train, val, val_mask = split_pairs(lengths, lag)
    initial = new_tae(features.shape[1])
    times = {"mdcvkit": [], "deeptime": [], "deeptime_batched": []}
    for repeat in range(repeats):
        seconds, result = fit_mdcvkit(initial, features, lengths, lag, epochs, batch_size)
        if not np.array_equal(result.validation, val_mask):
            raise RuntimeError("mdcvkit held out other frames than validation_mask(); the comparison is void")
        times["mdcvkit"].append(seconds)
        seconds, deeptime_reconstruct = fit_deeptime(initial, features, train, val, epochs, batch_size)
        times["deeptime"].append(seconds)
        seconds, batched_reconstruct = fit_deeptime(initial, features, train, val, epochs, batch_size,
                                                    batched=True)
        times["deeptime_batched"].append(seconds)
        if repeat == 0:
            scores = {"mdcvkit": held_out_mse(mdcvkit_reconstruct(result.model), features, val),
                      "deeptime": held_out_mse(deeptime_reconstruct, features, val),
                      "deeptime_batched": held_out_mse(batched_reconstruct, features, val)}
            best_epoch = result.best_epoch
        if verbose:
            print(f"  repeat {repeat + 1}: " + ", ".join(f"{n} {t[-1]:.4f}" for n, t in times.items())
                  + " s/epoch", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    # scale of the scores: predicting x(t + lag) by the mean of the training frames
    baseline = held_out_mse(lambda x: torch.as_tensor(features[train[0]].mean(axis=0)).expand_as(x),
                            features, val)
    return {"times": times, "median": median, "scores": scores, "speedup": median["deeptime"] / median["mdcvkit"],
            "best_epoch": best_epoch, "n_train": len(train[0]), "n_val": len(val[0]), "baseline": baseline}


def run(step=5, lag=1, family_epochs=10, epochs=30, batch_size=256, repeats=3, verbose=True):
    """Both parts; return a dict of figures."""
    torch.set_num_threads(1)
    features, featurizer, lengths = load_features(step)
    # warm-up, untimed: the first fit in a process pays one-off costs (imports, allocator, kernels)
    train, val, _ = split_pairs(lengths, lag)
    fit_mdcvkit(new_tae(features.shape[1]), features, lengths, lag, 1, batch_size)
    fit_deeptime(new_tae(features.shape[1]), features, train, val, 1, batch_size)
    if verbose:
        print(f"{features.shape[0]} frames x {features.shape[1]} features in {len(lengths)} trajectories "
              f"{lengths}; lag {lag} frames, batch {batch_size}, {torch.get_num_threads()} torch thread, "
              f"{repeats} repeats", flush=True)
        print(f"(a) the family, {family_epochs} epochs", flush=True)
    family = run_family(features, featurizer, lengths, lag, family_epochs, batch_size, repeats, verbose)
    if verbose:
        print(f"(b) tae against deeptime's TAE, {epochs} epochs", flush=True)
    versus = run_deeptime(features, lengths, lag, epochs, batch_size, repeats, verbose)
    return {"n_frames": int(features.shape[0]), "lengths": lengths, "lag": lag, "batch_size": batch_size,
            "family_epochs": family_epochs, "epochs": epochs, "repeats": repeats,
            "family": family, "versus": versus}


def rows(figures):
    """Table rows (benchmark, engine, figure, value, note) for run_all.py."""
    table = []
    for name, (seconds, mse, best) in figures["family"].items():
        lag = f"lag {figures['lag']}, " if MODELS[name].time_lagged else ""
        table.append(("models", f"mdcvkit {name!r}", "s/epoch", f"{seconds:.4f}",
                      f"{lag}val MSE {mse:.5f} Å² after {figures['family_epochs']} epochs (best {best})"))
    v = figures["versus"]
    m, s = v["median"], v["scores"]
    note = f"lag {figures['lag']}, {figures['epochs']} epochs: val MSE x(t+lag) "
    table += [
        ("models", "mdcvkit 'tae', per-feature std.", "s/epoch", f"{m['mdcvkit']:.4f}",
         f"{note}{s['mdcvkit']:.5f} Å² (best epoch {v['best_epoch']})"),
        ("models", "deeptime TAE, per-frame loader", "s/epoch", f"{m['deeptime']:.4f}",
         f"{note}{s['deeptime']:.5f} Å² (last epoch)"),
        ("models", "deeptime TAE, batched loader", "s/epoch", f"{m['deeptime_batched']:.4f}",
         f"{note}{s['deeptime_batched']:.5f} Å² (last epoch)"),
        ("models", "deeptime / mdcvkit 'tae'", "speed-up", f"{v['speedup']:.1f}x",
         "--quick: fits of milliseconds, no measurement" if figures.get("quick") else
         f"goal >= {GOAL_SPEEDUP:g}x: {'met' if v['speedup'] >= GOAL_SPEEDUP else 'MISSED'}"),
        ("models", "deeptime batched / mdcvkit 'tae'", "speed-up",
         f"{m['deeptime_batched'] / m['mdcvkit']:.1f}x", "deeptime without its per-frame data loading"),
    ]
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=5, help="use every STEP-th frame (default 5: 20 000 frames)")
    parser.add_argument("--lag", type=int, default=1,
                        help="lag of the time-lagged models, in analysed frames (default 1: 5 ps at step 5)")
    parser.add_argument("--family-epochs", type=int, default=10, help="epochs of each model in part (a)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of tae and deeptime's TAE in part (b)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: step 50, 2 and 3 epochs, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.step, args.family_epochs, args.epochs, args.repeats = 50, 2, 3, 1
    print(f"bench_models on {platform.node()} ({platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    figures = run(args.step, args.lag, args.family_epochs, args.epochs, args.batch_size, args.repeats)
    figures["quick"] = args.quick
    print_table([("benchmark", "engine", "figure", "median", "note"), *rows(figures)])
    v = figures["versus"]
    print(f"held-out pairs {v['n_val']} (training {v['n_train']}); predicting x(t+lag) by the training mean "
          f"scores {v['baseline']:.5f} Å²")
    return figures


if __name__ == "__main__":
    main()
