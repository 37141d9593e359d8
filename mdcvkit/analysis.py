"""MDAnalysis-style analysis classes: :class:`AutoencoderCV` learns a CV from the frames of a trajectory."""

import inspect
from pathlib import Path

import MDAnalysis as mda
import numpy as np
import torch
import xarray as xr
from MDAnalysis.analysis.base import AnalysisBase
from torch import nn

from . import generation, importance
from ._checks import check_frames, check_int, check_number, check_slice
from ._io import atomic_path, load_torch
from ._params import data_digest, get_params, plain
from ._progress import resolve_verbose
from .features import (
    AlignedPositions,
    FeatureCollector,
    Positions,
    atom_names,
    featurizer_config,
    featurizer_from_config,
    kabsch_align,
    make_featurizer,
)
from .models import ACTIVATIONS, MODELS, Normalization, apply_in_chunks
from .models.base import check_hidden
from .training import Trainer, normalize_weights

__all__ = ["CollectiveVariable", "AutoencoderCV"]

#: Version of the file format written by :meth:`AutoencoderCV.save`.
FILE_FORMAT = 1


class CollectiveVariable(nn.Module):
    """The fitted CV: positions (Å) -> featurizer -> normalisation -> encoder -> CV.

    Parameters
    ----------
    featurizer : Featurizer
    model : BaseAutoencoder
        Fitted model; its ``encode`` gives the CV (the encoder mean for
        probabilistic models, so the CV is deterministic).

    Notes
    -----
    ``forward(positions, box=None)`` takes ``(n_frames, n_atoms, 3)`` positions
    in Å (and, for periodic distance features, ``(n_frames, 3, 3)`` box row
    vectors in Å) and returns ``(n_frames, n_cv)``. It is differentiable, so
    autograd gives ∇ξ for bias forces.
    """

    def __init__(self, featurizer, model):
        super().__init__()
        self.featurizer = featurizer
        self.model = model

    @classmethod
    def from_featurizer(cls, featurizer, *, mean=0.0, scale=1.0, names=None):
        """A CV whose components are the features themselves, ``(feature - mean) / scale``.

        E.g. the dihedral φ in rad (``Dihedrals(n_atoms, [phi], trig=False)``) or a toy's reduced
        coordinates. It compiles to an OpenMM expression and exports to PLUMED like any CV.

        Parameters
        ----------
        featurizer : Featurizer
        mean, scale : float or array_like of shape (n_features,), default 0 and 1
            In feature units; ``scale`` must be positive.
        names : sequence of str, optional
            Names of the components (the grid names of samplers); default the feature labels.

        Returns
        -------
        CollectiveVariable
        """
        n = featurizer.n_features
        mean = torch.as_tensor(np.broadcast_to(np.asarray(mean, dtype=float), (n,)).copy())
        scale = torch.as_tensor(np.broadcast_to(np.asarray(scale, dtype=float), (n,)).copy())
        if not torch.all(scale > 0):
            raise ValueError(f"scale={scale.tolist()} must be positive, one value or one per feature")
        cv = cls(featurizer, _FeatureMap(mean, scale))
        cv.names = list(featurizer.labels) if names is None else [str(k) for k in names]
        if len(cv.names) != n:
            raise ValueError(f"names={names!r} has {len(cv.names)} entries for {n} features; give one per feature")
        return cv


    @property
    def n_cv(self):
        """Number of CVs."""
        return self.model.n_cv

    def forward(self, positions, box=None):
        return self.model.encode(self.featurizer(positions, box))


class _FeatureMap(nn.Module):
    """The model of :meth:`CollectiveVariable.from_featurizer`: standardised features, no network."""

    def __init__(self, mean, scale):
        super().__init__()
        self.n_cv = len(mean)
        self.normalization = Normalization(self.n_cv)
        self.normalization.mean.copy_(mean.to(self.normalization.mean.dtype))
        self.normalization.scale.copy_(scale.to(self.normalization.scale.dtype))
        self.encoder = nn.Sequential()

    def encode(self, x):
        return self.encoder(self.normalization(x))

    def forward(self, x):
        return self.encode(x)


def _check_atomgroup(atomgroup, name="atomgroup"):
    if not isinstance(atomgroup, mda.core.groups.AtomGroup):
        raise TypeError(
            f"{name} must be an MDAnalysis AtomGroup (e.g. u.select_atoms('not name H*')), "
            f"not {type(atomgroup).__name__}"
        )
    if atomgroup.n_atoms == 0:
        raise ValueError(f"{name} is empty (0 atoms); check the selection string")


def _segments(atomgroup):
    """First frame index of each trajectory of a Universe (several for a ChainReader)."""
    trajectory = atomgroup.universe.trajectory
    starts = getattr(trajectory, "_start_frames", None)
    return np.asarray(starts[:-1] if starts is not None else [0], dtype=np.int64)


class AutoencoderCV(AnalysisBase):
    """Learn a collective variable with an autoencoder from the frames of a trajectory.

    Parameters
    ----------
    atomgroup : AtomGroup or list of AtomGroup
        Atoms the CV is computed from. A list gives several trajectories (one
        Universe each, same atoms); a Universe over several files also counts
        as several trajectories. Validation blocks, lagged pairs and MSM
        counts never cross trajectory boundaries.
    n_cv : int, default 2
        Dimension of the CV (the bottleneck).
    model : str, default "ae"
        One of :data:`mdcvkit.models.MODELS`: ``"ae"`` (deterministic),
        ``"tae"`` (time-lagged), ``"vae"`` (variational), ``"gmvae"``
        (Gaussian-mixture VAE), ``"wae"`` (Wasserstein, MMD), ``"dae"``
        (denoising). Settings of the model itself (``beta``, ``n_clusters``,
        ``mmd_weight``, ``kernel_bandwidth``, ``noise``) go in ``**model_kwargs``;
        one that the chosen model does not take raises a ValueError.
    features : str, list of str or Featurizer, default "aligned"
        ``"aligned"`` (Kabsch-fitted positions), ``"positions"`` (raw),
        ``"distances"`` (all pairs, minimum image when the Universe has a
        box), ``"dihedrals"`` (backbone φ/ψ as sin/cos), a list of them, or a
        featurizer built for ``atomgroup``.
    reference : {"first", "mean"} or array_like, default "first"
        Reference structure of the ``"aligned"`` features: the first analysed
        frame, the (weighted) mean structure after iterative alignment, or
        given positions (n_atoms, 3) in Å.
    hidden : sequence of int, default (40,)
        Hidden layer sizes of the encoder (the decoder mirrors them).
    activation : {"tanh", "relu", "elu", None}, default "tanh"
    weights, log_weights : array_like, shape (n_frames,), optional
        Per-frame weights of the analysed frames (e.g. FEBILAE reweighting of
        biased frames); pass ``log_weights`` for large biases.
    lag : int, default 0
        Lag in analysed frames for time-lagged models, below the longest
        trajectory. ``model="tae"`` needs ``lag >= 1`` (no default: the lag sets
        the timescale the CV resolves); with ``"gmvae"`` a lag gives the
        time-lagged variant.
    max_epochs, batch_size, learning_rate, patience, validation_fraction, device, seed
        Passed to :class:`mdcvkit.training.Trainer`.
    checkpoint : str or path-like, optional
        Training-state file of :class:`~mdcvkit.training.Trainer`: written every
        10 epochs, and a run interrupted during training resumes from it
        (features are computed again; the model comes out the same).
    chunk_size : int, default 1000
        Frames read per batched featurizer call.
    memory_budget : float, default 2e9
        Bytes of features kept in memory before spilling to a memory-mapped file.
    **model_kwargs
        Further settings of the chosen model.

    Attributes
    ----------
    results.cv : xarray.DataArray, dims ("frame", "cv")
        CV of every analysed frame; coords ``frame``, ``time`` (ps) and ``trajectory``.
    results.loss : xarray.Dataset, dim "epoch"
        Training and validation loss.
    results.model : CollectiveVariable
        The fitted CV module, positions (Å) -> CV.
    results.features : numpy.ndarray, shape (n_frames, n_features)
        The training features.
    results.validation : numpy.ndarray of bool, shape (n_frames,)
        Frames held out for validation.
    results.clusters : xarray.Dataset, dims ("frame", "cluster")
        ``model="gmvae"`` only: ``assignment`` (most probable cluster of
        each frame) and ``probability`` (soft assignment q(y|x), rows sum to 1).

    Examples
    --------
    >>> import mdcvkit as mk
    >>> u = mk.datasets.alanine_dipeptide()
    >>> cv = mk.AutoencoderCV(u.select_atoms("not name H*"), n_cv=2, seed=0).run(step=10)
    >>> cv.results.cv.shape  # doctest: +SKIP
    (10000, 2)

    References
    ----------
    Z. Belkacemi, P. Gkeka, T. Lelièvre, G. Stoltz, "Chasing collective variables using
    autoencoders and biased trajectories", J. Chem. Theory Comput. 18, 59 (2022).
    """

    def __init__(self, atomgroup, n_cv=2, *, model="ae", features="aligned", reference="first",
                 hidden=(40,), activation="tanh", weights=None, log_weights=None, lag=0,
                 max_epochs=200, batch_size=256, learning_rate=1e-3, patience=20,
                 validation_fraction=0.2, device="auto", seed=0, checkpoint=None, chunk_size=1000,
                 memory_budget=2e9, **model_kwargs):
        groups = list(atomgroup) if isinstance(atomgroup, (list, tuple)) else [atomgroup]
        if not groups:
            raise ValueError("atomgroup is an empty list; pass an AtomGroup or a list of AtomGroups")
        for k, group in enumerate(groups):
            _check_atomgroup(group, "atomgroup" if len(groups) == 1 else f"atomgroup[{k}]")
            _check_atoms(group, _atom_table(groups[0]), f"atomgroup[{k}]", "atomgroup[0] has",
                         "every trajectory needs the same atoms in the same order")
        super().__init__(groups[0].universe.trajectory)
        if model not in MODELS:
            raise ValueError(f"model={model!r} is not known; use one of {sorted(MODELS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not known; use one of {list(ACTIVATIONS)}")
        if isinstance(reference, str) and reference not in ("first", "mean"):
            raise ValueError(f"reference={reference!r} is not known; use 'first', 'mean' or positions (n_atoms, 3)")
        check_int(n_cv, "n_cv")
        check_int(lag, "lag", 0, "pass the lag in frames, e.g. lag=10")
        _check_model_settings(model, lag, model_kwargs)
        self._groups = groups
        self.n_cv = int(n_cv)
        self.model_name = model
        self.features = features
        self.reference = reference
        self.hidden = check_hidden(hidden)  # hidden=40 or "40" is an error here, not a tuple of digits
        self.activation = activation
        self.weights = weights
        self.log_weights = log_weights
        self.lag = int(lag)
        self.model_kwargs = model_kwargs
        self.trainer = Trainer(max_epochs=max_epochs, batch_size=batch_size, learning_rate=learning_rate,
                               patience=patience, validation_fraction=validation_fraction, device=device,
                               seed=seed, checkpoint=checkpoint)
        self.seed = seed
        self.chunk_size = check_int(chunk_size, "chunk_size", fix="pass frames per batch, e.g. chunk_size=1000")
        if isinstance(memory_budget, (bool, str, bytes)):
            raise ValueError(f"memory_budget={memory_budget!r} must be a number of bytes, e.g. memory_budget=2e9")
        self.memory_budget = check_number("memory_budget", memory_budget, strict=True, example="2e9 (bytes)")
        # cheap checks before the trajectory loop: the featurizer can be built for these atoms
        self._featurizer = make_featurizer(features, groups[0], self._reference_positions(groups[0]),
                                           periodic=groups[0].dimensions is not None)
        if self.n_cv >= self._featurizer.n_features:
            raise ValueError(
                f"n_cv={n_cv} must be smaller than the number of features ({self._featurizer.n_features} "
                f"from features={features!r} on {groups[0].n_atoms} atoms); lower n_cv or select more atoms"
            )
        self._atoms = _atom_table(groups[0])
        # settings of the chosen model fail here, not after the trajectory loop (e.g. n_clusters=1)
        MODELS[model](self._featurizer.n_features, self.n_cv, hidden=self.hidden, activation=activation,
                      scale_groups=self._featurizer.scale_groups, **model_kwargs)

    def _reference_positions(self, group):
        if isinstance(self.reference, str):
            return group.positions
        reference = np.asarray(self.reference, dtype=np.float32)
        if reference.shape != (group.n_atoms, 3):
            raise ValueError(
                f"reference has shape {reference.shape}; pass positions of shape ({group.n_atoms}, 3) in Å"
            )
        return reference

    def get_params(self):
        """Settings of this estimator, read back from its ``__init__`` signature (deeptime's ``get_params``).

        Every keyword but ``atomgroup`` is read from the attribute of the same name, else from the
        trainer's (``max_epochs``, ``batch_size``, …); ``model`` is the model's name, and the model's own
        settings (``**model_kwargs``) are merged in. Values are the stored objects, not copies.

        Returns
        -------
        dict
            ``type(cv)(atomgroup, **cv.get_params())`` builds an unfitted twin on other frames (how
            :class:`~mdcvkit.biasing.IterativeCVLearning` trains each iteration).

        Raises
        ------
        ValueError
            For a CV read with :meth:`load`, which keeps the model but not the training settings.
        """
        if not hasattr(self, "trainer"):
            raise ValueError("get_params() needs the settings of an AutoencoderCV built with __init__; one read "
                             "by load() keeps only the fitted CV: build AutoencoderCV(...) with the settings")
        params = {}
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name in ("self", "atomgroup") or parameter.kind == parameter.VAR_KEYWORD:
                continue
            stored = self.model_name if name == "model" else getattr(self, name, None)
            params[name] = stored if name == "model" or hasattr(self, name) else getattr(self.trainer, name)
        return {**params, **self.model_kwargs}

    def run(self, start=None, stop=None, step=None, frames=None, verbose=None, *, backend="serial",
            n_workers=None):
        """Read the frames, compute features, train the model and compute the CV.

        Parameters
        ----------
        start, stop, step : int, optional
            Slice of each trajectory to analyse.
        frames : array_like of int or bool, optional
            Frames to analyse instead of a slice (single trajectory only).
        verbose : bool or None, default None
            Progress bars for reading and training; None shows them when stderr is a terminal, False
            silences them.
        backend : {"serial", "multiprocessing", "dask"}, default "serial"
            MDAnalysis parallel backend for reading and featurisation.
        n_workers : int, optional
            Workers of a parallel backend.

        Returns
        -------
        self
        """
        if frames is not None and len(self._groups) > 1:
            raise ValueError("frames= selects frames of one trajectory; with a list of AtomGroups use start/stop/step")
        check_slice(start, stop, step)
        if frames is not None:
            check_frames(frames, self._groups[0].universe.trajectory.n_frames)
        self._setup_reference(start, stop, step, frames)
        features, frame_idx, times, trajectory, lengths = [], [], [], [], []
        for group in self._groups:
            collector = _collect_features(group, self._featurizer, self.chunk_size, self.memory_budget,
                                          start=start, stop=stop, step=step, frames=frames,
                                          verbose=resolve_verbose(verbose), backend=backend, n_workers=n_workers)
            segment = np.searchsorted(_segments(group), collector.frames, side="right") - 1
            features.append(collector.results.features)
            frame_idx.append(collector.frames)
            times.append(collector.times)
            trajectory.append(segment + (trajectory[-1][-1] + 1 if trajectory and len(trajectory[-1]) else 0))
            lengths.extend(_run_lengths(segment, collector.frames))
        self.frames = np.concatenate(frame_idx)
        self.times = np.concatenate(times)
        self.n_frames = len(self.frames)
        self._trajectory = np.concatenate(trajectory)
        self._lengths = lengths
        self.results.features = features[0] if len(features) == 1 else np.concatenate(features)
        self.trainer.verbose = verbose
        self._conclude()
        return self

    def _setup_reference(self, start, stop, step, frames):
        """Build the featurizer on the reference structure of this run."""
        if not isinstance(self.features, str) or self.features != "aligned":
            return
        group = self._groups[0]
        first = next(iter(np.arange(group.universe.trajectory.n_frames)[slice(start, stop, step)]
                          if frames is None else np.arange(group.universe.trajectory.n_frames)[frames]), None)
        if first is None:
            raise ValueError(f"start={start}, stop={stop}, step={step}, frames select no frame of the trajectory")
        if isinstance(self.reference, str):
            group.universe.trajectory[int(first)]
            reference = group.positions.copy()
        else:
            reference = self._reference_positions(group)
        if not np.all(np.isfinite(reference)):
            raise ValueError(f"frame {first} has NaN or infinite coordinates; it cannot be the reference structure")
        self._featurizer = AlignedPositions(reference, names=atom_names(group))

    def _conclude(self):
        features = self.results.features
        p = normalize_weights(len(features), self.weights, self.log_weights)
        if isinstance(self._featurizer, AlignedPositions) and isinstance(self.reference, str) \
                and self.reference == "mean":
            features = self._realign_to_mean(features, p)
            self.results.features = features
        if self.lag >= max(self._lengths):
            raise ValueError(
                f"lag={self.lag} must be smaller than the longest trajectory ({max(self._lengths)} analysed "
                "frames, after start/stop/step/frames); pass a smaller lag or run over more frames"
            )
        self.trainer._context = _features_fingerprint(self)  # a resumed checkpoint names these when they differ
        fit = self._fit(features, p, self.seed, self.trainer)
        self.results.model = CollectiveVariable(self._featurizer, fit.model.cpu()).eval()
        self.results.loss = fit.history.assign_attrs(units="normalised features²")
        self.results.validation = fit.validation
        self.results.cv = self._cv_array(self._encode(features), self.frames, self.times, self._trajectory)
        if hasattr(fit.model, "cluster_probabilities"):
            self.results.clusters = self._clusters(features)

    def _fit(self, features, p, seed, trainer):
        """A fresh model of this estimator's settings, initialised from ``seed`` and fitted by ``trainer`` on
        ``features`` with frame probabilities ``p`` (also the members of :func:`mdcvkit.uncertainty.deep_ensemble`)."""
        torch.manual_seed(seed)
        model = MODELS[self.model_name](features.shape[1], self.n_cv, hidden=self.hidden,
                                        activation=self.activation,
                                        scale_groups=self._featurizer.scale_groups, **self.model_kwargs)
        return trainer.fit(model, features, weights=p, lengths=self._lengths, lag=self.lag)

    def _clusters(self, features, chunk=65536):
        """``results.clusters`` of a mixture model: hard and soft cluster assignment of each frame."""
        p = apply_in_chunks(self.results.model.model.cluster_probabilities, features, chunk)
        coords = {"frame": self.frames, "time": ("frame", np.asarray(self.times, dtype=float)),
                  "trajectory": ("frame", self._trajectory), "cluster": np.arange(p.shape[1])}
        return xr.Dataset(
            {"assignment": ("frame", p.argmax(axis=1), {"long_name": "most probable cluster"}),
             "probability": (("frame", "cluster"), p, {"long_name": "cluster probability q(y|x)"})},
            coords=coords, attrs={"time_units": "ps"})

    def _realign_to_mean(self, features, p, iterations=3):
        """Iteratively realign the aligned positions to their weighted mean structure."""
        positions = torch.from_numpy(np.asarray(features)).reshape(len(features), -1, 3)
        w = None if p is None else torch.as_tensor(p)
        for _ in range(iterations):
            mean = (positions.mean(0) if w is None else (w[:, None, None] * positions.double()).sum(0).float())
            positions = kabsch_align(positions, mean)
        self._featurizer = AlignedPositions(mean.numpy(), names=self._featurizer.names)
        return positions.reshape(len(features), -1).numpy()

    def _encode(self, features, chunk=65536):
        return apply_in_chunks(self.results.model.model.encode, features, chunk)

    @staticmethod
    def _cv_array(values, frames, times, trajectory):
        return xr.DataArray(
            values, dims=("frame", "cv"),
            coords={"frame": np.asarray(frames), "time": ("frame", np.asarray(times, dtype=float)),
                    "trajectory": ("frame", np.asarray(trajectory)), "cv": np.arange(values.shape[1])},
            attrs={"long_name": "autoencoder CV", "units": "dimensionless", "time_units": "ps"},
        )

    def _check_fitted(self, call):
        if not hasattr(self.results, "model"):
            raise ValueError(f"this AutoencoderCV is not fitted yet; call run() before {call}()")

    def transform(self, atomgroup, start=None, stop=None, step=None, frames=None, *, backend="serial",
                  n_workers=None):
        """CV of the frames of another trajectory (same atoms as in training).

        Parameters
        ----------
        atomgroup : AtomGroup
            Same atom names, in the same order, as the training atoms.
        start, stop, step, frames, backend, n_workers
            As in :meth:`run`.

        Returns
        -------
        xarray.DataArray, dims ("frame", "cv")
            Like ``results.cv``.
        """
        self._check_fitted("transform")
        collector = self._collect(atomgroup, start=start, stop=stop, step=step, frames=frames, backend=backend,
                                  n_workers=n_workers)
        segment = np.searchsorted(_segments(atomgroup), collector.frames, side="right") - 1
        if len(collector.frames) == 0:
            raise ValueError(f"start={start}, stop={stop}, step={step}, frames select no frame of the "
                             f"{atomgroup.universe.trajectory.n_frames} frames of the trajectory; e.g. start < stop")
        return self._cv_array(self._encode(collector.results.features), collector.frames, collector.times, segment)

    def _collect(self, atomgroup, **run_kwargs):
        """Features of the frames of ``atomgroup`` (the training atoms), as a run FeatureCollector."""
        _check_atomgroup(atomgroup)
        check_slice(run_kwargs.get("start"), run_kwargs.get("stop"), run_kwargs.get("step"))
        if run_kwargs.get("frames") is not None:
            check_frames(run_kwargs["frames"], atomgroup.universe.trajectory.n_frames)
        _check_atoms(atomgroup, self._atoms, "atomgroup", "the CV was trained on",
                     "select the same atoms in the same order")
        collector = _collect_features(atomgroup, self.results.model.featurizer, self.chunk_size,
                                      self.memory_budget, **run_kwargs)
        return collector

    def save(self, path):
        """Save the fitted CV (featurizer, model, atoms) to ``path``; written atomically.

        The file records the names and count of the atoms it expects; reload
        with :meth:`load`, which gives bit-identical CVs.
        """
        self._check_fitted("save")
        cv = self.results.model
        payload = {
            "format": FILE_FORMAT,
            "kind": "mdcvkit.AutoencoderCV",
            "atoms": self._atoms,
            "featurizer": featurizer_config(cv.featurizer),
            "model": {"name": self.model_name, **get_params(cv.model)},
            "state_dict": cv.state_dict(),
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return Path(path)

    @classmethod
    def load(cls, path):
        """Load a CV saved with :meth:`save`; the result can ``transform`` new frames.

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist.
        ValueError
            When the file is not a saved mdcvkit CV.
        """
        what = "a CV saved by mdcvkit's AutoencoderCV.save"
        payload = load_torch(path, what)
        if not isinstance(payload, dict) or payload.get("kind") != "mdcvkit.AutoencoderCV":
            raise ValueError(f"path={str(path)!r} holds a torch file, but not {what}; pass the file save() wrote")
        if payload.get("format", 0) > FILE_FORMAT:
            raise ValueError(f"path={str(path)!r} has file format {payload['format']}, newer than this mdcvkit reads "
                             f"({FILE_FORMAT}); upgrade mdcvkit")
        try:
            settings = dict(payload["model"])
            name = settings.pop("name")
            featurizer = featurizer_from_config(payload["featurizer"])
            model = MODELS[name](**settings)
            module = CollectiveVariable(featurizer, model)
            module.load_state_dict(payload["state_dict"])
        except Exception as err:  # any failure here means the file is not what save() writes
            raise ValueError(
                f"path={str(path)!r} is not {what} ({type(err).__name__}: {err}); save it again"
            ) from err
        self = cls.__new__(cls)
        AnalysisBase.__init__(self, None)
        self.model_name, self.n_cv = name, settings.pop("n_cv")
        self.hidden, self.activation = tuple(settings.pop("hidden")), settings.pop("activation")
        settings.pop("n_features")
        settings.pop("scale_groups")
        self.model_kwargs = settings
        self._atoms = payload["atoms"]
        defaults = inspect.signature(cls.__init__).parameters  # reading settings of a fresh instance
        self.chunk_size, self.memory_budget = defaults["chunk_size"].default, defaults["memory_budget"].default
        self.results.model = module.eval()
        return self

    def decode(self, z):
        """Decode latent points (CV values) into structures or features.

        Parameters
        ----------
        z : array_like or xarray.DataArray, shape (n, n_cv)
            Latent points, e.g. a path through CV space or ``results.cv``;
            must be finite.

        Returns
        -------
        MDAnalysis.Universe or xarray.DataArray
            For ``"aligned"`` or ``"positions"`` features an in-memory
            Universe with the training atoms' topology (names, residues,
            bonds when the source had them) and one frame per latent point,
            positions in Å (``"aligned"``: in the frame of the reference
            structure); write it with any MDAnalysis writer. For other
            features a DataArray of decoded features, dims ("sample",
            "feature"). See :mod:`mdcvkit.generation`.
        """
        self._check_fitted("decode")
        return generation.decode(self.results.model, z, self._atoms)

    def generate(self, n, seed=0, cluster=None):
        """Sample ``n`` latent points from the model's prior and decode them.

        Only models with a prior can generate: ``"vae"`` and ``"wae"`` (N(0,
        I)) and ``"gmvae"`` (the Gaussian mixture, or one component with
        ``cluster=k``). For the deterministic ``"ae"``, ``"tae"`` and
        ``"dae"`` use :meth:`decode` with latent points of your choice.

        Parameters
        ----------
        n : int
            Number of samples.
        seed : int, default 0
            Seed of the prior samples.
        cluster : int, optional
            ``"gmvae"`` only: sample mixture component ``cluster``
            (0 ≤ cluster < n_clusters).

        Returns
        -------
        MDAnalysis.Universe or xarray.DataArray
            As :meth:`decode`: a Universe with ``n`` frames for position
            features, otherwise a DataArray of decoded features.
        """
        self._check_fitted("generate")
        return generation.generate(self.results.model, n, self._atoms, seed=seed, cluster=cluster)

    def feature_importance(self, per="feature", normalized=True, *, atomgroup=None, start=None, stop=None,
                           step=None):
        """Sensitivity of each CV to each input feature, mapped to atoms or residues.

        Mean absolute gradient of the CV with respect to the (normalised)
        features, see :func:`mdcvkit.importance.feature_importance`: over the
        analysed frames, weighted like the training, or, with ``atomgroup``,
        over the frames of that trajectory (uniform weights), which is how a
        CV read with :meth:`load` is analysed.

        Parameters
        ----------
        per : {"feature", "atom", "residue"}, default "feature"
        normalized : bool, default True
        atomgroup : AtomGroup, optional
            The training atoms (same names, same order) in a trajectory to
            average over.
        start, stop, step : int, optional
            Slice of that trajectory.

        Returns
        -------
        xarray.DataArray, dims ("cv", per)
            Plot with :func:`mdcvkit.plot.feature_importance`.
        """
        self._check_fitted("feature_importance")
        if atomgroup is not None:
            features = self._collect(atomgroup, start=start, stop=stop, step=step).results.features
            p = None
        elif hasattr(self.results, "features"):
            features = self.results.features
            p = normalize_weights(len(features), self.weights, self.log_weights)
        else:
            raise ValueError("feature_importance() of a loaded CV needs frames to average over: pass "
                             "atomgroup= (the training atoms in a trajectory), e.g. atomgroup=u.select_atoms(...)")
        return importance.feature_importance(self.results.model, features, self._atoms, weights=p, per=per,
                                             normalized=normalized)

    def top_k(self, k):
        """A new, unfitted AutoencoderCV with the same settings on the ``k`` most important inputs.

        Importance is :meth:`feature_importance` summed over CVs. For
        ``"distances"`` the ``k`` most important pairs are kept, for
        ``"dihedrals"`` the ``k`` most important dihedrals (sin and cos
        together); for ``"aligned"`` or ``"positions"`` the ``k`` most
        important atoms (a sub-selection of the AtomGroup, so a coordinate is
        never split from its atom). Call ``run`` on the result with the same
        frames to retrain.

        Parameters
        ----------
        k : int
            Number of pairs, dihedrals or atoms to keep.

        Returns
        -------
        AutoencoderCV
            Not yet run.
        """
        self._check_fitted("top_k")
        if not hasattr(self, "_groups"):
            raise ValueError("top_k() needs the training atoms, which a loaded CV does not keep; "
                             "call it on the AutoencoderCV that ran")
        settings = dict(n_cv=self.n_cv, model=self.model_name, reference=self.reference, hidden=self.hidden,
                        activation=self.activation, weights=self.weights, log_weights=self.log_weights,
                        lag=self.lag, max_epochs=self.trainer.max_epochs, batch_size=self.trainer.batch_size,
                        learning_rate=self.trainer.learning_rate, patience=self.trainer.patience,
                        validation_fraction=self.trainer.validation_fraction, device=self.trainer.device,
                        seed=self.seed, chunk_size=self.chunk_size, memory_budget=self.memory_budget,
                        **self.model_kwargs)
        groups = self._groups
        if isinstance(self._featurizer, (AlignedPositions, Positions)):
            n_atoms = groups[0].n_atoms
            if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 3 <= k <= n_atoms:
                raise ValueError(f"k={k!r} must be an integer in [3, {n_atoms}] atoms for position features")
            scores = self.feature_importance(per="atom").sum("cv").values
            keep = np.sort(np.argsort(-scores, kind="stable")[:k])
            groups = [group[keep] for group in groups]
            if not isinstance(self.reference, str):
                settings["reference"] = np.asarray(self.reference)[keep]
            features = self.features
        else:
            scores = self.feature_importance().sum("cv").values
            features = importance.top_k_featurizer(self._featurizer, scores, k)
        return type(self)(groups if len(groups) > 1 else groups[0], features=features, **settings)

    def to_plumed(self, folder, *, label="cv", temperature=300.0):
        """Export the CV for PLUMED: a traced model for ``PYTORCH_MODEL`` and a ``plumed.dat``.

        PLUMED computes the inputs of the model for the training atoms, whose
        indices in the simulated system are the AtomGroup's indices:
        ``TORSION`` for dihedral features, ``DISTANCE`` for non-periodic
        distances, the ``POSITION`` of each atom for aligned and body-frame
        coordinates (the model fits or builds the frame itself). See
        :func:`mdcvkit.export.to_plumed`.

        Parameters
        ----------
        folder : str or path-like
            Output folder (created when missing).
        label : str, default "cv"
            PLUMED label of the model; components are ``{label}.node-k``.
        temperature : float, default 300
            Temperature (K) of the commented bias examples in ``plumed.dat``.

        Returns
        -------
        pathlib.Path
            Path of ``plumed.dat``.

        Raises
        ------
        ValueError
            Before :meth:`run`.
        """
        self._check_fitted("to_plumed")
        from .export import to_plumed

        return to_plumed(self.results.model, folder, particles=self._atoms["indices"], label=label,
                         temperature=temperature)

    def to_torchscript(self, path):
        """Export the CV (positions in Å -> CV) as TorchScript, loadable with ``torch.jit.load``.

        The exported module takes positions ``(n_frames, n_atoms, 3)`` in Å
        (float32) and, for periodic distance features, the box ``(n_frames,
        3, 3)`` in Å as second argument; inputs of another atom count or
        without the frame axis raise an error naming the exported shape.
        Written atomically. TorchScript is deprecated in recent torch releases
        but is what PLUMED's PYTORCH_MODEL and OpenMM-Torch load.
        """
        self._check_fitted("to_torchscript")
        from .export import to_torchscript

        return to_torchscript(self.results.model, path)


def _atom_table(group):
    """What identifies the atoms of ``group``: only the attributes its topology has (any Universe works).

    ``names`` are always there (the indices as strings when the topology has no names, see
    :func:`mdcvkit.features.atom_names`), with ``has_names`` saying which; ``resnames``, ``resids``,
    ``masses``, ``segids`` and ``bonds`` only when the topology has them.
    """
    table = {"names": atom_names(group), "has_names": hasattr(group, "names"),
             "indices": [int(i) for i in group.indices]}
    for attribute, cast in (("resnames", str), ("resids", int), ("masses", float), ("segids", str)):
        if hasattr(group, attribute):  # MDAnalysis' NoDataError is an AttributeError
            table[attribute] = [cast(value) for value in getattr(group, attribute)]
    if hasattr(group, "intra_bonds"):  # bonds as pairs of positions within the group, for generated frames
        position = {int(index): k for k, index in enumerate(group.indices)}
        table["bonds"] = [[position[int(i)], position[int(j)]] for i, j in group.intra_bonds.indices]
    return table


#: Atom attributes compared by :func:`_check_atoms` where both sides have them, with their tolerance
#: (None: equal). Segment ids are not compared: the same atoms often carry other ones in other files.
_COMPARED = {"names": ("name", None), "resnames": ("resname", None), "resids": ("resid", None),
             "masses": ("mass", 0.1)}


def _check_atoms(group, table, name, trained, fix):
    """Raise ValueError unless ``group`` holds the atoms of ``table`` in the same order.

    Compares the count, then names, residue names, residue ids and masses (within 0.1 u) wherever the
    table and the topology of ``group`` both have them; the message names the first atom that differs.
    """
    n = len(table["names"])
    if group.n_atoms != n:
        raise ValueError(f"{name} has {group.n_atoms} atoms, but {trained} {n} atoms; {fix}")
    other = _atom_table(group)
    for attribute, (singular, tolerance) in _COMPARED.items():
        if attribute == "names" and not (table.get("has_names", True) and other["has_names"]):
            continue
        if attribute not in table or attribute not in other:
            continue
        mine, theirs = np.asarray(other[attribute]), np.asarray(table[attribute])
        differ = np.abs(mine - theirs) > tolerance if tolerance is not None else mine != theirs
        if np.any(differ):
            k = int(np.flatnonzero(differ)[0])
            raise ValueError(
                f"{name} does not hold the same atoms: its atom {k} has {singular} {mine[k].item()!r}, but "
                f"{trained} {theirs[k].item()!r} there ({int(np.sum(differ))} of {n} atoms differ in "
                f"{attribute}); {fix}")


def _features_fingerprint(cv):
    """What made the training features of ``cv``, for its checkpoint fingerprint, in words a message can show."""
    frames = np.asarray(cv.frames)
    given = cv.features if isinstance(cv.features, (str, list, tuple)) else type(cv.features).__name__
    reference = cv.reference if isinstance(cv.reference, str) else data_digest(np.asarray(cv.reference))
    return {"features": plain(given), "reference": reference, "n_atoms": len(cv._atoms["names"]),
            "frames": [len(frames), *([int(frames[0]), int(frames[-1])] if len(frames) else [])]}


def _collect_features(group, featurizer, chunk_size, memory_budget, **run_kwargs):
    """Run a :class:`~mdcvkit.features.FeatureCollector` (its temporary feature file is unlinked as it is made)."""
    return FeatureCollector(group, featurizer, chunk_size=chunk_size, memory_budget=memory_budget).run(**run_kwargs)


#: Settings every model takes from AutoencoderCV itself, not from ``**model_kwargs``.
_COMMON_SETTINGS = {"self", "n_features", "n_cv", "hidden", "activation", "scale_groups"}


def _check_model_settings(model, lag, model_kwargs):
    """Reject settings that do not belong to ``model`` and a missing lag for time-lagged models."""
    parameters = inspect.signature(MODELS[model].__init__).parameters
    valid = [name for name in parameters if name not in _COMMON_SETTINGS]
    unknown = sorted(set(model_kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"{', '.join(f'{k}={model_kwargs[k]!r}' for k in unknown)} not a setting of model={model!r}; "
            f"its own settings are {valid or 'none'} (choose the model that has this setting)"
        )
    if getattr(MODELS[model], "time_lagged", False) and lag < 1:
        raise ValueError(
            f"model={model!r} is time-lagged and needs lag >= 1 (frames), got lag={lag}; pass e.g. lag=10"
        )


def _run_lengths(segment, frames):
    """Lengths of runs of rows from one trajectory with a regular frame step (breaks at gaps)."""
    if len(frames) == 0:
        return []
    steps = np.diff(frames)
    regular = np.median(steps) if len(steps) else 1
    breaks = np.flatnonzero((np.diff(segment) != 0) | (steps != regular)) + 1
    return np.diff(np.concatenate([[0], breaks, [len(frames)]])).tolist()

