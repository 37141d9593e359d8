"""Issue 32: random shapes, dtypes, NaNs and strings fed to the main entry points raise only the
package's documented exceptions (ValueError, TypeError), never an error from deep inside NumPy,
torch or scikit-learn, and never a silent result from non-finite input."""

import warnings

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from mdcvkit import metrics, msm, plot  # noqa: E402
from mdcvkit.models import MODELS  # noqa: E402
from mdcvkit.training import Trainer, normalize_weights  # noqa: E402

DOCUMENTED = (ValueError, TypeError)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

#: Arrays of any small shape and dtype, with NaN and infinities among the floats.
arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.complex64, np.dtype("U3")]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12),
    elements=None,
)
#: Frames-by-columns float arrays, finite or with NaN and infinities: near the valid inputs.
tables = hnp.arrays(dtype=st.sampled_from([np.float32, np.float64]),
                    shape=st.tuples(st.integers(0, 40), st.integers(1, 4)),
                    elements=st.one_of(st.floats(-1e3, 1e3, width=32),
                                       st.floats(allow_nan=True, allow_infinity=True, width=32)))
finite_tables = hnp.arrays(dtype=np.float64, shape=st.tuples(st.integers(0, 40), st.integers(1, 3)),
                           elements=st.floats(-100, 100))
junk = st.one_of(tables, finite_tables, arrays, st.text(max_size=5), st.none(), st.integers(-5, 5),
                 st.floats(allow_nan=True), st.lists(st.floats(allow_nan=True), max_size=6), st.just(object()))


def _only_documented(call):
    """Run ``call``; a result is fine, a documented exception is fine, anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return call()
        except DOCUMENTED:
            return None
        finally:
            import matplotlib.pyplot as plt

            plt.close("all")


@SETTINGS
@given(a=junk, b=junk, weights=junk)
def test_regscore(a, b, weights):
    score = _only_documented(lambda: metrics.regscore(a, b, weights=weights))
    assert score is None or score <= 1.0 + 1e-9


@SETTINGS
@given(cv=junk, targets=junk, n_neighbors=st.one_of(st.integers(-2, 30), st.floats(), st.text(max_size=2)))
def test_knn_score(cv, targets, n_neighbors):
    _only_documented(lambda: metrics.knn_score(cv, targets, n_neighbors=n_neighbors))


@SETTINGS
@given(cv=junk, temperature=junk, bins=junk, weights=junk)
def test_free_energy_surface(cv, temperature, bins, weights):
    _only_documented(lambda: plot.free_energy_surface(cv, temperature=temperature, bins=bins, weights=weights))


@SETTINGS
@given(n=st.integers(-2, 20), weights=junk, log_weights=junk)
def test_normalize_weights(n, weights, log_weights):
    p = _only_documented(lambda: normalize_weights(n, weights, log_weights))
    assert p is None or (np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-9)


@SETTINGS
@given(model=st.sampled_from(sorted(MODELS)), n_features=junk, n_cv=junk, hidden=junk,
       activation=st.one_of(st.sampled_from(["tanh", "elu", None]), st.text(max_size=4)))
def test_model_construction(model, n_features, n_cv, hidden, activation):
    _only_documented(lambda: MODELS[model](n_features, n_cv, hidden=hidden, activation=activation))


@SETTINGS
@given(features=junk, weights=junk, lengths=junk, lag=junk)
def test_trainer_fit(features, weights, lengths, lag):
    model = MODELS["ae"](3, 1, hidden=(4,))
    trainer = Trainer(max_epochs=1, n_threads=1)
    result = _only_documented(lambda: trainer.fit(model, features, weights=weights, lengths=lengths, lag=lag))
    assert result is None or np.isfinite(result.history["train"].values).all()


@SETTINGS
@given(learning_rate=junk, batch_size=junk, validation_fraction=junk, seed=junk)
def test_trainer_settings(learning_rate, batch_size, validation_fraction, seed):
    _only_documented(lambda: Trainer(learning_rate=learning_rate, batch_size=batch_size,
                                     validation_fraction=validation_fraction, seed=seed))


@settings(max_examples=15, deadline=None, derandomize=True)
@given(trajs=junk, lags=st.one_of(junk, st.lists(st.integers(-2, 5), max_size=3)))
def test_implied_timescales(trajs, lags):
    _only_documented(lambda: msm.implied_timescales(trajs, lags=lags, n_clusters=3, n_samples=5))


def _bare_fitted():
    import MDAnalysis as mda

    import mdcvkit as mk

    u = mda.Universe.empty(5, trajectory=True)
    u.load_new(np.random.default_rng(0).normal(size=(30, 5, 3)).astype(np.float32) * 3, order="fac")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return u, mk.AutoencoderCV(u.atoms, n_cv=1, hidden=(4,), max_epochs=1).run()


UNIVERSE, FITTED = None, None


def _fitted():
    global UNIVERSE, FITTED
    if FITTED is None:
        UNIVERSE, FITTED = _bare_fitted()
    return UNIVERSE, FITTED


@SETTINGS
@given(n_cv=junk, hidden=junk, lag=junk, learning_rate=junk, chunk_size=junk, memory_budget=junk,
       reference=st.one_of(st.sampled_from(["first", "mean"]), junk))
def test_autoencoder_cv_construction(n_cv, hidden, lag, learning_rate, chunk_size, memory_budget, reference):
    import mdcvkit as mk

    universe, _ = _fitted()
    _only_documented(lambda: mk.AutoencoderCV(universe.atoms, n_cv=n_cv, hidden=hidden, lag=lag,
                                              learning_rate=learning_rate, chunk_size=chunk_size,
                                              memory_budget=memory_budget, reference=reference))


@SETTINGS
@given(start=junk, stop=junk, step=junk, frames=st.one_of(st.none(), st.lists(st.integers(-40, 40), max_size=4),
                                                          junk))
def test_transform_slices(start, stop, step, frames):
    universe, fitted = _fitted()
    result = _only_documented(lambda: fitted.transform(universe.atoms, start=start, stop=stop, step=step,
                                                       frames=frames))
    assert result is None or np.isfinite(result.values).all()


@SETTINGS
@given(z=junk)
def test_decode(z):
    _, fitted = _fitted()
    _only_documented(lambda: fitted.decode(z))
