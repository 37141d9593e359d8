"""Tests of mdcvkit.models: the autoencoder family, each loss against a hand computation, and
AutoencoderCV with every model (time-lagged pairs, generation, clusters, save/load, errors)."""

import numpy as np
import pytest
import torch
from conftest import SHORT, STEP
from scipy.stats import norm

import mdcvkit as mk
from mdcvkit.models import (
    MODELS,
    AutoEncoder,
    DenoisingAutoEncoder,
    GaussianMixtureVAE,
    TimeLaggedAutoEncoder,
    VariationalAutoEncoder,
    WassersteinAutoEncoder,
)
from mdcvkit.models.losses import gaussian_kl, gaussian_nll, mmd_per_frame, standard_normal_kl
from mdcvkit.training import Trainer

#: Settings of the GMVAE checks (Adam learning rate, epochs, frame step of the alanine-dipeptide run).
FOUR_WELL_LR, FOUR_WELL_EPOCHS = 1e-2, 40
ALA_STEP, ALA_EPOCHS = 40, 40


def _fitted_normalization(model, x):
    model.normalization.fit(torch.as_tensor(x))
    return model


def _numpy_params(module):
    return [(layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy())
            for layer in module if isinstance(layer, torch.nn.Linear)]


def _mlp(params, x):
    """The FeedForward network by hand (tanh between layers)."""
    for k, (weight, bias) in enumerate(params):
        x = x @ weight.T + bias
        if k < len(params) - 1:
            x = np.tanh(x)
    return x


@pytest.fixture
def batch():
    rng = np.random.default_rng(1)
    return rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(7, 5)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# pure loss functions


def test_gaussian_nll_matches_scipy():
    rng = np.random.default_rng(0)
    x, mean, log_var = rng.normal(size=(3, 6, 4))
    expected = -norm.logpdf(x, mean, np.exp(0.5 * log_var)).sum(axis=1)
    got = gaussian_nll(*(torch.as_tensor(a) for a in (x, mean, log_var)))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_gaussian_kl_closed_form_and_monte_carlo():
    rng = np.random.default_rng(0)
    mq, lq, mp, lp = (torch.as_tensor(a) for a in rng.normal(scale=0.5, size=(4, 3)))
    kl = float(gaussian_kl(mq, lq, mp, lp))
    z = mq + torch.exp(0.5 * lq) * torch.as_tensor(rng.normal(size=(400_000, 3)))
    log_q = -gaussian_nll(z, mq.expand_as(z), lq.expand_as(z))
    log_p = -gaussian_nll(z, mp.expand_as(z), lp.expand_as(z))
    assert kl == pytest.approx(float((log_q - log_p).mean()), abs=0.01)
    zeros = torch.zeros(3)
    torch.testing.assert_close(standard_normal_kl(mq, lq), gaussian_kl(mq, lq, zeros, zeros))
    assert float(gaussian_kl(mq, lq, mq, lq)) == pytest.approx(0.0, abs=1e-12)


def test_mmd_per_frame_is_the_unbiased_u_statistic():
    rng = np.random.default_rng(0)
    z, p = rng.normal(size=(2, 9, 2))
    h = 0.8

    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * h * h))

    n = len(z)
    off = ~np.eye(n, dtype=bool)
    expected = k(z, z)[off].sum() / (n * (n - 1)) + k(p, p)[off].sum() / (n * (n - 1)) - 2 * k(z, p).mean()
    per_frame = mmd_per_frame(torch.as_tensor(z), torch.as_tensor(p), h)
    assert per_frame.shape == (n,)
    assert float(per_frame.mean()) == pytest.approx(expected, rel=1e-12)
    # blocks: the mean of per-block U-statistics
    blocks = mmd_per_frame(torch.as_tensor(z), torch.as_tensor(p), h, block=4)
    first = mmd_per_frame(torch.as_tensor(z[:4]), torch.as_tensor(p[:4]), h)
    torch.testing.assert_close(blocks[:4], first)


# --------------------------------------------------------------------------------------------------
# each model's per-frame loss terms against a hand computation (numpy, float64)


def test_tae_loss_is_lagged_reconstruction(batch):
    x, target = batch
    torch.manual_seed(0)
    model = _fitted_normalization(TimeLaggedAutoEncoder(5, 2, hidden=(4,)), x).eval()
    assert TimeLaggedAutoEncoder.time_lagged and not AutoEncoder.time_lagged
    mean, scale = model.normalization.mean.numpy(), model.normalization.scale.numpy()
    xn, tn = (x - mean) / scale, (target - mean) / scale
    decoded = _mlp(_numpy_params(model.decoder), _mlp(_numpy_params(model.encoder), xn))
    terms = model.loss_terms(torch.as_tensor(x), torch.as_tensor(target))
    expected = ((decoded - tn) ** 2).mean(1)
    np.testing.assert_allclose(terms["reconstruction"].detach().numpy(), expected, rtol=1e-5)


def test_vae_loss_by_hand(batch):
    x, target = batch
    torch.manual_seed(0)
    model = _fitted_normalization(VariationalAutoEncoder(5, 2, hidden=(4,), beta=0.5), x)
    with torch.no_grad():
        model.decoder_log_var.copy_(torch.linspace(-1, 1, 5))
    mean, scale = model.normalization.mean.numpy(), model.normalization.scale.numpy()
    xn, tn = (x - mean) / scale, (target - mean) / scale
    mu, log_var = np.split(_mlp(_numpy_params(model.encoder), xn), 2, axis=1)
    log_var_x = np.linspace(-1, 1, 5)
    kl = 0.5 * (mu ** 2 + np.exp(log_var) - 1 - log_var).sum(1)

    def nll(z):
        return -norm.logpdf(tn, _mlp(_numpy_params(model.decoder), z), np.exp(0.5 * log_var_x)).sum(1)

    terms = model.eval().loss_terms(torch.as_tensor(x), torch.as_tensor(target))  # z = mean
    np.testing.assert_allclose(terms["reconstruction"].detach().numpy(), nll(mu), rtol=1e-5)
    np.testing.assert_allclose(terms["kl"].detach().numpy(), 0.5 * kl, rtol=1e-5)
    torch.manual_seed(3)  # training mode: reparametrised sample z = mu + sigma * eps
    eps = torch.randn(7, 2).double().numpy()
    torch.manual_seed(3)
    terms = model.train().loss_terms(torch.as_tensor(x), torch.as_tensor(target))
    expected = nll(mu + np.exp(0.5 * log_var) * eps)
    np.testing.assert_allclose(terms["reconstruction"].detach().numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(model.encode(torch.as_tensor(x)).detach().numpy(), mu, rtol=1e-5, atol=1e-6)


def test_gmvae_loss_by_hand(batch):
    x, target = batch
    torch.manual_seed(0)
    k = 3
    model = _fitted_normalization(GaussianMixtureVAE(5, 2, hidden=(4,), n_clusters=k), x).eval()
    mean, scale = model.normalization.mean.numpy(), model.normalization.scale.numpy()
    xn, tn = (x - mean) / scale, (target - mean) / scale
    logits = _mlp(_numpy_params(model.classifier), xn)
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    prior_mean = model.prior_mean.detach().double().numpy()
    prior_log_var = model.prior_log_var.detach().double().numpy()
    rec, kl_z, cv = np.zeros(7), np.zeros(7), np.zeros((7, 2))
    for y in range(k):
        onehot = np.zeros((7, k))
        onehot[:, y] = 1
        mu, log_var = np.split(_mlp(_numpy_params(model.encoder), np.hstack([xn, onehot])), 2, axis=1)
        decoded = _mlp(_numpy_params(model.decoder), mu)
        rec += pi[:, y] * -norm.logpdf(tn, decoded, 1.0).sum(1)
        kl = 0.5 * (prior_log_var[y] - log_var + (np.exp(log_var) + (mu - prior_mean[y]) ** 2)
                    / np.exp(prior_log_var[y]) - 1).sum(1)
        kl_z += pi[:, y] * kl
        cv += pi[:, [y]] * mu
    terms = model.loss_terms(torch.as_tensor(x), torch.as_tensor(target))
    np.testing.assert_allclose(terms["reconstruction"].detach().numpy(), rec, rtol=1e-5)
    np.testing.assert_allclose(terms["kl_z"].detach().numpy(), kl_z, rtol=1e-5)
    kl_y = (pi * np.log(k * pi)).sum(1)
    np.testing.assert_allclose(terms["kl_y"].detach().numpy(), kl_y, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(model.encode(torch.as_tensor(x)).detach().numpy(), cv, rtol=1e-5, atol=1e-6)
    probabilities = model.cluster_probabilities(torch.as_tensor(x)).detach().numpy()
    np.testing.assert_allclose(probabilities, pi, rtol=1e-5)


def test_wae_loss_by_hand(batch, monkeypatch):
    x, target = batch
    torch.manual_seed(0)
    model = _fitted_normalization(WassersteinAutoEncoder(5, 2, hidden=(4,), mmd_weight=10.0,
                                                         kernel_bandwidth=0.7), x).train()
    prior = np.random.default_rng(5).normal(size=(7, 2))
    monkeypatch.setattr(model, "sample_prior",
                        lambda n, generator=None: torch.as_tensor(prior, dtype=torch.float32))
    mean, scale = model.normalization.mean.numpy(), model.normalization.scale.numpy()
    xn, tn = (x - mean) / scale, (target - mean) / scale
    z = _mlp(_numpy_params(model.encoder), xn)
    decoded = _mlp(_numpy_params(model.decoder), z)

    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * 0.7 ** 2))

    off = 1 - np.eye(7)
    mmd = (k(z, z) * off).sum(1) / 6 + (k(prior, prior) * off).sum(1) / 6 - 2 * k(z, prior).mean(1)
    terms = model.loss_terms(torch.as_tensor(x), torch.as_tensor(target))
    expected = ((decoded - tn) ** 2).mean(1)
    np.testing.assert_allclose(terms["reconstruction"].detach().numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(terms["mmd"].detach().numpy(), 10 * mmd, rtol=1e-4, atol=1e-6)


def test_wae_validation_loss_is_deterministic(batch):
    x, _ = batch
    model = _fitted_normalization(WassersteinAutoEncoder(5, 2), x).eval()
    a = model.loss_terms(torch.as_tensor(x), torch.as_tensor(x))["mmd"]
    b = model.loss_terms(torch.as_tensor(x), torch.as_tensor(x))["mmd"]
    torch.testing.assert_close(a, b)


def test_dae_corrupts_inputs_in_training_only(batch):
    x, target = batch
    torch.manual_seed(0)
    model = _fitted_normalization(DenoisingAutoEncoder(5, 2, hidden=(4,), noise=0.3), x)
    mean, scale = model.normalization.mean.numpy(), model.normalization.scale.numpy()
    tn = (target - mean) / scale

    def reconstruction(inputs):
        encoded = _mlp(_numpy_params(model.encoder), (inputs - mean) / scale)
        decoded = _mlp(_numpy_params(model.decoder), encoded)
        return ((decoded - tn) ** 2).mean(1)

    clean = model.eval().loss_terms(torch.as_tensor(x), torch.as_tensor(target))["reconstruction"]
    np.testing.assert_allclose(clean.detach().numpy(), reconstruction(x), rtol=1e-5)
    torch.manual_seed(4)
    eps = torch.randn(7, 5).numpy()
    torch.manual_seed(4)
    noisy = model.train().loss_terms(torch.as_tensor(x), torch.as_tensor(target))["reconstruction"]
    np.testing.assert_allclose(noisy.detach().numpy(), reconstruction(x + 0.3 * eps), rtol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_through_the_one_engine(name):
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(300, 2))
    features = np.tanh(latent @ rng.normal(size=(2, 6))) + 0.05 * rng.normal(size=(300, 6))
    torch.manual_seed(0)
    model = MODELS[name](6, 2, hidden=(8,))
    fit = Trainer(max_epochs=4, batch_size=64, seed=0).fit(
        model, features.astype(np.float32), lengths=[150, 150], lag=2 if model.time_lagged else 0)
    history = fit.history
    assert np.all(np.isfinite(history["train"])) and np.all(np.isfinite(history["validation"]))
    terms = [v for v in history.data_vars if v.startswith("train_")]
    np.testing.assert_allclose(sum(history[t] for t in terms), history["train"], rtol=1e-5)
    assert not fit.model.training
    x = torch.as_tensor(features[:20], dtype=torch.float32)
    fit.model.train()  # the CV is the encoder mean: deterministic even in training mode
    torch.testing.assert_close(fit.model.encode(x), fit.model.encode(x))


def test_model_setting_errors():
    with pytest.raises(ValueError, match="n_clusters=1 must be an integer >= 2"):
        GaussianMixtureVAE(6, 2, n_clusters=1)
    with pytest.raises(ValueError, match="beta=-1 must be a finite number >= 0"):
        VariationalAutoEncoder(6, 2, beta=-1)
    with pytest.raises(ValueError, match="kernel_bandwidth=0 must be a finite number > 0"):
        WassersteinAutoEncoder(6, 2, kernel_bandwidth=0)
    with pytest.raises(ValueError, match="noise='a lot' must be a number"):
        DenoisingAutoEncoder(6, 2, noise="a lot")
    with pytest.raises(ValueError, match=r"cluster=3 must be an integer in \[0, 1\]"):
        GaussianMixtureVAE(6, 2, n_clusters=2).sample_prior(4, cluster=3)
    with pytest.raises(ValueError, match="applies to model='gmvae' only"):
        VariationalAutoEncoder(6, 2).sample_prior(4, cluster=0)


# --------------------------------------------------------------------------------------------------
# AutoencoderCV with every model on the shipped alanine dipeptide (short runs)


def test_short_fit_cv_and_save_load_round_trip(tmp_path, heavy, short_fit):
    cv = short_fit.results.cv
    assert cv.dims == ("frame", "cv") and cv.shape == (1000, 2) and np.all(np.isfinite(cv.values))
    again = short_fit.transform(heavy, step=STEP)
    np.testing.assert_allclose(again.values, cv.values, atol=1e-5)  # deterministic encoder mean
    loaded = mk.AutoencoderCV.load(short_fit.save(tmp_path / "cv.pt"))
    assert loaded.model_name == short_fit.model_name
    # every setting of the model is saved, defaults included (read back from its __init__ signature)
    assert loaded.results.model.model.get_params() == short_fit.results.model.model.get_params()
    assert short_fit.model_kwargs.items() <= loaded.model_kwargs.items()
    np.testing.assert_array_equal(loaded.transform(heavy, stop=200).values,
                                  short_fit.transform(heavy, stop=200).values)
    if hasattr(short_fit.results.model.model, "sample_prior"):
        a, b = short_fit.generate(5, seed=3), loaded.generate(5, seed=3)
        np.testing.assert_array_equal(a.trajectory.timeseries(), b.trajectory.timeseries())


def test_tae_pairs_never_cross_trajectories(heavy):
    """With lag = one trajectory's length minus one, each of the four trajectories gives exactly one pair."""
    cv = mk.AutoencoderCV(heavy, n_cv=1, model="tae", lag=3, max_epochs=1, validation_fraction=0.0,
                          batch_size=4, seed=0).run(step=6250)  # 4 frames per trajectory
    assert cv._lengths == [4] * 4
    source, target = mk.training.lagged_pairs(cv._lengths, cv.lag)
    np.testing.assert_array_equal(source, [0, 4, 8, 12])
    np.testing.assert_array_equal(target, [3, 7, 11, 15])


def test_gmvae_clusters_and_cluster_generation(heavy):
    cv = mk.AutoencoderCV(heavy, n_cv=2, model="gmvae", n_clusters=3, **SHORT).run(step=STEP)
    clusters = cv.results.clusters
    assert clusters["probability"].dims == ("frame", "cluster") and clusters["probability"].shape == (1000, 3)
    np.testing.assert_allclose(clusters["probability"].sum("cluster"), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(clusters["assignment"], clusters["probability"].argmax("cluster"))
    assert cv.generate(3, cluster=2).trajectory.n_frames == 3
    with pytest.raises(ValueError, match=r"cluster=3 must be an integer in \[0, 2\]"):
        cv.generate(3, cluster=3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(model="ae", beta=2.0), r"beta=2.0 not a setting of model='ae'; its own settings are none"),
    (dict(model="vae", n_clusters=3),
     r"n_clusters=3 not a setting of model='vae'; its own settings are \['beta', 'decoder_prior'\]"),
    (dict(model="tae"), "model='tae' is time-lagged and needs lag >= 1"),
    (dict(model="tae", lag=-1), "lag=-1 must be an integer >= 0; pass the lag in frames"),
    (dict(model="gmvae", n_clusters=1), "n_clusters=1 must be an integer >= 2"),
    (dict(model="wae", mmd_weight=-1), "mmd_weight=-1 must be a finite number >= 0"),
])
def test_bad_model_settings(heavy, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mk.AutoencoderCV(heavy, **kwargs)


def test_lag_longer_than_trajectories(heavy):
    with pytest.raises(ValueError, match="lag=10 must be smaller than the longest trajectory \\(4 analysed"):
        mk.AutoencoderCV(heavy, model="tae", lag=10, validation_fraction=0.0).run(step=6250)


# --------------------------------------------------------------------------------------------------
# feature importance


# --------------------------------------------------------------------------------------------------
# physics checks of the GMVAE (Bozkurt Varolgüneş et al. 2020)


def four_well_trajectories(n_trajectories=4, n_frames=2000, stride=100, dt=1e-3, barrier=4.0, seed=0):
    """Overdamped Langevin dynamics on V(x) = barrier (1 + cos πx) / 2 + (x / 3.5)¹², in units of kT.

    Wells at x = -3, -1, 1, 3 separated by barriers of ``barrier`` kT at x = -2, 0, 2 (D = 1, time
    step ``dt``, Euler–Maruyama); trajectory k starts in well k mod 4. Returns x, shape
    (n_trajectories * n_frames,), trajectory after trajectory.
    """
    rng = np.random.default_rng(seed)
    x = np.array([-3.0, -1.0, 1.0, 3.0])[np.arange(n_trajectories) % 4]
    frames = np.empty((n_frames, n_trajectories))
    for t in range(n_frames * stride):
        force = barrier * np.pi / 2 * np.sin(np.pi * x) - 12 * x ** 11 / 3.5 ** 12
        x = x + force * dt + np.sqrt(2 * dt) * rng.standard_normal(n_trajectories)
        if t % stride == stride - 1:
            frames[t // stride] = x
    return frames.T.reshape(-1)


def matched_confusion(labels, clusters, n):
    """Row-normalised confusion matrix (label x cluster) with clusters matched to labels (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((n, n))
    np.add.at(counts, (labels, clusters), 1)
    counts /= counts.sum(axis=1, keepdims=True)
    _, matched = linear_sum_assignment(-counts)
    return counts[:, matched]


def test_gmvae_finds_the_four_wells():
    """Every diagonal entry of the matched confusion matrix (wells x clusters) is >= 0.9."""
    x = four_well_trajectories()
    wells = np.digitize(x, [-2.0, 0.0, 2.0])
    assert np.bincount(wells).min() > 500  # every well sampled
    features = np.column_stack([x, x ** 2]).astype(np.float32)  # n_cv = 1 < n_features
    torch.manual_seed(0)
    model = GaussianMixtureVAE(2, 1, hidden=(32,), n_clusters=4)
    trainer = Trainer(max_epochs=FOUR_WELL_EPOCHS, patience=FOUR_WELL_EPOCHS, batch_size=128,
                      learning_rate=FOUR_WELL_LR, seed=0)
    fit = trainer.fit(model, features, lengths=[2000] * 4)
    with torch.no_grad():
        clusters = fit.model.cluster_probabilities(torch.as_tensor(features)).argmax(dim=1).numpy()
    diagonal = np.diag(matched_confusion(wells, clusters, 4))
    assert diagonal.min() >= 0.9, diagonal


def test_gmvae_clusters_are_alanine_dipeptide_basins(ala2, heavy):
    """Clusters of aligned heavy-atom positions map onto β/C5, PII, αR, αL with purity >= 0.85 on φ/ψ."""
    from MDAnalysis.analysis.dihedrals import Ramachandran

    step = ALA_STEP
    phi, psi = Ramachandran(ala2.select_atoms("resname ALA")).run(step=step).results.angles[:, 0].T
    basins = np.where(phi > 0, 3, np.where((psi > -120) & (psi < 50), 2, np.where(phi < -100, 0, 1)))
    cv = mk.AutoencoderCV(heavy, n_cv=2, model="gmvae", n_clusters=5, hidden=(32,), max_epochs=ALA_EPOCHS,
                          learning_rate=3e-3, seed=0).run(step=step)
    counts = np.zeros((5, 4))
    np.add.at(counts, (cv.results.clusters["assignment"].values, basins), 1)
    purity = counts.max(axis=1).sum() / counts.sum()
    assert purity >= 0.85, counts


# --------------------------------------------------------------------------------------------------
# the other checks of the issue on alanine dipeptide: VAE latent mean, reconstructions, TAE vs AE

FAMILY_STEP, FAMILY_EPOCHS, FAMILY_LAG = 10, 60, 10  # 10,000 frames; lag 10 frames = 100 ps


@pytest.fixture(scope="module")
def family(heavy):
    return {name: mk.AutoencoderCV(heavy, n_cv=2, model=name, lag=FAMILY_LAG if name == "tae" else 0,
                                   max_epochs=FAMILY_EPOCHS, seed=0).run(step=FAMILY_STEP)
            for name in ("ae", "tae", "vae", "wae", "dae")}


def test_vae_latent_mean_determines_backbone_dihedrals(ala2, family):
    from MDAnalysis.analysis.dihedrals import Ramachandran

    angles = np.deg2rad(Ramachandran(ala2.select_atoms("resname ALA")).run(step=FAMILY_STEP).results.angles[:, 0])
    targets = np.hstack([np.sin(angles), np.cos(angles)])
    cv = family["vae"]
    score = mk.metrics.knn_score(cv.results.cv, targets, lengths=cv._lengths)
    assert float(score) >= 0.9, score.attrs["per_target"]


@pytest.mark.parametrize("name", ["vae", "wae", "dae"])
def test_held_out_reconstructions(family, name):
    """Spearman correlation >= 0.99 between held-out aligned coordinates and their reconstruction."""
    from scipy.stats import spearmanr

    cv = family[name]
    held_out = cv.results.features[cv.results.validation]
    model = cv.results.model.model
    with torch.no_grad():
        reconstructed = model.decode(model.encode(torch.as_tensor(held_out))).numpy()
    assert ((reconstructed - held_out) ** 2).mean() < 0.05  # Å² per coordinate
    assert spearmanr(reconstructed.ravel(), held_out.ravel()).statistic >= 0.99


def test_tae_follows_the_slowest_process_better_than_ae(family):
    """R² of the first TICA component (deeptime, same features and lag) fitted linearly on each CV."""
    from deeptime.decomposition import TICA

    features, lengths = family["ae"].results.features, family["ae"]._lengths
    trajectories = np.split(np.asarray(features), np.cumsum(lengths)[:-1])
    tica = TICA(lagtime=FAMILY_LAG, dim=1).fit(trajectories).fetch_model()
    ic1 = np.concatenate([tica.transform(t) for t in trajectories])[:, 0]

    def r2(cv):
        design = np.column_stack([cv.results.cv.values, np.ones(len(ic1))])
        residual = ic1 - design @ np.linalg.lstsq(design, ic1, rcond=None)[0]
        return 1 - residual.var() / ic1.var()

    assert r2(family["tae"]) >= 0.8 and r2(family["tae"]) > r2(family["ae"]) + 0.2, (r2(family["tae"]),
                                                                                   r2(family["ae"]))


def test_gmvae_time_lagged_variant(heavy):
    """With a lag the GMVAE decodes x(t + lag) from x(t); the pairs stay inside the four trajectories."""
    cv = mk.AutoencoderCV(heavy, n_cv=2, model="gmvae", n_clusters=3, lag=5, **SHORT).run(step=STEP)
    assert cv.lag == 5 and np.all(np.isfinite(cv.results.loss["validation"]))
    assert cv.results.clusters["probability"].shape == (1000, 3)
