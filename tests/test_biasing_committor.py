"""Tests of mdcvkit.biasing.committor: the committor of a 2-D double well against its exact committor and rate.

Oracle (tests/committor_cases.py): the Brownian dynamics of ``DoubleWell2D(barrier=2)`` (8 kT), whose
committor and transition-path-theory rate come from the generator on a 161² grid (numpy/scipy only).
"""

import warnings

import numpy as np
import openmm
import pytest
import torch
from committor_cases import exact_committor
from scipy.special import logsumexp

import mdcvkit as mk
from mdcvkit.biasing import Basin, Committor, CommittorOPES, UmbrellaWindows, add_cv_bias, mbar_log_weights
from mdcvkit.biasing.committor import sampling
from mdcvkit.biasing.committor.sampling import UMBRELLA, umbrella_energy
from mdcvkit.training import ConvergenceWarning

A_EDGE = 0.8  # A: x1 <= -0.8, B: x1 >= 0.8 (nm, reduced)
SAMPLING = {"n_samples": 60}


def _loop(toy, **kwargs):
    a, b = Basin(toy.cv("x1"), -5, -A_EDGE), Basin(toy.cv("x1"), A_EDGE, 5)
    settings = {"state_a": a, "state_b": b, "starts": [toy.positions, -toy.positions], "max_iterations": 3,
                "sampling": SAMPLING, "model": {"hidden": (16,)},
                "trainer": {"batch_size": 128, "max_epochs": 300, "patience": 30}, **kwargs}
    return Committor(toy, **settings)


@pytest.fixture(scope="module")
def toy():
    return mk.systems.DoubleWell2D(barrier=2.0)


@pytest.fixture(scope="module")
def exact(toy):
    return exact_committor(toy.potential, toy.bounds, toy.beta, lambda x: x[:, 0] <= -A_EDGE,
                           lambda x: x[:, 0] >= A_EDGE)


@pytest.fixture(scope="module")
def fitted(toy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _loop(toy).run()


@pytest.mark.slow
def test_committor_matches_exact(fitted, exact):
    """RMSE of q against the exact committor on window frames with 0.1 < q_exact < 0.9 stays below 0.15.

    A guard against breakage, not the issue's target: with these short settings (60 frames per window,
    3 iterations, 16 hidden units) it measures 0.060 at seed 0 (0.024-0.095 over seeds 0-3); the default
    settings give 0.031-0.061 (docs/findings/committor.md).
    """
    frames = fitted.results.frames
    q_exact = exact[0](frames["positions"].values[:, 0, :2] / 10.0)
    middle = (q_exact > 0.1) & (q_exact < 0.9)
    assert middle.sum() > 50
    assert np.sqrt(np.mean((frames["q"].values[middle] - q_exact[middle]) ** 2)) <= 0.15


@pytest.fixture(scope="module")
def rate(fitted):
    return fitted.rate(n_bootstrap=20)  # a 95% percentile interval needs more than a handful


@pytest.mark.slow
def test_rate_order_of_magnitude(rate, exact):
    """The reactive-flux rate has the exact rate's order of magnitude, inside its bootstrap interval.

    A guard against breakage at seed 0 (0.41x the exact rate): with these short settings the rate spreads
    0.38x to 2.6x the exact rate over seeds 0-3, more than its bootstrap interval, which holds the committor
    fixed, says.
    """
    k = float(rate["rate"])
    assert 1 / 5 <= k / exact[1] <= 5
    assert float(rate["low"]) <= k <= float(rate["high"])


@pytest.mark.slow
@pytest.mark.xfail(reason="partial: with windows along logit q the rate is no longer biased (geometric mean 1.19x "
                          "over seeds 0-3 at the default settings) but scatters 0.47x-2.5x from seed to seed; these "
                          "short settings give 0.41x at seed 0 (docs/findings/committor.md)",
                   strict=False)
def test_rate_matches_exact(rate, exact):
    """The issue's target: the rate within a factor 1.3 of the exact rate."""
    assert 1 / 1.3 <= float(rate["rate"]) / exact[1] <= 1.3


@pytest.mark.slow
def test_lagged_flux_agrees_with_the_generator(fitted):
    """For Brownian dynamics both reactive fluxes estimate the same rate on the same frames (τ = 20 fs)."""
    generator, lagged = fitted.rate(n_bootstrap=0), fitted.rate(n_bootstrap=0, flux="lagged")
    assert generator.attrs["flux"] == "generator" and lagged.attrs["flux"] == "lagged"
    assert 0.7 < float(lagged["rate"]) / float(generator["rate"]) < 1.3
    with pytest.raises(ValueError, match="flux='langevin' is not known"):
        fitted.rate(flux="langevin")


@pytest.mark.slow
def test_committor_test_gives_p(fitted):
    """Shooting from q ≈ 0.5 reaches B first about half the time."""
    test = fitted.committor_test(n_configurations=10, n_trajectories=10, seed=1)
    assert abs(float(test["p_b"].mean()) - 0.5) <= 0.1
    assert int(test["undecided"].sum()) == 0


@pytest.mark.slow
def test_transition_states_and_results(fitted):
    tse = fitted.transition_states()
    assert np.all((tse["q"] >= 0.45) & (tse["q"] <= 0.55))
    assert np.isclose(float(tse["weight"].sum()), 1.0)
    assert np.all(np.abs(tse["positions"].values[:, 0, 0] / 10.0) < A_EDGE)  # between the basins
    iterations = fitted.results.iterations
    assert list(iterations["iteration"].values) == list(range(fitted.max_iterations + 1))  # none converged early
    assert np.isclose(logsumexp(fitted.results.frames["log_weight"].values), 0.0)
    with pytest.raises(ValueError, match="transition-state ensemble is empty"):
        fitted.transition_states(0.5, 0.5 + 1e-9)


def test_mbar_recovers_exact_density():
    """Windows drawn exactly from biased 1-D densities, recombined, give the unbiased density."""
    rng = np.random.default_rng(0)
    x = np.linspace(-2, 2, 2001)
    beta_u = 3 * (x**2 - 1) ** 2
    centres, kappa = np.linspace(-1.2, 1.2, 9), 20.0
    samples, counts = [], []
    for c in centres:
        p = np.exp(-beta_u - 0.5 * kappa * (x - c) ** 2)
        samples.append(rng.choice(x, 2000, p=p / p.sum()))
        counts.append(2000)
    samples = np.concatenate(samples)
    reduced = 0.5 * kappa * (samples[None] - centres[:, None]) ** 2
    log_w, f, overlap = mbar_log_weights(reduced, counts)
    exact = np.exp(-beta_u)
    expected = np.sum(exact * (x > 0)) / exact.sum()
    assert abs(np.sum(np.exp(log_w) * (samples > 0)) - expected) < 0.03
    exact_f = np.array([-np.log(np.sum(exact * np.exp(-0.5 * kappa * (x - c) ** 2))) for c in centres])
    assert np.allclose(f, exact_f - exact_f[0], atol=0.25)
    assert overlap.shape == (9, 9) and f[0] == 0.0


def test_umbrella_energy_is_the_bias_the_windows_run(toy):
    """The NumPy bias MBAR weighs with equals the OpenMM expression the windows run: harmonic within
    ``width`` of the target, linear beyond, flat past ``clip``, and nothing on the open side of an end window."""
    system = openmm.XmlSerializer.clone(toy.system)
    parameters = {"kappa": 3.0, "width": 0.5, "clip": 1.2, "target": 0.2, "below": 0.0, "above": 0.0}
    force = add_cv_bias(system, toy.cv("x1"), UMBRELLA, toy.positions, route="expression", parameters=parameters)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for below, above in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
        context.setParameter("below", below)
        context.setParameter("above", above)
        for x1 in (-1.5, 0.0, 0.1, 0.2, 0.5, 0.9, 1.5):
            positions = np.array(toy.positions, dtype=float)
            positions[0, 0] = x1
            context.setPositions(positions)
            state = context.getState(getEnergy=True, groups={force.getForceGroup()})
            with torch.no_grad():
                z = float(toy.cv("x1")(torch.as_tensor(positions[None] * 10.0, dtype=torch.float32))[0, 0])
            expected = umbrella_energy(z, 0.2, 3.0, 0.5, 1.2, below, above)
            assert state.getPotentialEnergy()._value == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_mbar_without_overlap_is_refused():
    reduced = np.array([[0.0, 0.0, 1e4, 1e4], [1e4, 1e4, 0.0, 0.0]])
    with pytest.raises(ValueError, match="MBAR did not converge"):
        mbar_log_weights(reduced, [2, 2])


def test_bad_input(toy):
    with pytest.raises(ValueError, match="pass at least one start in A and one in B"):
        _loop(toy, starts=[toy.positions, toy.positions])
    overlapping = Basin(toy.cv("x1"), -5, 5)
    with pytest.raises(ValueError, match="both state_a and state_b"):
        _loop(toy, state_a=overlapping)
    with pytest.raises(ValueError, match="lower=1.0 must be below upper=0.0"):
        Basin(toy.cv("x1"), 1.0, 0.0)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        UmbrellaWindows().sample(None, None, [0.5, 1.2], [], 0)
    with pytest.raises(ValueError, match="n_windows=1 must be an integer >= 2"):
        UmbrellaWindows(n_windows=1)
    with pytest.raises(ValueError, match="call run"):
        _loop(toy).rate()


def test_a_window_that_blows_up_starts_again(toy, monkeypatch):
    """A window whose run blows up is run again with new velocities; one that always does is an error."""
    calls = []
    real = sampling._shoot

    def flaky(context, *args):
        calls.append(1)
        if len(calls) == 1 or always:
            raise openmm.OpenMMException("the positions are not finite")
        return real(context, *args)

    monkeypatch.setattr(sampling, "_shoot", flaky)
    loop = _loop(toy, max_iterations=1, sampling={"n_samples": 3, "n_windows": 3, "n_equilibration": 10})
    always = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        loop.run()
    assert loop.results.frames.sizes["frame"] == 9  # 3 windows x 3 frames, the first window run twice
    calls.clear()
    always = True
    with pytest.raises(ValueError, match="blew up 3 times"):
        _loop(toy, max_iterations=1, sampling={"n_samples": 3, "n_windows": 3, "n_equilibration": 10}).run()


def test_unreached_basin(toy):
    """A basin no frame enters is named."""
    far = Basin(toy.cv("x2"), 4.4, 10)  # far up the harmonic wall (80 kT): the B start rolls out at once
    start_b = -toy.positions.copy()
    start_b[0, 1] = 4.5
    loop = _loop(toy, state_b=far, starts=[toy.positions, start_b], max_iterations=1,
                 sampling={"n_samples": 5, "n_equilibration": 50})
    with pytest.raises(ValueError, match="reached state_b"):
        loop.run()


def test_state_file_resumes_and_refuses(toy, tmp_path, monkeypatch):
    path = tmp_path / "committor.pt"
    quick = {"max_iterations": 1, "sampling": {"n_samples": 10, "n_windows": 4}, "trainer": {"max_epochs": 5}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = _loop(toy, state_file=path, **quick).run()
        fresh = _loop(toy, **quick).run()  # the same seed gives the same committor
        with monkeypatch.context() as patch:
            patch.setattr(UmbrellaWindows, "sample", lambda *args, **kwargs: pytest.fail("resume sampled again"))
            again = _loop(toy, state_file=path, **quick).run()  # read back, nothing sampled
    assert np.array_equal(first.results.frames["q"], again.results.frames["q"])
    assert np.array_equal(first.results.frames["q"], fresh.results.frames["q"])
    with pytest.raises(ValueError, match="seed"):
        _loop(toy, state_file=path, seed=1, **quick).run()
    with pytest.raises(ValueError, match="sampler"):  # another sampler does not resume this one's state
        _loop(toy, state_file=path, **{**quick, "sampling": {"sampler": "opes", "n_samples": 10}}).run()


def test_opes_sampler_learns_the_committor(toy, exact):
    """OPES along logit q (its own weights, runs pooled by ESS) gives the committor between the basins.

    Short settings (400 frames, 2 iterations): a guard against breakage, measured RMSE 0.098 and 0.58x the
    exact rate at seed 0; seeds and settings: docs/findings/committor.md.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        loop = _loop(toy, max_iterations=2, sampling=CommittorOPES(n_samples=400)).run()
    frames = loop.results.frames
    q_exact = exact[0](frames["positions"].values[:, 0, :2] / 10.0)
    middle = (q_exact > 0.1) & (q_exact < 0.9)
    assert middle.sum() > 30  # OPES reached the transition region
    assert np.sqrt(np.mean((frames["q"].values[middle] - q_exact[middle]) ** 2)) <= 0.15
    assert np.isclose(logsumexp(frames["log_weight"].values), 0.0)
    assert np.all(np.isnan(loop.results.windows["free_energy"]))  # OPES has no windows' free energies
    assert 1 / 10 <= float(loop.rate(n_bootstrap=5)["rate"]) / exact[1] <= 10


def test_opes_sampler_bad_input(toy):
    with pytest.raises(ValueError, match="pace=75 must be a multiple of stride=50"):
        CommittorOPES(pace=75)
    with pytest.raises(ValueError, match="barrier"):
        CommittorOPES(barrier=0.0)
    with pytest.raises(ValueError, match="'metad' is not a sampler of the committor loop"):
        _loop(toy, sampling={"sampler": "metad"})
    with pytest.raises(TypeError, match="sampling must be an UmbrellaWindows, a CommittorOPES or a dict"):
        _loop(toy, sampling=42)


def test_rate_uses_the_friction_of_the_dynamics_run(toy):
    """The reactive flux's kT/(mγ) takes γ from the integrator passed, the toy's own otherwise."""
    integrator = openmm.BrownianIntegrator(toy.temperature, 2 * toy.friction, 0.001)
    assert _loop(toy, integrator=integrator).engine.friction == pytest.approx(2 * toy.friction)
    assert _loop(toy).engine.friction == toy.friction


def test_state_file_of_another_loop_is_refused(toy, tmp_path):
    path = tmp_path / "febilae.pt"
    torch.save({"version": 2, "records": [], "fingerprint": {}}, path)  # what IterativeCVLearning writes
    with pytest.raises(ValueError, match="is not a Committor state"):
        _loop(toy, state_file=path).run()
    torch.save({"kind": "mdcvkit.Committor", "version": 1, "records": []}, path)
    with pytest.raises(ValueError, match="has layout 1, written by another mdcvkit version"):
        _loop(toy, state_file=path).run()
