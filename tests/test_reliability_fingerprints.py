"""Issue 32, class 1: a training checkpoint resumes only what it was written for.

Every fingerprinted setting is changed one at a time; the refusal names the setting and both values.
The lists of settings are read back from the ``__init__`` signatures, so a setting added to a model
or to the trainer without an entry here fails :func:`test_every_fingerprinted_setting_is_tested`.
"""

import warnings

import numpy as np
import pytest

import mdcvkit as mk
from mdcvkit._params import get_params
from mdcvkit.models import MODELS
from mdcvkit.training import Trainer

#: Another valid value of every model setting (n_features is fixed by the data: see "data.shape").
MODEL_CHANGES = {"n_cv": 1, "hidden": (9,), "activation": "elu", "scale_groups": [0, 0, 0, 1, 1, 1],
                 "beta": 2.0, "n_clusters": 3, "mmd_weight": 5.0, "kernel_bandwidth": 2.0, "noise": 0.2,
                 "decoder_prior": "gaussian"}
#: Another valid value of every fingerprinted trainer setting (device: only one kind on a CPU machine).
TRAINER_CHANGES = {"batch_size": 16, "learning_rate": 2e-3, "patience": 7, "validation_fraction": 0.3,
                   "n_blocks": 5, "seed": 1}
SMALL = dict(n_features=6, n_cv=2, hidden=(8,))


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1, 1, n)
    x = np.stack([t, t**2, np.sin(2 * t), np.cos(t), t**3, 0.5 * t], axis=1) + 0.01 * rng.normal(size=(n, 6))
    return x.astype(np.float32)


def _fit(path, model="ae", model_settings=None, trainer_settings=None, data=None, **fit_kwargs):
    settings = {**SMALL, **(model_settings or {})}
    trainer = Trainer(max_epochs=2, checkpoint=path, n_threads=1, **(trainer_settings or {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two epochs do not converge: not what is tested here
        return trainer.fit(MODELS[model](**settings), _data() if data is None else data, **fit_kwargs)


def test_every_fingerprinted_setting_is_tested():
    for name, cls in MODELS.items():
        params = set(get_params(cls(**SMALL))) - {"n_features"}
        assert params <= set(MODEL_CHANGES), f"model {name!r}: add a change of {params - set(MODEL_CHANGES)}"
    fingerprinted = set(get_params(Trainer(), exclude=Trainer._NOT_FINGERPRINTED))
    assert fingerprinted == set(TRAINER_CHANGES)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_each_model_setting_changed_alone_is_refused(tmp_path, model):
    path = tmp_path / "training.pt"
    _fit(path, model)
    for name, value in MODEL_CHANGES.items():
        if name not in get_params(MODELS[model](**SMALL)):
            continue
        old = get_params(MODELS[model](**SMALL))[name]
        with pytest.raises(ValueError, match=rf"model\.{name}: .* in the file, .* now") as info:
            _fit(path, model, {name: value})
        message = str(info.value)
        assert repr(old)[:20] in message and repr(mk._params.plain(value))[:20] in message
        assert message.count(" in the file, ") == 1  # only the setting that changed is named


@pytest.mark.parametrize(("name", "value"), sorted(TRAINER_CHANGES.items()))
def test_each_trainer_setting_changed_alone_is_refused(tmp_path, name, value):
    path = tmp_path / "training.pt"
    _fit(path)
    old = get_params(Trainer())[name]
    with pytest.raises(ValueError, match=rf"checkpoint=.*trainer\.{name}: {old!r} in the file, {value!r} now"):
        _fit(path, trainer_settings={name: value})


def test_model_kind_data_weights_lengths_and_lag_are_fingerprinted(tmp_path):
    path = tmp_path / "training.pt"
    _fit(path)
    with pytest.raises(ValueError, match=r"model\.kind: '.*AutoEncoder' in the file, '.*DenoisingAutoEncoder' now"):
        _fit(path, "dae")
    with pytest.raises(ValueError, match=r"data\.features: "):
        _fit(path, data=_data(seed=1))
    with pytest.raises(ValueError, match=r"data\.features: .*data\.shape: \[120, 6\] in the file, \[100, 6\] now"):
        _fit(path, data=_data()[:100])
    with pytest.raises(ValueError, match=r"data\.weights: "):
        _fit(path, weights=np.linspace(1, 2, 120))
    with pytest.raises(ValueError, match=r"data\.lengths: \[120\] in the file, \[60, 60\] now"):
        _fit(path, lengths=[60, 60])
    with pytest.raises(ValueError, match=r"data\.lag: 0 in the file, 1 now"):
        _fit(path, "tae", lag=1)


def test_settings_that_do_not_change_the_result_may_differ(tmp_path):
    path = tmp_path / "training.pt"
    first = _fit(path)
    again = _fit(path, trainer_settings={"checkpoint_every": 3, "verbose": False})
    np.testing.assert_array_equal(first.history["train"].values, again.history["train"].values)
    longer = Trainer(max_epochs=4, checkpoint=path, n_threads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        longer = longer.fit(MODELS["ae"](**SMALL), _data())
    assert longer.history.sizes["epoch"] == 4  # max_epochs raised: trains on from epoch 2


def test_old_or_foreign_checkpoints_are_refused(tmp_path):
    import torch

    path = tmp_path / "training.pt"
    torch.save({"key": {"model": "AutoEncoder"}, "epoch": 1}, path)
    with pytest.raises(ValueError, match="checkpoint=.*written by an older mdcvkit, without a fingerprint"):
        _fit(path)
    torch.save({"kind": "mdcvkit.Trainer.checkpoint", "version": 1}, path)
    with pytest.raises(ValueError, match="checkpoint=.*layout version 1 .* lacks fingerprint"):
        _fit(path)


@pytest.fixture(scope="module")
def heavy():
    return mk.datasets.alanine_dipeptide().select_atoms("not name H*")


def _cv_fit(heavy, path, **settings):
    cv = mk.AutoencoderCV(heavy, n_cv=2, hidden=(8,), max_epochs=2, seed=0, checkpoint=path, **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cv.run(step=200)


def test_autoencoder_cv_tanh_checkpoint_resumed_with_elu_is_refused(tmp_path, heavy):
    """The example of the issue: before, this returned an ELU network holding tanh weights."""
    path = tmp_path / "cv-training.pt"
    _cv_fit(heavy, path)
    with pytest.raises(ValueError, match=r"model\.activation: 'tanh' in the file, 'elu' now"):
        _cv_fit(heavy, path, activation="elu")
    with pytest.raises(ValueError, match=r"model\.kind: .*AutoEncoder' in the file, .*VariationalAutoEncoder' now"):
        _cv_fit(heavy, path, model="vae")
    with pytest.raises(ValueError, match=r"data\.features: "):  # other frames
        cv = mk.AutoencoderCV(heavy, n_cv=2, hidden=(8,), max_epochs=2, seed=0, checkpoint=path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cv.run(step=250)


def test_autoencoder_cv_beta_is_fingerprinted(tmp_path, heavy):
    path = tmp_path / "cv-training.pt"
    _cv_fit(heavy, path, model="vae", beta=1.0)
    with pytest.raises(ValueError, match=r"model\.beta: 1\.0 in the file, 0\.5 now"):
        _cv_fit(heavy, path, model="vae", beta=0.5)
    resumed = _cv_fit(heavy, path, model="vae", beta=1.0)  # the same settings resume
    assert resumed.results.loss.sizes["epoch"] == 2


def test_autoencoder_cv_names_the_frames_and_features_that_differ(tmp_path, heavy):
    path = tmp_path / "cv-training.pt"
    _cv_fit(heavy, path)
    cv = mk.AutoencoderCV(heavy, n_cv=2, hidden=(8,), max_epochs=2, seed=0, checkpoint=path)
    with pytest.raises(ValueError, match=r"estimator\.frames: \[500, 0, 99800\] in the file, \[400, 0, 99750\] now"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cv.run(step=250)
    cv = mk.AutoencoderCV(heavy, n_cv=2, hidden=(8,), max_epochs=2, seed=0, checkpoint=path, reference="mean")
    with pytest.raises(ValueError, match=r"estimator\.reference: 'first' in the file, 'mean' now"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cv.run(step=200)
