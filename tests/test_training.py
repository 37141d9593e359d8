import numpy as np
import pytest
import torch

from mdcvkit.models import AutoEncoder, VariationalAutoEncoder
from mdcvkit.training import (
    Trainer,
    lagged_pairs,
    normalize_weights,
    resolve_device,
    validation_mask,
    weighted_mean,
)


def test_weighted_mean_matches_numpy_and_does_not_square_weights():
    values = torch.tensor([1.0, 3.0])
    assert float(weighted_mean(values, torch.tensor([2.0, 0.0]))) == 1.0
    rng = np.random.default_rng(0)
    v, w = rng.normal(size=(50, 3)), rng.random(50)
    np.testing.assert_allclose(weighted_mean(torch.from_numpy(v), torch.from_numpy(w)).numpy(),
                               np.average(v, axis=0, weights=w))
    np.testing.assert_allclose(weighted_mean(torch.from_numpy(v)).numpy(), v.mean(0))


def test_log_weights_do_not_overflow():
    p = normalize_weights(3, log_weights=[1000.0, 1000.0 + np.log(3), -np.inf])
    np.testing.assert_allclose(p, [0.25, 0.75, 0.0])
    np.testing.assert_allclose(normalize_weights(2, weights=[2, 6]), [0.25, 0.75])
    assert normalize_weights(4) is None


@pytest.mark.parametrize("weights, match", [
    ([1, 2], "length 2 but there are 3 frames"),
    ([1, -1, 1], "negative"),
    ([0, 0, 0], "all zero"),
    ([1, np.nan, 1], "NaN or infinite"),
    ([1, np.inf, 1], "NaN or infinite"),
])
def test_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        normalize_weights(3, weights=weights)


def test_validation_blocks_are_contiguous_and_respect_trajectories():
    lengths = [95, 40, 65]
    mask = validation_mask(lengths, 0.2, n_blocks=10, seed=1)
    assert mask.sum() == 40  # the fraction exactly: the last block drawn is cut short
    block = 20
    edges = np.flatnonzero(np.diff(mask.astype(int))) + 1
    boundaries = set(np.cumsum(lengths)) | {0}
    # every change of train/validation happens at a block edge of some trajectory, but for the end of the
    # block that was cut short
    off_edge = [e for e in edges if (e - max(b for b in boundaries if b <= e)) % block and e not in boundaries]
    assert len(off_edge) <= 1
    assert not validation_mask(lengths, 0.0).any()


def test_validation_mask_holds_out_the_fraction_with_few_blocks():
    # one block used to hold out every frame; two blocks half of them
    for n_blocks in (1, 2):
        mask = validation_mask([100], 0.2, n_blocks=n_blocks, seed=0)
        assert mask.sum() == 20
        assert np.count_nonzero(np.diff(mask.astype(int))) <= 2  # one contiguous stretch
    assert validation_mask([7], 0.2, n_blocks=3).sum() == 2  # rounded up
    assert validation_mask([100], 0.55).sum() == 55  # not 56: 0.55 * 100 is 55.00000000000001 in floating point
    with pytest.raises(ValueError, match="n_blocks"):
        validation_mask([100], 0.2, n_blocks=0)


def test_lagged_pairs_never_cross_trajectories():
    source, target = lagged_pairs([5, 3], lag=2)
    np.testing.assert_array_equal(source, [0, 1, 2, 5])
    np.testing.assert_array_equal(target, [2, 3, 4, 7])


def make_data(n=600, seed=0):
    """Points on a noisy 1-D curve embedded in 3-D."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1, 1, n)
    x = np.stack([t, t**2, np.sin(2 * t)], axis=1) + 0.01 * rng.normal(size=(n, 3))
    return x.astype(np.float32), t


def test_training_learns_and_restores_best_weights():
    x, t = make_data()
    torch.manual_seed(0)
    model = AutoEncoder(3, 1, hidden=(16,))
    fit = Trainer(max_epochs=60, batch_size=32, learning_rate=5e-3, seed=0).fit(model, x)
    history = fit.history
    assert history["validation"][fit.best_epoch] == history["validation"].min()
    assert float(history["validation"].min()) < 0.05 * float(history["validation"][0])
    # the model passed in was not trained
    assert not torch.equal(model.encoder[0].weight, fit.model.encoder[0].weight)
    z = fit.model.encode(torch.from_numpy(x)).detach().numpy()[:, 0]
    assert abs(np.corrcoef(z, t)[0, 1]) > 0.95


def test_same_seed_same_model():
    x, _ = make_data(200)
    fits = []
    for _ in range(2):
        torch.manual_seed(0)
        fits.append(Trainer(max_epochs=5, seed=3).fit(AutoEncoder(3, 1, hidden=(8,)), x).model)
    for a, b in zip(fits[0].state_dict().values(), fits[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _vae_fit(trainer, x, w):
    torch.manual_seed(0)
    return trainer.fit(VariationalAutoEncoder(3, 1, hidden=(8,)), x, weights=w)


def test_interrupted_training_resumes_from_its_checkpoint_to_the_same_model(tmp_path, monkeypatch):
    """A VAE (random sampling in its loss) with frame weights, killed after its first periodic checkpoint
    (epoch 3 of 12) and resumed, equals 12 epochs at once."""
    x, _ = make_data(300)
    w = np.random.default_rng(0).random(300)
    settings = dict(batch_size=32, seed=2, patience=100, checkpoint_every=3)
    whole = _vae_fit(Trainer(max_epochs=12, **settings), x, w)
    path = tmp_path / "training.pt"
    save = Trainer._save

    def save_then_stop(self, *args):
        save(self, *args)
        raise KeyboardInterrupt  # the run dies right after writing its first checkpoint

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            _vae_fit(Trainer(max_epochs=12, checkpoint=path, **settings), x, w)
    assert path.exists() and not list(tmp_path.glob(".*tmp*"))  # written atomically
    resumed = _vae_fit(Trainer(max_epochs=12, checkpoint=path, **settings), x, w)
    assert resumed.history.sizes["epoch"] == 12 and resumed.best_epoch == whole.best_epoch
    np.testing.assert_array_equal(resumed.history["train"].values, whole.history["train"].values)
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a finished run read back gives the same result without training
    again = _vae_fit(Trainer(max_epochs=12, checkpoint=path, **settings), x, w)
    np.testing.assert_array_equal(again.history["validation"].values, whole.history["validation"].values)


def test_checkpoint_of_other_data_or_settings_is_refused(tmp_path):
    x, _ = make_data(200)
    path = tmp_path / "training.pt"
    Trainer(max_epochs=2, checkpoint=path).fit(AutoEncoder(3, 1, hidden=(8,)), x)
    with pytest.raises(ValueError, match="was written for other settings .*data.features: "):
        Trainer(max_epochs=4, checkpoint=path).fit(AutoEncoder(3, 1, hidden=(8,)), x + 1.0)
    with pytest.raises(ValueError, match="trainer.learning_rate: 0.001 in the file, 0.01 now"):
        Trainer(max_epochs=4, checkpoint=path, learning_rate=1e-2).fit(AutoEncoder(3, 1, hidden=(8,)), x)
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is a text file .* not a training checkpoint"):
        Trainer(max_epochs=4, checkpoint=path).fit(AutoEncoder(3, 1, hidden=(8,)), x)
    with pytest.raises(ValueError, match="checkpoint_every=0 must be an integer >= 1"):
        Trainer(checkpoint_every=0)


def test_weights_change_what_is_learned():
    """Frames with zero weight are never drawn: a model trained on half the data with weights [1, 0]
    matches the normalisation of that half."""
    x, _ = make_data(400)
    w = np.r_[np.ones(200), np.zeros(200)]
    x[200:] += 50.0
    torch.manual_seed(0)
    fit = Trainer(max_epochs=2, seed=0, validation_fraction=0.0).fit(AutoEncoder(3, 1), x, weights=w)
    np.testing.assert_allclose(fit.model.normalization.mean.numpy(), x[:200].mean(0), rtol=1e-4, atol=1e-4)


def test_validation_frames_of_zero_weight_are_refused():
    """A validation split whose frames all have zero weight has no loss to stop on: a clear error, not a
    model restored from no best epoch."""
    x, _ = make_data(400)
    trainer = Trainer(max_epochs=2, seed=0, validation_fraction=0.2, n_blocks=5)
    w = np.where(validation_mask([400], 0.2, 5, 0), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"all 80 validation frames have zero weight.*drop the zero-weight frames"):
        trainer.fit(AutoEncoder(3, 1), x, weights=w)
    w[np.flatnonzero(w == 0)[0]] = 1.0  # one validation frame with weight is enough
    trainer.fit(AutoEncoder(3, 1), x, weights=w)


def test_non_finite_loss_is_reported():
    x, _ = make_data(200)
    with pytest.raises(FloatingPointError, match="lower learning_rate"):
        Trainer(max_epochs=3, learning_rate=1e12, seed=0).fit(AutoEncoder(3, 1, activation=None), x * 1e18)


def test_too_few_frames():
    x, _ = make_data(5)
    with pytest.raises(ValueError, match="only 5 frames"):
        Trainer().fit(AutoEncoder(3, 1), x)
    x, _ = make_data(12)
    with pytest.raises(ValueError, match="validation_fraction"):
        Trainer(validation_fraction=0.9, n_blocks=1).fit(AutoEncoder(3, 1), x)
    # fewer frames than the batch size is fine: the batch shrinks
    Trainer(max_epochs=2, batch_size=1000).fit(AutoEncoder(3, 1), make_data(40)[0])


def test_bad_trainer_settings():
    with pytest.raises(ValueError, match="max_epochs=0"):
        Trainer(max_epochs=0)
    with pytest.raises(ValueError, match="validation_fraction=1.5"):
        Trainer(validation_fraction=1.5)
    with pytest.raises(ValueError, match="device='tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="device='tpu'"):  # at construction, before any data is read
        Trainer(device="tpu")
    with pytest.raises(ValueError, match="seed=-1 must be an integer between 0 and"):
        Trainer(seed=-1)
    with pytest.raises(ValueError, match="n_threads=0 must be an integer >= 1"):
        Trainer(n_threads=0)
    with pytest.raises(ValueError, match="expects"):
        Trainer().fit(AutoEncoder(4, 1), make_data(40)[0])


def test_auto_device_is_cpu_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_keeps_every_tensor_on_the_device():
    x, _ = make_data(300)
    fit = Trainer(max_epochs=3, device="cuda", seed=0).fit(AutoEncoder(3, 1), x, weights=np.ones(300))
    assert all(t.device.type == "cuda" for t in fit.model.state_dict().values())
    assert np.isfinite(fit.history["validation"].values).all()
