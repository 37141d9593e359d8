"""Tests of mdcvkit.models.priors and the decoder prior of the VAE: E-step, M-step gradient, MAP loss, fingerprints."""

import pytest
import torch
from linear_gaussian_cases import linear_gaussian

from mdcvkit.models import ARDPrior, GaussianPrior, VariationalAutoEncoder, make_prior
from mdcvkit.training import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::mdcvkit.training.ConvergenceWarning")


def test_ard_penalty_gradient_is_the_m_step_of_the_e_step_precision():
    prior = ARDPrior(a0=0.3, b0=0.2)
    theta = torch.tensor([0.0, 0.1, -0.7, 2.5], dtype=torch.float64, requires_grad=True)
    prior.penalty(theta).backward()
    tau = (0.3 + 0.5) / (0.2 + theta.detach() ** 2 / 2)  # the E-step of the issue
    assert torch.allclose(prior.expected_precision(theta), tau)
    assert torch.allclose(theta.grad, tau * theta.detach())  # the M-step term −⟨τ⟩θ of the log posterior
    # the marginal −log p(θ) is a Student-t: its differences match the Gamma–Gaussian integral
    values = torch.tensor([0.0, 1.0], dtype=torch.float64)
    density = [(0.2 + v ** 2 / 2) ** -(0.3 + 0.5) for v in values]  # ∝ ∫ N(θ; 0, 1/τ) Gamma(τ; a0, b0) dτ
    assert float(prior.penalty(values[1:]) - prior.penalty(values[:1])) == pytest.approx(
        float(-torch.log(density[1] / density[0])))


def test_gaussian_prior_penalty_and_precision():
    prior = GaussianPrior(precision=2.0)
    theta = torch.tensor([1.0, -2.0], requires_grad=True)
    prior.penalty(theta).backward()
    assert torch.allclose(theta.grad, 2.0 * theta.detach())
    assert torch.equal(prior.prior_precision(theta), torch.tensor([2.0, 2.0]))


def test_switched_off_is_the_core_of_the_prior():
    prior = ARDPrior(a0=1e-5, b0=1e-4)
    assert prior.switched_off(torch.tensor([0.0, 0.01, 0.02])).tolist() == [True, True, False]


@pytest.mark.parametrize("spec, expected", [
    ("ard", ARDPrior()), ({"kind": "gaussian", "precision": 3.0}, GaussianPrior(3.0)),
    (ARDPrior(1e-3, 2e-3), ARDPrior(1e-3, 2e-3)), (None, None)])
def test_make_prior_accepts_names_dicts_and_objects(spec, expected):
    prior = make_prior(spec)
    assert (prior is None and expected is None) or prior.config() == expected.config()


@pytest.mark.parametrize("spec, match", [
    ({"kind": "ard", "a0": 0.0}, "a0=0.0"), ({"kind": "ard", "b0": -1}, "b0=-1"),
    ({"kind": "gaussian", "precision": 0}, "precision=0"), ("laplace", "kind 'laplace'"),
    ({"kind": "ard", "alpha": 1}, "does not take")])
def test_make_prior_rejects_bad_settings(spec, match):
    with pytest.raises(ValueError, match=match):
        make_prior(spec)
    with pytest.raises(TypeError, match="must be None"):
        make_prior(3.0)


def test_vae_map_loss_holds_the_prior_over_training_frames_and_settings_round_trip():
    x = linear_gaussian(200, 0)
    model = VariationalAutoEncoder(3, 1, hidden=(), activation=None, decoder_prior={"kind": "ard", "a0": 1e-3,
                                                                                     "b0": 2e-3})
    assert model.get_params()["decoder_prior"] == {"kind": "ard", "a0": 1e-3, "b0": 2e-3}
    twin = VariationalAutoEncoder(**model.get_params())
    assert twin.decoder_prior == model.decoder_prior
    with pytest.raises(ValueError, match="train it with mdcvkit.training.Trainer"):
        model.loss(torch.as_tensor(x))
    fit = Trainer(max_epochs=3, batch_size=50, validation_fraction=0.25, seed=0).fit(model, x)
    trained = fit.model
    assert trained.n_train == 150
    _, terms = trained.loss(torch.as_tensor(x))
    expected = trained._decoder_prior.penalty(trained.decoder_parameters()) / 150
    assert float(terms["prior"]) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert "train_prior" in fit.history


def test_ard_switches_off_the_decoder_weight_of_a_feature_the_latent_does_not_explain():
    x = linear_gaussian(200, 0, noise_feature=True)
    fits = {}
    for name, prior in (("ard", {"kind": "ard", "a0": 1e-3, "b0": 1e-3}), ("none", None)):
        model = VariationalAutoEncoder(4, 1, hidden=(), activation=None, decoder_prior=prior)
        fits[name] = Trainer(max_epochs=400, batch_size=200, learning_rate=2e-2, validation_fraction=0,
                             patience=400, seed=0).fit(model, x).model
    weight = {name: model.decoder[0].weight.detach()[:, 0] for name, model in fits.items()}
    ard = fits["ard"]._decoder_prior
    assert bool(ard.switched_off(weight["ard"][3:]).all())  # z -> the independent noise feature: off
    assert not bool(ard.switched_off(weight["ard"][:3]).any())  # z -> the explained features: on
    assert abs(float(weight["none"][3])) > abs(float(weight["ard"][3]))


def test_checkpoint_fingerprint_names_the_prior(tmp_path):
    x = linear_gaussian(200, 0)
    path = tmp_path / "state.pt"
    model = VariationalAutoEncoder(3, 1, hidden=(4,), decoder_prior={"kind": "ard", "a0": 1e-3, "b0": 1e-3})
    Trainer(max_epochs=2, seed=0, checkpoint=path).fit(model, x)
    other = VariationalAutoEncoder(3, 1, hidden=(4,), decoder_prior={"kind": "ard", "a0": 1e-2, "b0": 1e-3})
    with pytest.raises(ValueError, match="decoder_prior"):
        Trainer(max_epochs=2, seed=0, checkpoint=path).fit(other, x)
