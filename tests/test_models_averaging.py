"""Tests of mdcvkit.models.averaging: affine maps of a CV folded into the encoder, averages of autoencoders."""

import warnings

import numpy as np
import pytest
import torch

from mdcvkit.metrics import regscore
from mdcvkit.models import MODELS, AutoEncoder
from mdcvkit.models.averaging import affine_cv, average_autoencoders
from mdcvkit.training import Trainer


def _members(name, hidden, n=3, n_features=6, seed=0):
    torch.manual_seed(seed)
    features = torch.randn(500, n_features)
    members = []
    for _ in range(n):
        member = MODELS[name](n_features, 2, hidden=hidden, activation="elu")
        member.normalization.fit(features)
        members.append(member.eval())
    return members, features


@pytest.mark.parametrize("hidden", [(8,), (8, 5), ()])
def test_averaged_encoder_is_the_mean_of_the_mapped_members(hidden):
    """One wider encoder computes the mean of the members' CVs, each mapped by its weighted affine fit onto the
    first member's; the first member's decoder is kept; members that disagree are warned of."""
    torch.manual_seed(0)
    features = torch.randn(500, 6)
    members = []
    for _ in range(3):
        member = AutoEncoder(6, 2, hidden=hidden, activation="elu")
        member.normalization.fit(features)
        members.append(member.eval())
    log_w = np.random.default_rng(0).normal(size=500)
    # untrained members project random features on unrelated planes: their average mixes different CVs
    with pytest.warns(UserWarning, match=r"the 3 autoencoders trained on the same frames found different CVs"):
        averaged = average_autoencoders(members, features, log_w)
    w = np.exp(log_w) / np.exp(log_w).sum()
    with torch.no_grad():
        values = [m.encode(features).double().numpy() for m in members]
        cv = averaged.encode(features).double().numpy()
    mapped = []
    for v in values:  # the weighted least-squares fit of each member onto the first, written out
        design = np.hstack([v, np.ones((len(v), 1))])
        coef = np.linalg.solve(design.T @ (w[:, None] * design), design.T @ (w[:, None] * values[0]))
        mapped.append(design @ coef)
    np.testing.assert_allclose(cv, np.mean(mapped, axis=0), atol=1e-5)
    assert averaged.encoder[0].out_features == (3 * hidden[0] if hidden else 2)
    assert averaged.decoder is not members[0].decoder  # a copy: the members stay as they were
    for a, b in zip(averaged.decoder.parameters(), members[0].decoder.parameters(), strict=True):
        assert torch.equal(a, b)


def test_an_ensemble_reproduces_its_cv_across_initial_weights():
    """Autoencoders trained on the same frames from different initial weights find CVs that differ by more
    than an affine map (here R² 0.95-0.999 between pairs); averages of four agree far more closely."""
    rng = np.random.default_rng(0)
    u, v = rng.uniform(-1, 1, 3000), rng.uniform(-1, 1, 3000)
    frames = np.stack([u, np.cos(2 * u), np.sin(3 * u), 0.3 * v], axis=1) + 0.02 * rng.normal(size=(3000, 4))
    features = torch.as_tensor(frames, dtype=torch.float32)
    members = []
    for seed in range(8):
        torch.manual_seed(seed)
        fit = Trainer(max_epochs=60, patience=10, seed=seed).fit(AutoEncoder(4, 1, hidden=(16,), activation="elu"),
                                                                 frames.astype(np.float32))  # fmt: skip
        members.append(fit.model.eval())
    with torch.no_grad():
        single = [m.encode(features).double().numpy() for m in members]
        first, second = (average_autoencoders(group, features).encode(features).double().numpy()
                         for group in (members[:4], members[4:]))  # fmt: skip
    single_loss = np.median([1 - regscore(a, b) for k, a in enumerate(single) for b in single[k + 1 :]])
    assert 1 - regscore(first, second) < single_loss / 4, (regscore(first, second), single_loss)


@pytest.mark.parametrize("name", ["ae", "vae", "tae", "wae", "dae"])
@pytest.mark.parametrize("hidden", [(8,), ()])
def test_average_of_every_feed_forward_model_is_exact(name, hidden):
    """The averaged encoder's CV is the mean of the mapped members' (the first outputs of its last layer)."""
    members, features = _members(name, hidden)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained members disagree
        averaged = average_autoencoders(members, features)
    assert type(averaged) is type(members[0])
    with torch.no_grad():
        values = [m.encode(features).double().numpy() for m in members]
        mean = np.mean([np.hstack([v, np.ones((len(v), 1))]) @ np.linalg.lstsq(
            np.hstack([v, np.ones((len(v), 1))]), values[0], rcond=None)[0] for v in values], axis=0)
        np.testing.assert_allclose(averaged.encode(features).double().numpy(), mean, atol=1e-4)


def test_one_member_is_returned_as_a_copy():
    members, features = _members("ae", (8,), n=1)
    averaged = average_autoencoders(members, features)
    assert averaged is not members[0]
    with torch.no_grad():
        assert torch.equal(averaged.encode(features), members[0].encode(features))


def test_average_refuses_what_it_cannot_compute():
    members, features = _members("gmvae", (8,), n=2)
    with pytest.raises(ValueError, match=r"members\[0\] is a GaussianMixtureVAE whose encoder is not a feed-forward"):
        average_autoencoders(members, features)
    with pytest.raises(ValueError, match=r"members is empty"):
        average_autoencoders([], features)
    wide, _ = _members("ae", (16,), n=1)
    narrow, _ = _members("ae", (8,), n=1)
    with pytest.raises(ValueError, match=r"members have encoders of different layouts"):
        average_autoencoders(wide + narrow, features)


@pytest.mark.parametrize("name", ["ae", "vae", "gmvae", "dae"])
def test_affine_cv_folds_the_map_into_the_encoder(name):
    """encode becomes encode @ A + c exactly; the decoder takes the inverse map, so reconstructions stay."""
    (model,), features = _members(name, (8,), n=1)
    a, c = np.array([[2.0, 0.5], [0.0, -1.5]]), np.array([1.0, -3.0])
    mapped = affine_cv(model, a, c)
    with torch.no_grad():
        before, after = model.encode(features).double(), mapped.encode(features).double()
        np.testing.assert_allclose(after.numpy(), before.numpy() @ a + c, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mapped.decode(after.float()).numpy(), model.decode(before.float()).numpy(),
                                   rtol=1e-4, atol=1e-4)  # fmt: skip
    assert type(mapped.encoder) is type(model.encoder)  # no wrapper: an ordinary feed-forward encoder
    with torch.no_grad():  # the model given is not modified
        np.testing.assert_array_equal(model.encode(features).double().numpy(), before.numpy())


def test_affine_cv_checks_its_map():
    (model,), _ = _members("ae", (8,), n=1)
    with pytest.raises(ValueError, match=r"matrix of shape \(3,\) and offset of shape \(2,\) must be finite"):
        affine_cv(model, [1.0, 2.0, 3.0], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"must be finite"):
        affine_cv(model, np.eye(2), [np.nan, 0.0])
