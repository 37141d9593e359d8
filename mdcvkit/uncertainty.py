"""Credible intervals of what a generative model predicts: a Laplace posterior or a deep ensemble.

A fitted generative CV (``mk.AutoencoderCV(..., model="vae")``) predicts observables by sampling
structures: z ~ N(0, I), x ~ p(x | z, θ). With a point estimate θ_MAP that gives one number, with no
sense of whether the training frames were enough. Here θ has a distribution: draws from the Laplace
posterior of the decoder (:func:`laplace_posterior`, :mod:`mdcvkit.models.laplace`) or the members of
a deep ensemble (:func:`deep_ensemble`). For each draw :meth:`Posterior.predict` samples structures,
evaluates the observable, and returns the posterior mean and credible interval of the observable's
mean and of its histogram as an xarray Dataset; :func:`mdcvkit.plot.predicted_distribution` draws it.

>>> cv = mk.AutoencoderCV(heavy, n_cv=2, model="vae", decoder_prior="ard").run(frames=frames)  # doctest: +SKIP
>>> ds = mk.uncertainty.laplace_posterior(cv).predict("rg", n_samples=100)                    # doctest: +SKIP
"""


import numpy as np
import torch
import xarray as xr
from MDAnalysis.coordinates.memory import MemoryReader
from scipy.stats import norm

from ._checks import check_int, check_number, check_seed, is_int
from ._params import get_params
from .analysis import AutoencoderCV
from .features import AlignedPositions, Positions
from .generation import _subset_table, topology_universe
from .models.laplace import fit_laplace
from .physics.objective import draw
from .training import Trainer, normalize_weights

__all__ = ["Posterior", "LaplacePosterior", "DeepEnsemble", "laplace_posterior", "deep_ensemble",
           "radius_of_gyration", "MIN_QUANTILE_SAMPLES"]

#: Fewest draws for which credible intervals are empirical quantiles; fewer use mean ± z·std (normal).
MIN_QUANTILE_SAMPLES = 20


def radius_of_gyration(positions, masses):
    """Mass-weighted radius of gyration of each frame, √(Σᵢ mᵢ ‖rᵢ − r_cm‖² / Σᵢ mᵢ).

    The same quantity as MDAnalysis' ``AtomGroup.radius_of_gyration()``, for many frames at once.

    Parameters
    ----------
    positions : array_like, shape (n_frames, n_atoms, 3)
        Positions in Å.
    masses : array_like, shape (n_atoms,)
        Atomic masses (u).

    Returns
    -------
    numpy.ndarray, shape (n_frames,)
        Rg in Å.

    Examples
    --------
    >>> radius_of_gyration(np.array([[[0., 0, 0], [2., 0, 0]]]), [1.0, 1.0])
    array([1.])
    """
    x = np.asarray(positions, dtype=np.float64)
    m = np.asarray(masses, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 3 or m.shape != (x.shape[1],):
        raise ValueError(f"positions of shape {x.shape} and masses of shape {m.shape} must be (n_frames, n_atoms, "
                         "3) and (n_atoms,)")
    centre = np.einsum("i,fij->fj", m, x) / m.sum()
    return np.sqrt(np.einsum("i,fi->f", m, ((x - centre[:, None, :]) ** 2).sum(-1)) / m.sum())


def _interval(values, credible):
    """Equal-tailed interval over axis 0: quantiles, or mean ± z·std for fewer than MIN_QUANTILE_SAMPLES draws."""
    if len(values) >= MIN_QUANTILE_SAMPLES:
        return np.quantile(values, [(1 - credible) / 2, (1 + credible) / 2], axis=0), "quantile"
    half = norm.ppf((1 + credible) / 2) * values.std(axis=0, ddof=1)
    return np.stack([values.mean(0) - half, values.mean(0) + half]), "normal"


class Posterior:
    """Draws of a fitted generative model's decoder and the predictions they give (base class).

    Made by :func:`laplace_posterior` or :func:`deep_ensemble`; both give the same :meth:`predict`.

    Attributes
    ----------
    featurizer : Featurizer
        The featurizer of the CV (decoded features are its features).
    method : str
        ``"laplace"`` or ``"ensemble"``.
    """

    method = None

    def __init__(self, featurizer, atoms):
        self.featurizer, self._atoms = featurizer, atoms

    def _draws(self, n_samples, generator):
        """``n_samples`` models, one per posterior draw."""
        raise NotImplementedError

    def _check_samples(self, n_samples):
        return check_int(n_samples, "n_samples", 2, "a credible interval needs two posterior draws or more: pass "
                                                    "e.g. n_samples=100")

    def _observable(self, observable, per_frame):
        """(name, units, function of decoded features -> values per structure) for ``observable``."""
        positions = isinstance(self.featurizer, (AlignedPositions, Positions))
        decoded = getattr(self.featurizer, "atoms", range(getattr(self.featurizer, "n_atoms", 0)))
        universe = topology_universe(_subset_table(self._atoms, decoded)) if positions else None
        if isinstance(observable, str):
            if observable != "rg":
                raise ValueError(f"observable={observable!r} is not built in; use 'rg' or pass a function")
            if not positions:
                raise ValueError("observable='rg' needs position features ('aligned' or 'positions'); pass a function "
                                 "of the decoded features instead")
            masses = universe.atoms.masses
            return "Rg", "Å", lambda f: radius_of_gyration(f.reshape(len(f), -1, 3), masses)
        if not callable(observable):
            raise TypeError(f"observable={observable!r} must be 'rg' or a function of positions (n, n_atoms, 3) in Å "
                            "(of the decoded features for other featurizers), or of an AtomGroup with per_frame=True")
        name = getattr(observable, "__name__", "observable")
        if per_frame:
            if not positions:
                raise ValueError("per_frame=True calls the observable with an AtomGroup, which needs position features")

            def function(f):
                universe.load_new(f.reshape(len(f), -1, 3), format=MemoryReader, order="fac")
                return [observable(universe.atoms) for _ in universe.trajectory]
            return name, "", function
        return name, "", (lambda f: observable(f.reshape(len(f), -1, 3))) if positions else observable

    def predict(self, observable="rg", n_samples=100, *, n_structures=1000, bins=40, credible=0.9,
                per_frame=False, seed=0):
        """Posterior mean and credible intervals of an observable's mean and of its distribution.

        For each of ``n_samples`` posterior draws of θ, ``n_structures`` structures x ~ p(x | z, θ),
        z ~ N(0, I) (decoder noise included) are generated and the observable evaluated on each.

        Parameters
        ----------
        observable : "rg" or callable, default "rg"
            ``"rg"``: the mass-weighted radius of gyration (Å) of the decoded atoms. A function gets the
            positions (n_structures, n_atoms, 3) in Å and returns one value per structure (for features
            other than positions: the decoded features (n_structures, n_features)).
        n_samples : int, default 100
            Posterior draws (≥ 2); for an ensemble at most its size (None: every member).
        n_structures : int, default 1000
            Structures per draw (≥ 2).
        bins : int or array_like, default 40
            Number of histogram bins over the range of all values, or the bin edges.
        credible : float, default 0.9
            Credible level of the intervals, in (0, 1): equal-tailed quantiles over the draws, or
            mean ± z·std for fewer than :data:`MIN_QUANTILE_SAMPLES` draws.
        per_frame : bool, default False
            Call ``observable`` once per structure with the AtomGroup of an in-memory Universe of the
            decoded atoms (e.g. ``lambda ag: ag.radius_of_gyration()``); slower.
        seed : int, default 0

        Returns
        -------
        xarray.Dataset
            ``mean`` (posterior mean of the observable's mean), ``mean_interval`` (dim ``bound``:
            lower, upper), ``mean_samples`` (dim ``sample``), ``density`` (dim ``bin``, posterior mean of
            the normalised histogram), ``density_interval`` (dims ``bound``, ``bin``),
            ``density_samples`` (``sample``, ``bin``), ``bin_edges`` (dim ``edge``); attrs ``observable``,
            ``units``, ``credible``, ``method``, ``interval``, ``n_structures``.

        Raises
        ------
        ValueError
            For n_samples < 2, a bad ``n_structures``, ``bins`` or ``credible``, or an observable that
            returns the wrong shape or non-finite values.
        """
        n_samples = self._check_samples(n_samples)
        n_structures = check_int(n_structures, "n_structures", 2, "pass e.g. n_structures=1000")
        credible = check_number("credible", credible, strict=True, example="0.9")
        if not credible < 1:
            raise ValueError(f"credible={credible!r} must lie in (0, 1), e.g. 0.9")
        name, units, function = self._observable(observable, per_frame)
        generator = torch.Generator().manual_seed(check_seed(seed))
        values = np.empty((n_samples, n_structures))
        for k, model in enumerate(self._draws(n_samples, generator)):
            values[k] = _evaluate(function, _sample_features(model, n_structures, generator), name)
        return _summary(values, bins, credible, name, units, self.method)


def _sample_features(model, n, generator):
    """``n`` raw feature vectors x ~ p(x | z, θ), z ~ N(0, I), of a Gaussian-decoder model (numpy float64)."""
    with torch.no_grad():
        z = model.sample_prior(n, generator=generator)
        x, _ = draw(model, z, torch.randn(n, model.n_features, generator=generator))
        return x.double().numpy()


def _evaluate(function, features, name):
    """The observable's values on ``features``, checked: one finite number per structure."""
    values = np.asarray(function(features), dtype=np.float64)
    if values.shape != (len(features),):
        raise ValueError(f"observable {name!r} returned shape {values.shape}, but one value per structure is "
                         f"needed, shape ({len(features)},); return a 1-D array (or a number with per_frame=True)")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"observable {name!r} returned {int(np.sum(~np.isfinite(values)))} NaN or infinite values "
                         f"of {len(values)}; make it finite for every generated structure")
    return values


def _summary(values, bins, credible, name, units, method):
    """The Dataset of :meth:`Posterior.predict` from the observable's values (n_draws, n_structures)."""
    try:
        edges = np.histogram_bin_edges(values, bins if is_int(bins) else np.asarray(bins, dtype=float))
    except (TypeError, ValueError) as err:
        raise ValueError(f"bins={bins!r} must be a positive number of bins or increasing bin edges") from err
    density = np.stack([np.histogram(v, edges, density=True)[0] for v in values])
    means = values.mean(axis=1)
    mean_interval, kind = _interval(means, credible)
    density_interval, _ = _interval(density, credible)
    attrs = {"long_name": name, "units": units}
    density_attrs = {"long_name": f"probability density of {name}", "units": f"1/{units}" if units else ""}
    return xr.Dataset(
        {"mean": ((), means.mean(), {**attrs, "long_name": f"mean {name}"}),
         "mean_interval": (("bound",), mean_interval, attrs),
         "mean_samples": (("sample",), means, attrs),
         "density": (("bin",), density.mean(0), density_attrs),
         "density_interval": (("bound", "bin"), density_interval, density_attrs),
         "density_samples": (("sample", "bin"), density, density_attrs),
         "bin_edges": (("edge",), edges, attrs)},
        coords={"sample": np.arange(len(values)), "bin": 0.5 * (edges[1:] + edges[:-1]),
                "bound": ["lower", "upper"]},
        attrs={"observable": name, "units": units, "credible": credible, "method": method, "interval": kind,
               "n_structures": values.shape[1]})


class LaplacePosterior(Posterior):
    """Posterior draws from a Laplace approximation of the decoder (made by :func:`laplace_posterior`).

    Attributes
    ----------
    laplace : mdcvkit.models.LaplaceApproximation
    """

    method = "laplace"

    def __init__(self, featurizer, atoms, laplace):
        super().__init__(featurizer, atoms)
        self.laplace = laplace

    def _draws(self, n_samples, generator):
        return (self.laplace.model_at(theta) for theta in self.laplace.sample(n_samples, generator))


class DeepEnsemble(Posterior):
    """Members of a deep ensemble as posterior draws (made by :func:`deep_ensemble`).

    Attributes
    ----------
    members : list of BaseAutoencoder
        The independently trained models, the CV's own first.
    """

    method = "ensemble"

    def __init__(self, featurizer, atoms, members):
        super().__init__(featurizer, atoms)
        self.members = list(members)

    def _check_samples(self, n_samples):
        n_samples = len(self.members) if n_samples is None else super()._check_samples(n_samples)
        if n_samples > len(self.members):
            raise ValueError(f"n_samples={n_samples} exceeds the {len(self.members)} members of the ensemble; pass "
                             f"n_samples=None (every member) or build a larger ensemble")
        return n_samples

    def predict(self, observable="rg", n_samples=None, **kwargs):
        """As :meth:`Posterior.predict`, one draw per member (the first ``n_samples``; all when None)."""
        return super().predict(observable, n_samples, **kwargs)

    def _draws(self, n_samples, generator):
        return self.members[:n_samples]


def _training_frames(cv, call):
    """Features, weights and the model of a fitted AutoencoderCV with a Gaussian decoder, or a ValueError."""
    if not isinstance(cv, AutoencoderCV):
        raise TypeError(f"cv must be an mdcvkit.AutoencoderCV, not {type(cv).__name__}")
    cv._check_fitted(call)
    if not hasattr(cv.results, "features") or not hasattr(cv, "trainer"):
        raise ValueError(f"{call}() needs the training frames, which a CV read by load() does not keep; call it on "
                         "the AutoencoderCV that ran")
    model = cv.results.model.model
    if not hasattr(model, "decoder_log_var"):
        raise ValueError(f"{call}() needs a generative model with a Gaussian decoder, model='vae'; this CV has "
                         f"model={cv.model_name!r}")
    return model, np.asarray(cv.results.features), normalize_weights(len(cv.results.features), cv.weights,
                                                                     cv.log_weights)


def laplace_posterior(cv, structure="last_layer", latents="integrated"):
    """Laplace posterior of the decoder of a fitted ``model="vae"`` CV, for :meth:`Posterior.predict`.

    The likelihood sums over the training frames (the validation frames left out), weighted as in
    training; see :func:`mdcvkit.models.fit_laplace` for the Hessian, ``structure`` and ``latents``.

    Parameters
    ----------
    cv : AutoencoderCV
        Run with ``model="vae"`` (best with ``decoder_prior="gaussian"`` or ``"ard"``).
    structure : {"last_layer", "diag", "full"}, default "last_layer"
    latents : {"integrated", "fixed"}, default "integrated"

    Returns
    -------
    LaplacePosterior

    Raises
    ------
    ValueError
        Before :meth:`~mdcvkit.AutoencoderCV.run`, for a CV read by ``load()``, a model without a
        Gaussian decoder, a time-lagged CV (lag > 0) or a precision that is not positive definite.

    Examples
    --------
    >>> ds = laplace_posterior(cv).predict("rg", n_samples=100)  # doctest: +SKIP
    """
    model, features, p = _training_frames(cv, "laplace_posterior")
    if cv.lag:
        raise ValueError(f"laplace_posterior() needs a CV trained on frames alone (lag=0), not lag={cv.lag}")
    train = ~np.asarray(cv.results.validation)
    weights = None if p is None else p[train]
    laplace = fit_laplace(model, features[train], structure=structure, latents=latents, weights=weights)
    return LaplacePosterior(cv.results.model.featurizer, cv._atoms, laplace)


def deep_ensemble(cv, n_models=5):
    """A deep ensemble: the CV's model and ``n_models - 1`` more, trained from other seeds on the same frames.

    Member k (k ≥ 1) is initialised and trained with seed ``cv.seed + k``, every other setting (model,
    trainer, weights, lag) as in ``cv``; the training frames are not read again.

    Parameters
    ----------
    cv : AutoencoderCV
        Run with ``model="vae"``.
    n_models : int, default 5
        Members (≥ 2).

    Returns
    -------
    DeepEnsemble

    Raises
    ------
    ValueError
        Before :meth:`~mdcvkit.AutoencoderCV.run`, for a CV read by ``load()``, a model without a
        Gaussian decoder, or ``n_models`` < 2.

    References
    ----------
    B. Lakshminarayanan, A. Pritzel, C. Blundell, "Simple and scalable predictive uncertainty estimation
    using deep ensembles", NeurIPS 2017.
    """
    n_models = check_int(n_models, "n_models", 2, "pass e.g. n_models=5")
    model, features, p = _training_frames(cv, "deep_ensemble")
    members = [model]
    for k in range(1, n_models):
        seed = cv.seed + k
        trainer = Trainer(**{**get_params(cv.trainer, exclude=("checkpoint",)), "seed": seed})
        members.append(cv._fit(features, p, seed, trainer).model.cpu())
    return DeepEnsemble(cv.results.model.featurizer, cv._atoms, members)
