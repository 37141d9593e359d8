"""The single training loop of the autoencoder family.

:class:`Trainer` fits any :class:`mdcvkit.models.BaseAutoencoder` on a plain
feature matrix (so toy data and features computed by other tools train without
a Universe): Adam, a train/validation split in contiguous blocks of frames that
never cross trajectory boundaries, early stopping on the validation loss with
the best weights restored, per-frame weights (FEBILAE reweighting) through
multinomial minibatches, data kept on the device, seeds for reproducibility.

:func:`weighted_mean` is the one weighted reduction, Σwᵢvᵢ / Σwᵢ, used by every
loss term, the validation loss and the input normalisation statistics.
"""

import copy
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from scipy.special import logsumexp

from ._checks import check_int, check_number, check_seed, is_int
from ._io import as_path, atomic_path, load_torch
from ._params import check_fingerprint, data_digest, get_params
from ._progress import progress_bar, resolve_verbose

__all__ = [
    "weighted_mean",
    "normalize_weights",
    "resolve_device",
    "validation_mask",
    "lagged_pairs",
    "Trainer",
    "TrainingResult",
    "ConvergenceWarning",
]

logger = logging.getLogger(__name__)

#: Fewest frames a model is trained on.
MIN_FRAMES = 10

#: Version of the checkpoint layout written by :class:`Trainer`.
CHECKPOINT_VERSION = 2

#: A best validation loss this many times (the larger of 1 and) the untrained loss above it means divergence.
DIVERGENCE_FACTOR = 10.0


class ConvergenceWarning(UserWarning):
    """Training ended without converging: it diverged, or stopped at ``max_epochs`` while still improving."""


def weighted_mean(values, weights=None):
    """Weighted mean over the first axis, Σᵢ wᵢ vᵢ / Σᵢ wᵢ.

    Parameters
    ----------
    values : torch.Tensor, shape (n,) or (n, ...)
    weights : torch.Tensor, shape (n,), optional
        Non-negative weights (any normalisation); the plain mean when None.

    Returns
    -------
    torch.Tensor, shape values.shape[1:]
    """
    if weights is None:
        return values.mean(dim=0)
    w = weights.to(device=values.device, dtype=values.dtype).reshape(-1, *([1] * (values.ndim - 1)))
    return (w * values).sum(dim=0) / w.sum()


def normalize_weights(n_frames, weights=None, log_weights=None):
    """Check frame weights and return them as probabilities (float64, summing to 1).

    Parameters
    ----------
    n_frames : int
        Number of frames the weights refer to.
    weights : array_like, shape (n_frames,), optional
        Non-negative, finite, not all zero.
    log_weights : array_like, shape (n_frames,), optional
        Natural logarithms of the weights (``-inf`` for zero weight); use them
        for large biases, e.g. ``beta * V_bias``: they are normalised with
        logsumexp in float64 and never overflow.

    Returns
    -------
    numpy.ndarray of float64, shape (n_frames,), or None when both are None.
    """
    if weights is not None and log_weights is not None:
        raise ValueError("pass either weights or log_weights, not both")
    if weights is None and log_weights is None:
        return None
    name, given = ("weights", weights) if weights is not None else ("log_weights", log_weights)
    try:
        values = np.asarray(given, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an array of numbers, one per analysed frame; got "
                         f"{type(given).__name__}") from err
    if values.ndim != 1:
        raise ValueError(f"{name} has shape {values.shape}, but one value per frame is needed, shape ({n_frames},); "
                         "pass a 1-D array (flatten it only if that is what you mean)")
    if len(values) != n_frames:
        raise ValueError(
            f"{name} has length {len(values)} but there are {n_frames} frames; pass one value per "
            "analysed frame (mind start/stop/step/frames)"
        )
    if name == "weights":
        if not np.all(np.isfinite(values)):
            raise ValueError(f"weights hold {np.sum(~np.isfinite(values))} NaN or infinite values; "
                             "pass finite weights or log_weights")
        if np.any(values < 0):
            raise ValueError(f"weights hold negative values (min {values.min():g}); weights must be >= 0")
        if not np.any(values > 0):
            raise ValueError("weights are all zero; at least one frame needs a positive weight")
        with np.errstate(divide="ignore"):
            values = np.log(values)
    elif np.any(np.isnan(values)) or np.any(values == np.inf):
        raise ValueError("log_weights hold NaN or +inf values; pass finite log-weights (-inf means weight 0)")
    elif np.all(values == -np.inf):
        raise ValueError("log_weights are all -inf (all weights zero); at least one frame needs a weight")
    return np.exp(values - logsumexp(values))


def resolve_device(device="auto"):
    """Return the torch device for ``device`` ("auto": CUDA when present, else CPU)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a device; use 'auto', 'cpu' or 'cuda'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='auto' or 'cpu'")
    return resolved


def validation_mask(lengths, validation_fraction=0.2, n_blocks=20, seed=0):
    """Choose validation frames as whole contiguous blocks that never cross trajectories.

    Each trajectory is cut into blocks of about ``sum(lengths) / n_blocks``
    frames; blocks are drawn at random (seeded) until
    ``ceil(validation_fraction * sum(lengths))`` frames are held out, the last
    block drawn being cut short to that count. Contiguous blocks keep
    time-correlated neighbours out of the validation set.

    Parameters
    ----------
    lengths : sequence of int
        Number of frames of each trajectory.
    validation_fraction : float, default 0.2
        Fraction of frames held out, in [0, 1).
    n_blocks : int, default 20
        Approximate number of blocks over all frames (≥ 1).
    seed : int, default 0

    Returns
    -------
    numpy.ndarray of bool, shape (sum(lengths),)
        True for validation frames.
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction} must be in [0, 1); e.g. 0.2")
    check_int(n_blocks, "n_blocks", 1)
    n_frames = int(np.sum(lengths))
    mask = np.zeros(n_frames, dtype=bool)
    if validation_fraction == 0:
        return mask
    block = max(1, int(np.ceil(n_frames / n_blocks)))
    starts, stops = [], []
    offset = 0
    for length in lengths:
        for start in range(0, length, block):
            starts.append(offset + start)
            stops.append(offset + min(start + block, length))
        offset += length
    order = np.random.default_rng(seed).permutation(len(starts))
    missing = int(np.ceil(round(validation_fraction * n_frames, 6)))  # 0.55 * 100 is 55.00000000000001
    for k in order:
        if missing <= 0:
            break
        stop = min(stops[k], starts[k] + missing)  # the last block drawn stops at the target
        mask[starts[k]:stop] = True
        missing -= stop - starts[k]
    return mask


def lagged_pairs(lengths, lag=0):
    """Index pairs (t, t + lag) that stay inside one trajectory.

    Parameters
    ----------
    lengths : sequence of int
        Number of frames of each trajectory (rows are stored trajectory after trajectory).
    lag : int, default 0
        Lag in frames; 0 gives each frame paired with itself.

    Returns
    -------
    source, target : numpy.ndarray of int64
    """
    sources = [offset + np.arange(max(length - lag, 0))
               for offset, length in zip(np.cumsum([0, *lengths[:-1]]), lengths, strict=True)]
    source = np.concatenate(sources).astype(np.int64) if sources else np.zeros(0, np.int64)
    return source, source + lag


@dataclass
class TrainingResult:
    """What :meth:`Trainer.fit` returns.

    Attributes
    ----------
    model : BaseAutoencoder
        The fitted model (a new object; the model passed in is not changed).
    history : xarray.Dataset
        Dim ``epoch``: ``train`` and ``validation`` loss and each train loss term.
    validation : numpy.ndarray of bool, shape (n_frames,)
        Which frames were held out.
    best_epoch : int
        Epoch whose weights were restored.
    """

    model: torch.nn.Module
    history: xr.Dataset
    validation: np.ndarray
    best_epoch: int


class Trainer:
    """Train any model of the autoencoder family on a feature matrix.

    Parameters
    ----------
    max_epochs : int, default 200
    batch_size : int, default 256
        Frames per minibatch; with fewer training frames the batch shrinks.
    learning_rate : float, default 1e-3
        Adam learning rate.
    patience : int, default 20
        Epochs without improvement of the validation loss before stopping.
    validation_fraction : float, default 0.2
        Fraction of frames held out in contiguous blocks; 0 trains on all
        frames and early-stops on the training loss.
    n_blocks : int, default 20
        Approximate number of contiguous blocks the frames are cut into.
    device : str, default "auto"
        "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
    seed : int, default 0
        Seeds the split, the minibatches and torch.
    verbose : bool or None, default None
        tqdm progress bar over epochs; None shows it when stderr is a terminal, False silences it.
    n_threads : int or "auto", default "auto"
        CPU threads torch uses while training (restored afterwards). "auto"
        uses one thread per 100,000 model parameters, at most torch's
        default: the small networks of CV learning run several times faster
        on one thread than on two, because their matrix products are too
        small to share (measured on 2 cores: 30-40-2-40-30 network, 5x).
    checkpoint : str or path-like, optional
        File that holds the training state (model, optimiser, random-number
        generators, loss history, best weights), written atomically every
        ``checkpoint_every`` epochs and when training ends. :meth:`fit` resumes
        from an existing file written for the same model, features, weights
        and settings (``max_epochs`` may be raised to train longer): an
        interrupted run resumed this way gives the same model as an
        uninterrupted one. The file carries a fingerprint: the model's class
        and every setting of its ``__init__`` (activation, hidden sizes, β, …),
        every setting of this trainer but ``max_epochs``, ``verbose``,
        ``checkpoint``, ``checkpoint_every`` and ``n_threads`` (which do not
        change the result), the device type, and a SHA-256 of the features and
        weights with the trajectory lengths and lag. A file whose fingerprint
        differs is refused with a ValueError naming each differing setting and
        both values; a missing folder fails here. It holds pickled tensors:
        load only files you wrote.

        .. versionchanged:: 0.1
           Fingerprinted; a resume of other settings is refused, naming them.
    checkpoint_every : int, default 10
        Epochs between checkpoints.

    Notes
    -----
    With uniform weights each epoch visits every training frame once in a
    random order. With weights, each epoch draws as many frames as there are
    training frames by multinomial sampling with replacement in proportion to
    the weights, so every minibatch is an unweighted sample of the target
    distribution; the validation loss is the weighted mean over validation
    frames.
    """

    def __init__(self, *, max_epochs=200, batch_size=256, learning_rate=1e-3, patience=20,
                 validation_fraction=0.2, n_blocks=20, device="auto", seed=0, verbose=None,
                 n_threads="auto", checkpoint=None, checkpoint_every=10):
        for name, value in (("max_epochs", max_epochs), ("batch_size", batch_size), ("patience", patience),
                            ("n_blocks", n_blocks), ("checkpoint_every", checkpoint_every)):
            check_int(value, name)
        if isinstance(learning_rate, (str, bytes, bool)):
            raise TypeError(f"learning_rate={learning_rate!r} must be a number, e.g. learning_rate=1e-3")
        check_number("learning_rate", learning_rate, strict=True, example="1e-3")
        if isinstance(validation_fraction, (str, bytes, bool)) or not 0 <= check_number(
                "validation_fraction", validation_fraction, example="0.2") < 1:
            raise ValueError(f"validation_fraction={validation_fraction!r} must be in [0, 1); e.g. 0.2")
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.n_blocks = n_blocks
        resolve_device(device)  # a bad device fails here, not after the frames are read
        self.device = device
        self.seed = check_seed(seed)
        resolve_verbose(verbose)  # checks its type
        self.verbose = verbose
        if n_threads != "auto":
            check_int(n_threads, "n_threads", fix="pass e.g. n_threads=2, or 'auto'")
        self.n_threads = n_threads
        self.checkpoint = None if checkpoint is None else as_path(checkpoint, "checkpoint")
        if self.checkpoint is not None and (self.checkpoint.is_dir() or not self.checkpoint.parent.is_dir()):
            raise ValueError(  # here, not after the first epochs have run
                f"checkpoint={str(self.checkpoint)!r} " + ("is a folder; pass the path of a file in it" if
                self.checkpoint.is_dir() else f"is in a folder that does not exist; create "
                                              f"'{self.checkpoint.parent}' first or pass another path"))
        self.checkpoint_every = checkpoint_every

    def _threads(self, model):
        if self.n_threads != "auto":
            return int(self.n_threads)
        n_parameters = sum(p.numel() for p in model.parameters())
        return max(1, min(torch.get_num_threads(), n_parameters // 100_000))

    def fit(self, model, features, *, weights=None, log_weights=None, lengths=None, lag=0, objective=None):
        """Train a copy of ``model`` on ``features``, or on an objective that draws its own samples.

        Parameters
        ----------
        model : BaseAutoencoder
            An initialised model; it is copied, never changed.
        features : array_like, shape (n_frames, n_features)
            Raw features (numpy array, memory map or tensor), trajectory after trajectory.
        weights, log_weights : array_like, shape (n_frames,), optional
            Frame weights (see :func:`normalize_weights`).
        lengths : sequence of int, optional
            Frames per trajectory; one trajectory when None.
        lag : int, default 0
            Lag in frames of the (input, target) pairs for time-lagged models.
        objective : object, optional
            Replaces ``model.loss``: ``objective.loss(model, x, target)`` returns
            (loss, terms) for a minibatch (``x`` and ``target`` None when
            ``features`` is None: the objective draws its own samples, e.g.
            reverse-KL training from a potential), ``objective.steps_per_epoch``
            counts the steps of an epoch without features, and
            ``objective.validate(model, data_loss)`` returns a dict of floats
            recorded per epoch whose ``"validation"`` entry early-stops
            (``data_loss``: the validation loss of the data, None without).
            No checkpoint with an objective.

        Returns
        -------
        TrainingResult
            ``history.attrs`` holds ``best_epoch``, ``initial_loss`` (the
            validation loss before training) and ``converged`` (1 when early
            stopping ended the run).

        Raises
        ------
        ValueError
            For bad features, weights, lengths or lag, or a checkpoint written for
            other settings (named in the message).
        TypeError
            For features that are not a real numeric array.
        FloatingPointError
            When the training loss becomes NaN or infinite.

        Warns
        -----
        ConvergenceWarning
            When training diverged (the best validation loss ends far above the
            loss before training), or stopped at ``max_epochs`` while the
            validation loss still fell.
        UserWarning
            When there are fewer training frames than features.
        """
        device = resolve_device(self.device)
        if objective is not None and self.checkpoint is not None:
            raise ValueError("a checkpoint cannot fingerprint an objective; pass checkpoint=None with objective")
        if features is None:
            if objective is None:
                raise ValueError("features=None trains only with an objective that draws its own samples; "
                                 "pass features of shape (n_frames, n_features)")
            empty = (torch.zeros(0, dtype=torch.long),) * 2
            return self._run(model, None, empty, None, empty, None, np.zeros(0, dtype=bool), device, objective)
        try:
            data = torch.as_tensor(features) if isinstance(features, torch.Tensor) else torch.as_tensor(
                np.asarray(features))
        except (TypeError, ValueError, RuntimeError) as err:
            kind = getattr(np.asarray(features), "dtype", type(features).__name__)
            raise TypeError(f"features must be a numeric array of shape (n_frames, n_features), not "
                            f"{type(features).__name__} of {kind}") from err
        if data.ndim != 2 or data.shape[1] != model.n_features:
            raise ValueError(
                f"features have shape {tuple(data.shape)} but the model expects (n_frames, "
                f"{model.n_features}); build the model for these features"
            )
        n_frames = data.shape[0]
        check_int(lag, "lag", 0, "pass the lag in frames, e.g. lag=10")
        if lengths is not None and (isinstance(lengths, (str, bytes)) or not hasattr(lengths, "__iter__")
                                    or not all(is_int(n) for n in lengths)):
            raise ValueError(f"lengths={lengths!r} must be a list of frame counts, one per trajectory, summing "
                             f"to n_frames={n_frames}")
        lengths = [n_frames] if lengths is None else [int(n) for n in lengths]
        if not lengths or sum(lengths) != n_frames or min(lengths) < 1:
            raise ValueError(f"lengths={lengths} must be positive and sum to n_frames={n_frames}")
        if n_frames < MIN_FRAMES:
            raise ValueError(
                f"only {n_frames} frames to train on; at least {MIN_FRAMES} are needed: run over more frames"
            )
        if data.is_complex() or data.dtype == torch.bool:
            raise TypeError(f"features have dtype {data.dtype}; pass real numbers (float32 or float64)")
        if not torch.isfinite(data).all():
            raise ValueError("features hold NaN or infinite values; check the input coordinates")
        p = normalize_weights(n_frames, weights, log_weights)
        val_mask = validation_mask(lengths, self.validation_fraction, self.n_blocks, self.seed)
        source, target = lagged_pairs(lengths, lag)
        keep = val_mask[source] == val_mask[target]  # no pair straddles the split
        source, target = source[keep], target[keep]
        is_val = val_mask[source]
        n_train, n_val = int((~is_val).sum()), int(is_val.sum())
        if n_train < 2 or (self.validation_fraction > 0 and n_val < 1):
            raise ValueError(
                f"{n_frames} frames (lag={lag}) leave {n_train} training and {n_val} validation "
                f"{'pairs' if lag else 'frames'} with validation_fraction={self.validation_fraction}; "
                "run over more frames or lower validation_fraction"
            )
        if n_train < model.n_features:
            warnings.warn(
                f"{n_train} training frames for {model.n_features} features: with fewer frames than features "
                "the model can memorise the frames instead of learning a CV; run over more frames (smaller step) "
                "or use fewer features (features='distances' on fewer atoms, or top_k)", UserWarning, stacklevel=2)
        if p is not None and p[source[~is_val]].sum() <= 0:
            raise ValueError("all training frames have zero weight; check weights or validation_fraction")
        if p is not None and n_val and p[source[is_val]].sum() <= 0:
            raise ValueError(
                f"all {n_val} validation frames have zero weight, so the validation loss is undefined; "
                f"drop the zero-weight frames, pass more frames, or change validation_fraction or n_blocks"
            )

        data = data.to(device=device, dtype=torch.float32)
        train_idx = torch.as_tensor(source[~is_val]), torch.as_tensor(target[~is_val])
        val_idx = torch.as_tensor(source[is_val]), torch.as_tensor(target[is_val])
        w = None if p is None else torch.as_tensor(p, dtype=torch.float64)
        train_w = None if w is None else w[train_idx[0]]
        val_w = None if w is None else w[val_idx[0]].to(device)
        return self._run(model, data, train_idx, train_w, val_idx, val_w, val_mask, device, objective,
                         (p, lengths, lag))

    def _run(self, model, data, train_idx, train_w, val_idx, val_w, val_mask, device, objective, digest=None):
        """Train a copy of ``model`` (normalisation fitted to the training frames, if any) and package the result."""
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        model = copy.deepcopy(model).to(device)
        if data is not None:
            model.normalization.fit(data[train_idx[0]], None if train_w is None else train_w.to(device))
            if hasattr(model, "on_fit_start"):  # a model hook, e.g. a decoder prior scaled by the training frames
                model.on_fit_start(len(train_idx[0]))
        key = None if digest is None else self._fingerprint(model, data, *digest, device)
        threads = torch.get_num_threads()
        torch.set_num_threads(self._threads(model))
        try:
            records, best, initial, stopped = self._train(model, data, train_idx, train_w, val_idx, val_w,
                                                          generator, device, key, objective)
        finally:
            torch.set_num_threads(threads)
        self._warn_convergence(records, best, initial, stopped)
        model.load_state_dict(best[2])
        model.eval()
        history = xr.Dataset(
            {name: ("epoch", [r[name] for r in records]) for name in records[0]},
            coords={"epoch": np.arange(len(records))},
            attrs={"long_name": "loss", "best_epoch": best[1], "initial_loss": initial,
                   "converged": int(stopped)},
        )
        return TrainingResult(model=model, history=history, validation=val_mask, best_epoch=best[1])

    def _warn_convergence(self, records, best, initial, stopped):
        """Warn when training diverged, or ran out of epochs while the validation loss still fell."""
        if best[0] > initial + DIVERGENCE_FACTOR * max(1.0, abs(initial)):
            warnings.warn(
                f"training diverged: the best validation loss {best[0]:.4g} is far above the loss before "
                f"training ({initial:.4g}); lower learning_rate (now {self.learning_rate:g}), e.g. to "
                f"{self.learning_rate / 100:g}", ConvergenceWarning, stacklevel=3)
        elif not stopped:
            warnings.warn(
                f"training stopped at max_epochs={self.max_epochs} before converging: the validation loss still "
                f"fell within the last patience={self.patience} epochs (best epoch {best[1]} of {len(records)}); "
                "raise max_epochs (a checkpoint resumes where this run ended)", ConvergenceWarning, stacklevel=3)

    #: Trainer settings that do not change the fitted model, left out of checkpoint fingerprints
    #: (``device`` enters as the resolved device type, so "auto" and "cpu" on a CPU machine agree).
    _NOT_FINGERPRINTED = ("max_epochs", "verbose", "checkpoint", "checkpoint_every", "n_threads", "device")

    def _fingerprint(self, model, data, p, lengths, lag, device):
        """What a checkpoint must have been written for: the model and its settings, the trainer, the data.

        Model and trainer settings are read back from their ``__init__`` signatures
        (:func:`mdcvkit._params.get_params`), so a setting added later is fingerprinted without a list
        kept by hand.
        """
        if self.checkpoint is None:
            return None
        trainer = get_params(self, exclude=self._NOT_FINGERPRINTED)
        trainer["device"] = device.type
        context = getattr(self, "_context", None)  # set by callers that make the features (AutoencoderCV)
        return {**({"estimator": context} if context else {}),
                "model": {"kind": f"{type(model).__module__}.{type(model).__qualname__}", **get_params(model)},
                "trainer": trainer,
                "data": {"features": data_digest(data), "shape": list(data.shape), "weights": data_digest(p),
                         "lengths": list(lengths), "lag": int(lag)}}

    _STATE_KEYS = ("fingerprint", "epoch", "model", "optimizer", "generator", "torch_rng", "records", "best",
                   "done", "initial")

    def _resume(self, key, model, optimizer, generator, device):
        """Load the checkpoint into model, optimizer and generators.

        Returns (next epoch, records, best, done, initial loss or None).
        """
        if self.checkpoint is None or not self.checkpoint.exists():
            return 0, [], (np.inf, -1, None), False, None
        what = "a training checkpoint written by mdcvkit's Trainer"
        state = load_torch(self.checkpoint, what, name="checkpoint", weights_only=False)
        if not isinstance(state, dict) or state.get("kind") != "mdcvkit.Trainer.checkpoint":
            old = isinstance(state, dict) and "key" in state
            raise ValueError(
                f"checkpoint={str(self.checkpoint)!r} is not {what}"
                + (" (it was written by an older mdcvkit, without a fingerprint)" if old else "")
                + "; delete it to start afresh or pass another path")
        missing = [k for k in self._STATE_KEYS if k not in state]
        if missing or state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint={str(self.checkpoint)!r} has layout version {state.get('version')!r} (this mdcvkit "
                f"writes {CHECKPOINT_VERSION}){', and lacks ' + ', '.join(missing) if missing else ''}; delete it "
                "to start afresh")
        check_fingerprint(state["fingerprint"], key, self.checkpoint, "checkpoint")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        best = (state["best"][0], state["best"][1], state["best"][2])
        logger.info("resumed training from %s after epoch %d", self.checkpoint, state["epoch"])
        return state["epoch"] + 1, state["records"], best, state["done"], state["initial"]

    def _save(self, key, epoch, model, optimizer, generator, records, best, done, initial, device):
        state = {"kind": "mdcvkit.Trainer.checkpoint", "version": CHECKPOINT_VERSION, "fingerprint": key,
                 "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                 "records": records, "best": best, "done": done, "initial": initial}
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def _validate(self, model, data, index, weights, objective):
        """The epoch's validation record: the data's validation loss, or the objective's dict built on it."""
        data_loss = self._evaluate(model, data, index, weights) if len(index[0]) else None
        return {"validation": data_loss} if objective is None else objective.validate(model, data_loss)

    def _batches(self, data, source, target, same, train_w, generator, objective):
        """The (input, target) minibatches of one epoch; (None, None) steps for an objective without data.

        ``same``: the targets are the inputs (lag 0), checked once per fit rather than per epoch."""
        if data is None:
            return [(None, None)] * objective.steps_per_epoch
        n_train = len(source)
        if train_w is None:
            order = torch.randperm(n_train, generator=generator).to(source.device)
        else:
            order = torch.multinomial(train_w, n_train, replacement=True, generator=generator).to(source.device)
        # one gather per epoch; minibatches are then contiguous slices of it
        inputs = data[source[order]]
        targets = inputs if same else data[target[order]]
        return [(inputs[start:start + self.batch_size], targets[start:start + self.batch_size])
                for start in range(0, n_train, self.batch_size)]

    def _train(self, model, data, train_idx, train_w, val_idx, val_w, generator, device, key=None, objective=None):
        """The epoch loop.

        Returns the per-epoch records, (best loss, best epoch, best state), the loss before training and
        whether early stopping ended it.
        """
        n_val = len(val_idx[0])
        source, target = train_idx[0].to(device), train_idx[1].to(device)
        same = torch.equal(source, target)  # lag 0: the target is the input
        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate, fused=True)
        first, records, best, done, initial = self._resume(key, model, optimizer, generator, device)
        if done:
            return records, best, initial, True
        if initial is None:  # the loss before training, the yardstick of divergence; draws no random number
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                initial = self._validate(model, data, val_idx if n_val else train_idx,
                                         val_w if n_val else train_w, objective)["validation"]
        stop = False
        epochs = progress_bar(range(first, self.max_epochs), verbose=self.verbose, desc="training", unit="epoch",
                      initial=first, total=self.max_epochs)
        for epoch in epochs:
            model.train()
            total, terms_sum, n_seen = torch.zeros((), device=device), {}, 0
            for x, y in self._batches(data, source, target, same, train_w, generator, objective):
                loss, terms = model.loss(x, y) if objective is None else objective.loss(model, x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = 1 if x is None else len(x)
                n_seen += n
                total += loss.detach() * n
                for name, value in terms.items():
                    terms_sum[name] = terms_sum.get(name, 0.0) + value * n
            if not torch.isfinite(total):  # checked once per epoch: no device sync per step
                raise FloatingPointError(
                    f"the training loss became {float(total)} during epoch {epoch}; lower learning_rate "
                    f"(now {self.learning_rate}) or check the inputs for extreme values"
                )
            record = {"train": float(total) / n_seen,
                      **{f"train_{k}": float(v) / n_seen for k, v in terms_sum.items()}}
            record.update(self._validate(model, data, val_idx, val_w, objective))
            if record["validation"] is None:  # no validation frames: early-stop on the training loss
                record["validation"] = record["train"]
            records.append(record)
            if not epochs.disable:
                epochs.set_postfix(train=f"{record['train']:.4g}", validation=f"{record['validation']:.4g}")
            stop = False
            if record["validation"] < best[0]:
                best = (record["validation"], epoch, copy.deepcopy(model.state_dict()))
            elif epoch - best[1] >= self.patience:
                logger.info("early stopping at epoch %d, best epoch %d", epoch, best[1])
                stop = True
            last = stop or epoch == self.max_epochs - 1
            if self.checkpoint is not None and (last or (epoch + 1) % self.checkpoint_every == 0):
                self._save(key, epoch, model, optimizer, generator, records, best, stop, initial, device)
            if stop:
                break
        return records, best, initial, stop

    @staticmethod
    def _evaluate(model, data, index, weights, chunk=65536):
        """Weighted mean validation loss, evaluated in chunks without gradients."""
        model.eval()
        with torch.no_grad():
            terms = {}
            for start in range(0, len(index[0]), chunk):
                x = data[index[0][start:start + chunk].to(data.device)]
                y = data[index[1][start:start + chunk].to(data.device)]
                for name, value in model.loss_terms(x, y).items():
                    terms.setdefault(name, []).append(value)
            total = sum(weighted_mean(torch.cat(values), weights) for values in terms.values())
        return float(total)
