"""Issue 32, classes 7 and 8: obscure or silent bad inputs become errors naming the argument, and the
warnings users need (divergence, not converged, too few frames, an MSM lag that is not validated)."""

import warnings

import matplotlib
import numpy as np
import pytest
import xarray as xr

matplotlib.use("Agg")

from mdcvkit import metrics, msm, plot  # noqa: E402
from mdcvkit.models import AutoEncoder, FeedForward  # noqa: E402
from mdcvkit.training import ConvergenceWarning, Trainer  # noqa: E402

RNG = np.random.default_rng(0)
A = RNG.normal(size=(200, 2))
B = A @ RNG.normal(size=(2, 3))


def _curve(n=300, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1, 1, n)
    return (np.stack([t, t**2, np.sin(2 * t)], axis=1) + 0.01 * rng.normal(size=(n, 3))).astype(np.float32)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: AutoEncoder(3, 1, hidden=40), TypeError, r"hidden=40 must be a sequence of layer sizes"),
    (lambda: AutoEncoder(3, 1, hidden="40"), TypeError, r"hidden='40' must be a sequence"),
    (lambda: AutoEncoder(3, 1, hidden=(2.5,)), ValueError, r"hidden=\(2\.5,\) holds 2\.5"),
    (lambda: AutoEncoder(3, 1, hidden=(0,)), ValueError, r"hidden=\(0,\) holds 0"),
    (lambda: AutoEncoder(3, "1"), ValueError, r"n_cv='1' must be an integer"),
    (lambda: FeedForward([3, 2.5, 1]), ValueError, r"layers=.* positive integer sizes"),
    (lambda: Trainer(learning_rate="1e-3"), TypeError, r"learning_rate='1e-3' must be a number"),
    (lambda: Trainer(learning_rate=-1), ValueError, r"learning_rate=-1 must be a finite number > 0"),
    (lambda: Trainer(validation_fraction="0.2"), ValueError, r"validation_fraction='0.2' must be in \[0, 1\)"),
    (lambda: Trainer(max_epochs=1).fit(AutoEncoder(3, 1), _curve(), weights=np.ones((300, 2))), ValueError,
     r"weights has shape \(300, 2\), but one value per frame"),
    (lambda: Trainer(max_epochs=1).fit(AutoEncoder(3, 1), "frames"), TypeError, r"features must be a numeric"),
    (lambda: Trainer(max_epochs=1).fit(AutoEncoder(3, 1), [["a", "b", "c"]] * 20), TypeError,
     r"features must be a numeric array"),
    (lambda: Trainer(max_epochs=1).fit(AutoEncoder(3, 1), _curve(), lag=-1), ValueError, r"lag=-1 must be"),
    (lambda: Trainer(max_epochs=1).fit(AutoEncoder(3, 1), _curve(), lengths=3), ValueError, r"lengths=3 must be"),
    (lambda: metrics.knn_score(A[:20], B[:20], n_neighbors=50), ValueError, r"n_neighbors=50 is more than"),
    (lambda: metrics.knn_score(A, B, n_neighbors=0), ValueError, r"n_neighbors=0 must be an integer >= 1"),
    (lambda: metrics.regscore_threshold(lambda i: A, 200, n_bootstrap=2.5), ValueError, r"n_bootstrap=2\.5"),
    (lambda: metrics.regscore_threshold(lambda i: A, 200, percentile=150), ValueError, r"percentile=150"),
    (lambda: metrics.regscore_threshold(None, 200), TypeError, r"fit_cv must be a function"),
    (lambda: metrics.regscore(A[:3], B[:3]), ValueError, r"regscore needs more frames than the 3 parameters"),
    (lambda: metrics.regscore("abc", B), ValueError, r"a must be numbers of shape"),
    (lambda: metrics.regscore(A, B, weights=np.ones((200, 2))), ValueError, r"weights has shape \(200, 2\)"),
    (lambda: metrics.regscore(A, B, weights=-np.ones(200)), ValueError, r"weights hold negative values"),
    (lambda: metrics.regscore(A, B, weights=np.zeros(200)), ValueError, r"weights are all zero"),
    (lambda: plot.free_energy_surface(np.full((50, 2), np.nan)), ValueError, r"cv holds 100 NaN"),
    (lambda: plot.free_energy_surface(A, bins=0), ValueError, r"bins=0 must be an integer >= 1"),
    (lambda: plot.free_energy_surface(A, temperature=0), ValueError, r"temperature=0 must be a finite number > 0"),
    (lambda: plot.free_energy_surface(A, temperature=-1.0), ValueError, r"temperature=-1\.0 must be"),
    (lambda: plot.free_energy_surface(A, weights=np.ones(10)), ValueError, r"weights has length 10"),
    (lambda: plot.free_energy_surface(A, weights=-np.ones(200)), ValueError, r"weights hold negative values"),
    (lambda: plot.free_energy_surface(A, weights=np.zeros(200)), ValueError, r"weights are all zero"),
    (lambda: plot.free_energy_surface(A, weights=np.ones((200, 2))), ValueError, r"weights has shape"),
    (lambda: plot.ramachandran(np.full(10, np.nan), np.zeros(10)), ValueError, r"phi holds 10 NaN"),
])
def test_bad_input_gives_a_clear_error(call, error, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(error, match=match):
            call()


def test_divergence_is_detected_and_said():
    """Before: learning_rate=1e6 returned a model with a loss of 5e13 and said nothing."""
    with pytest.warns(ConvergenceWarning, match=r"training diverged: .* lower learning_rate \(now 1e\+06\)"):
        Trainer(max_epochs=5, learning_rate=1e6, n_threads=1).fit(AutoEncoder(3, 1, hidden=(8,)), _curve())


def test_stopping_at_max_epochs_while_improving_is_said_and_early_stopping_is_silent():
    with pytest.warns(ConvergenceWarning, match=r"stopped at max_epochs=3 before converging"):
        Trainer(max_epochs=3, n_threads=1).fit(AutoEncoder(3, 1, hidden=(8,)), _curve())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit = Trainer(max_epochs=1000, patience=1, learning_rate=0.05, n_threads=1).fit(
            AutoEncoder(3, 1, hidden=(8,)), _curve())
    assert fit.history.attrs["converged"] == 1 and fit.history.sizes["epoch"] < 1000


def test_far_fewer_frames_than_features_is_said():
    x = np.random.default_rng(0).normal(size=(30, 50)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(UserWarning, match=r"24 training frames for 50 features"):
            Trainer(max_epochs=2, n_threads=1).fit(AutoEncoder(50, 1, hidden=(4,)), x)


class _StubCV:
    """What MSMValidation needs of a fitted CV: transform() returning results.cv."""

    def __init__(self, values):
        self.data = xr.DataArray(values[:, None], dims=("frame", "cv"),
                                 coords={"time": ("frame", np.arange(len(values), dtype=float)),
                                         "trajectory": ("frame", np.zeros(len(values), int))})

    def transform(self, atomgroup, start=None, stop=None, step=None):
        return self.data


def test_msm_validation_warns_when_its_lag_is_not_validated():
    """A CV that is noise: the timescales never level off and the CK test has nothing to hold."""
    rng = np.random.default_rng(1)
    noise = np.cumsum(rng.normal(size=4000)) * 0.05 + rng.normal(size=4000)
    validation = msm.MSMValidation(_StubCV(noise), None, lags=[1, 2, 5, 10, 20], n_sets=2, mlags=3,
                                   n_clusters=20, n_timescales=2, n_samples=10)
    with pytest.warns(UserWarning) as record:
        validation.run()
    messages = " ".join(str(w.message) for w in record)
    assert "has not levelled off" in messages or "Chapman-Kolmogorov test at lag" in messages


def test_checkpoint_in_a_missing_folder_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint=.*nowhere.* is in a folder that does not exist"):
        Trainer(checkpoint=tmp_path / "nowhere" / "ck.pt")
    with pytest.raises(ValueError, match=r"checkpoint=.* is a folder; pass the path of a file"):
        Trainer(checkpoint=tmp_path)


def test_autoencoder_cv_hidden_is_checked_before_reading_frames():
    import mdcvkit as mk

    heavy = mk.datasets.alanine_dipeptide().select_atoms("not name H*")
    with pytest.raises(TypeError, match=r"hidden=40 must be a sequence of layer sizes"):
        mk.AutoencoderCV(heavy, hidden=40)
    with pytest.raises(TypeError, match=r"hidden='40' must be a sequence"):
        mk.AutoencoderCV(heavy, hidden="40")
    with pytest.raises(ValueError, match=r"hidden=\(2\.5,\) holds 2\.5"):
        mk.AutoencoderCV(heavy, hidden=(2.5,))
    with pytest.raises(TypeError, match=r"learning_rate='fast' must be a number"):
        mk.AutoencoderCV(heavy, learning_rate="fast")
