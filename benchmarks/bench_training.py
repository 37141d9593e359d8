"""Training time per epoch: mdcvkit's engine against mlcolvar's ``AutoEncoderCV``, in one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_training.py            # about a minute on two busy cores
    .venv/bin/python benchmarks/bench_training.py --quick    # a smoke run

What it compares, on the same data, architecture, batch size, epochs and held-out frames:

* data: the shipped implicit-solvent alanine dipeptide, heavy atoms (10), aligned Cartesian
  features (``make_featurizer("aligned", heavy)`` + ``FeatureCollector``), every ``--step``-th
  frame; features are computed once, before any timing;
* network: 30-40-2-40-30, tanh on the hidden layers, linear bottleneck and output (mlcolvar's
  default activation is ReLU: it is set to tanh here); inputs standardised per feature with
  the mean and standard deviation of the training frames (mlcolvar's default ``Normalization``,
  ``mode="mean_std"``; mdcvkit's ``AutoEncoder`` with ``scale_groups=None``); Adam, lr 1e-3;
* split: mdcvkit's contiguous validation blocks (``validation_mask``, 20 %); mlcolvar gets the
  same training and validation frames through a sequential ``DictModule`` split;
* timing: wall time of the whole ``fit`` (set-up, every training epoch and the validation pass
  of each epoch) divided by the number of epochs; mdcvkit runs with ``patience=max_epochs`` so
  both run every epoch; the two are timed alternately, ``--repeats`` times, and the median is
  reported;
* validation loss: each fitted model reconstructs the held-out frames and the error is scored
  by the same code for both, in two metrics: the MSE in Å² (raw features, what mlcolvar
  minimises) and the MSE of the standardised features (what mdcvkit minimises with this
  normalisation).

A third row trains mdcvkit with the normalisation ``mk.AutoencoderCV`` uses by default (one
common scale for all Cartesian features, so its loss is proportional to the MSE in Å²). A fourth,
``bare torch loop``, trains the same model on the same split in the leanest eager PyTorch loop
(normalise once, one gather per epoch, fused Adam, no per-step synchronisation): the floor any
eager engine sits on, as the bare MDAnalysis loop is for featurisation.

Both run with ``--threads`` torch threads (default 1): on a small network and a busy 2-core
machine, more threads than free cores make every step much slower for both engines.
Timings depend on the machine and its load; compare ratios from the same run.
"""

import argparse
import logging
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import load_features, print_table  # noqa: E402

from mdcvkit.models import AutoEncoder  # noqa: E402
from mdcvkit.training import Trainer, validation_mask  # noqa: E402

HIDDEN = 40
N_CV = 2
SEED = 0
GOAL_SPEEDUP = 5.0




def fit_mdcvkit(features, epochs, batch_size, scale_groups=None):
    """Train mdcvkit's AutoEncoder; return (seconds, TrainingResult)."""
    torch.manual_seed(SEED)  # the model's initial weights
    model = AutoEncoder(features.shape[1], N_CV, hidden=(HIDDEN,), activation="tanh",
                        scale_groups=scale_groups)
    trainer = Trainer(max_epochs=epochs, batch_size=batch_size, patience=epochs, seed=SEED, device="cpu")
    start = time.perf_counter()
    result = trainer.fit(model, features)
    return time.perf_counter() - start, result


def fit_mlcolvar(features, val_mask, epochs, batch_size):
    """Train mlcolvar's AutoEncoderCV with lightning on the same split; return (seconds, model, n_epochs)."""
    import lightning
    from mlcolvar.cvs import AutoEncoderCV
    from mlcolvar.data import DictDataset, DictModule
    from mlcolvar.utils.trainer import MetricsCallback

    order = np.concatenate([np.flatnonzero(~val_mask), np.flatnonzero(val_mask)])
    lightning.seed_everything(SEED, verbose=False)
    dataset = DictDataset({"data": torch.as_tensor(features[order])})
    # training frames first, then validation frames: a sequential split gives mdcvkit's split;
    # validation in one batch, as mdcvkit evaluates it
    datamodule = DictModule(dataset, lengths=[int((~val_mask).sum()), int(val_mask.sum())],
                            batch_size=[batch_size, 0], random_split=False)
    options = {"encoder": {"activation": "tanh"}, "decoder": {"activation": "tanh"}}
    model = AutoEncoderCV([features.shape[1], HIDDEN, N_CV], options=options)
    metrics = MetricsCallback()
    trainer = lightning.Trainer(
        callbacks=[metrics], max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule)
    seconds = time.perf_counter() - start
    return seconds, model.eval(), len(metrics.metrics["epoch"])


def fit_bare_torch(features, val_mask, epochs, batch_size):
    """The floor of any eager PyTorch engine: the same model and split in a minimal loop.

    Normalises once, gathers each epoch's shuffled frames once, fused Adam, no per-step
    synchronisation, one validation pass per epoch; return (seconds, model).
    """
    torch.manual_seed(SEED)
    model = AutoEncoder(features.shape[1], N_CV, hidden=(HIDDEN,), activation="tanh")
    data = torch.as_tensor(features)
    start = time.perf_counter()
    train = data[torch.as_tensor(np.flatnonzero(~val_mask))]
    val = data[torch.as_tensor(np.flatnonzero(val_mask))]
    model.normalization.fit(train)
    train, val = model.normalization(train), model.normalization(val)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        shuffled = train[torch.randperm(len(train), generator=generator)]
        total = torch.zeros(())
        for first in range(0, len(shuffled), batch_size):
            x = shuffled[first:first + batch_size]
            loss = ((model.decoder(model.encoder(x)) - x) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(x)
        with torch.no_grad():
            validation = ((model.decoder(model.encoder(val)) - val) ** 2).mean()
        if not torch.isfinite(total + validation):
            raise FloatingPointError("the bare loop diverged")
    return time.perf_counter() - start, model.eval()


def held_out_scores(reconstruct, features, val_mask):
    """MSE (Å²) and standardised MSE of the reconstruction of the validation frames.

    The standardisation uses the per-feature mean and standard deviation of the training
    frames, the same for every model.
    """
    train, val = features[~val_mask].astype(np.float64), features[val_mask]
    std = train.std(axis=0)
    with torch.no_grad():
        recon = reconstruct(torch.as_tensor(val)).double().numpy()
    error = recon - val.astype(np.float64)
    return float(np.mean(error**2)), float(np.mean((error / std) ** 2))


def run(step=5, epochs=40, batch_size=256, repeats=3, threads=1, verbose=True):
    """Time both engines side by side; return a dict of figures."""
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", module="mlcolvar")
    warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|sequential_split).*")
    try:
        import lightning  # noqa: F401
        import mlcolvar.cvs  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"mlcolvar is needed for this benchmark: pip install -e '.[bench]' ({err})") from err
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(threads)
    features, featurizer, _ = load_features(step)
    val_mask = validation_mask([len(features)], 0.2, 20, SEED)
    if verbose:
        print(f"{features.shape[0]} frames x {features.shape[1]} features, {int((~val_mask).sum())} training "
              f"/ {int(val_mask.sum())} validation; batch {batch_size}, {epochs} epochs, "
              f"{torch.get_num_threads()} torch thread(s), {repeats} repeats", flush=True)

    times = {"mdcvkit": [], "mlcolvar": [], "mdcvkit_groups": [], "bare_torch": []}
    for repeat in range(repeats):
        seconds, result = fit_mdcvkit(features, epochs, batch_size)
        times["mdcvkit"].append(seconds / epochs)
        if not np.array_equal(result.validation, val_mask):
            raise RuntimeError("mdcvkit held out other frames than validation_mask(); the comparison is void")
        seconds, ml_model, ml_epochs = fit_mlcolvar(features, val_mask, epochs, batch_size)
        if ml_epochs != epochs:
            raise RuntimeError(f"mlcolvar ran {ml_epochs} epochs instead of {epochs}")
        times["mlcolvar"].append(seconds / epochs)
        seconds, grouped = fit_mdcvkit(features, epochs, batch_size, scale_groups=featurizer.scale_groups)
        times["mdcvkit_groups"].append(seconds / epochs)
        seconds, bare = fit_bare_torch(features, val_mask, epochs, batch_size)
        times["bare_torch"].append(seconds / epochs)
        if repeat == 0:
            models = {"mdcvkit": result, "mlcolvar": ml_model, "mdcvkit_groups": grouped, "bare_torch": bare}
        if verbose:
            print(f"  repeat {repeat + 1}: mdcvkit {times['mdcvkit'][-1]:.4f} s/epoch, mlcolvar "
                  f"{times['mlcolvar'][-1]:.4f} s/epoch", flush=True)

    def mdcvkit_reconstruct(result):
        return lambda x: result.model.decode(result.model.encode(x))

    scores = {
        "mdcvkit": held_out_scores(mdcvkit_reconstruct(models["mdcvkit"]), features, val_mask),
        "mlcolvar": held_out_scores(models["mlcolvar"].encode_decode, features, val_mask),
        "mdcvkit_groups": held_out_scores(mdcvkit_reconstruct(models["mdcvkit_groups"]), features, val_mask),
        "bare_torch": held_out_scores(lambda x: models["bare_torch"].decode(models["bare_torch"].encode(x)),
                                      features, val_mask),
    }
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "n_frames": int(features.shape[0]), "epochs": epochs, "batch_size": batch_size,
        "threads": torch.get_num_threads(), "repeats": repeats, "times": times, "median": median,
        "scores": scores, "speedup": median["mlcolvar"] / median["mdcvkit"],
        "best_epoch": {"mdcvkit": models["mdcvkit"].best_epoch,
                       "mdcvkit_groups": models["mdcvkit_groups"].best_epoch},
    }


def rows(figures):
    """Table rows (benchmark, engine, figure, value, note) for run_all.py."""
    m, s = figures["median"], figures["scores"]
    return [
        ("training", "mdcvkit Trainer", "s/epoch", f"{m['mdcvkit']:.4f}",
         f"val MSE {s['mdcvkit'][0]:.5f} Å², std. {s['mdcvkit'][1]:.4f}"),
        ("training", "mlcolvar AutoEncoderCV", "s/epoch", f"{m['mlcolvar']:.4f}",
         f"val MSE {s['mlcolvar'][0]:.5f} Å², std. {s['mlcolvar'][1]:.4f}"),
        ("training", "mdcvkit, AutoencoderCV normalisation", "s/epoch", f"{m['mdcvkit_groups']:.4f}",
         f"val MSE {s['mdcvkit_groups'][0]:.5f} Å², std. {s['mdcvkit_groups'][1]:.4f}"),
        ("training", "bare torch loop (floor)", "s/epoch", f"{m['bare_torch']:.4f}",
         f"val MSE {s['bare_torch'][0]:.5f} Å², std. {s['bare_torch'][1]:.4f}"),
        ("training", "mlcolvar / bare torch loop", "speed-up", f"{m['mlcolvar'] / m['bare_torch']:.1f}x",
         "the most any eager torch engine could reach here"),
        ("training", "mlcolvar / mdcvkit", "speed-up", f"{figures['speedup']:.1f}x",
         f"goal >= {GOAL_SPEEDUP:g}x: {'met' if figures['speedup'] >= GOAL_SPEEDUP else 'MISSED'}"),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=5,
                        help="use every STEP-th frame (default 5: 20 000 frames)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both engines (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: step 100, 3 epochs, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.step, args.epochs, args.repeats = 100, 3, 1
    print(f"bench_training on {platform.node()} ({platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    figures = run(args.step, args.epochs, args.batch_size, args.repeats, args.threads)
    header = ("benchmark", "engine", "figure", "median", "note")
    print_table([header, *rows(figures)])
    s = figures["scores"]
    lower = s["mdcvkit"][0] <= s["mlcolvar"][0], s["mdcvkit"][1] <= s["mlcolvar"][1]
    print(f"validation loss, mdcvkit <= mlcolvar: MSE in Å² {'yes' if lower[0] else 'NO'}, standardised "
          f"{'yes' if lower[1] else 'NO'} (mdcvkit best epoch {figures['best_epoch']['mdcvkit']} "
          f"of {figures['epochs']})")
    return figures


if __name__ == "__main__":
    main()
