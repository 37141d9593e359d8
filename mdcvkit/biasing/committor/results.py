"""What a fitted :class:`~mdcvkit.biasing.Committor` gives: results, rates, transition states, shooting.

Private helpers of the estimator; its methods are the public face and carry the documentation.
"""

import numpy as np
import torch
import xarray as xr
from scipy.special import logsumexp

from ...export.openmm import NM_TO_ANGSTROM
from .._febilae import module_fingerprint
from .model import IN_B, NEITHER
from .sampling import Basin


def basin_fingerprint(basin):
    """What a basin depends on: its CV and bounds, or a function's name."""
    if isinstance(basin, Basin):
        return {"cv": module_fingerprint(basin.cv), "lower": basin.lower, "upper": basin.upper,
                "component": basin.component}
    return module_fingerprint(basin)


def conclude(loop, state):
    """Fill ``loop.results`` from the loop's state."""
    r, d = loop.results, state["data"]
    records = state["records"]
    r.models = [loop._cv(m) for m in state["models"]]
    r.committor = r.models[-1]
    r.converged = len(records) > 1 and records[-1]["rms_change"] < loop.tolerance
    names = {"n_frames": ("frames", "1"), "n_windows": ("windows", "1"), "rms_change": ("RMS change of q", "1"),
             "ess": ("effective sample size", "frames"), "min_overlap": ("smallest overlap of neighbours", "1"),
             "loss": ("best validation loss", "1"), "time_sampling": ("wall time of sampling", "s"),
             "time_mbar": ("wall time of MBAR", "s"), "time_training": ("wall time of training", "s")}  # fmt: skip
    r.iterations = xr.Dataset(
        {k: ("iteration", [rec[k] for rec in records], {"long_name": n, "units": u}) for k, (n, u) in names.items()},
        coords={"iteration": np.arange(len(records))}, attrs={"long_name": "committor iterations"})
    mask = d["iteration"] > 0
    if not np.any(mask):  # only the unbiased iteration ran
        r.frames = r.windows = r.overlap = None
        return
    states = np.array(state["states"], dtype=float)
    q = d["q"][mask, -1]
    r.frames = xr.Dataset(
        {"q": ("frame", q, {"long_name": "committor", "units": "1"}),
         "log_weight": ("frame", state["log_w"], {"long_name": "log weight (MBAR or OPES)", "units": "1"}),
         "label": ("frame", d["labels"][mask], {"long_name": "basin (0 A, 1 B, -1 neither)"}),
         "target": ("frame", states[d["state"][mask], 1], {"long_name": "window target", "units": "1"}),
         "iteration": ("frame", d["iteration"][mask]),
         "positions": (("frame", "atom", "xyz"), d["positions"][mask] * NM_TO_ANGSTROM, {"units": "Å"})},
        attrs={"long_name": "window frames"})  # fmt: skip
    r.windows = xr.Dataset(
        {"target": ("state", states[:, 1]), "kappa": ("state", states[:, 2], {"units": "kJ/mol"}),
         "iteration": ("state", states[:, 0].astype(int)),
         "free_energy": ("state", np.full(len(states), np.nan) if state["free_energies"] is None
                         else state["free_energies"], {"long_name": "MBAR free energy", "units": "kT"})},
        attrs={"long_name": "umbrella windows"})  # fmt: skip
    r.overlap = state["overlap"]


def _check_fitted(loop, call):
    if getattr(loop.results, "frames", None) is None:
        raise ValueError(f"{call} needs the window frames of a run: call run() with max_iterations >= 1 first")


def flux_terms(loop, frames):
    """Per-frame ``Σ_i kT/(m_i γ) |∇_i q|²`` (1/ps) of the committor; 0 in A and B."""
    e = loop.engine
    positions = torch.as_tensor(frames["positions"].values[:, loop.particles], dtype=torch.float32)
    positions.requires_grad_(True)
    q = loop.results.committor(positions)[:, 0]
    (gradient,) = torch.autograd.grad(q.sum(), positions)
    gradient = gradient.double().numpy() * NM_TO_ANGSTROM  # dq/dx in 1/nm
    diffusion = e.kT / (e.masses * e.friction)  # nm²/ps
    terms = np.einsum("i,nij->n", diffusion, gradient**2)
    return np.where(frames["label"].values == NEITHER, terms, 0.0)


def lagged_flux_terms(loop, q):
    """Per-frame ``(q(X_τ) − q(X_0))² / (2τ)`` (1/ps), q clamped to 0 on A and 1 on B at both ends."""
    data = loop._state["data"]
    mask = data["iteration"] > 0
    lagged = loop._q(loop._state["models"][-1], data["lagged"][mask])
    label = data["lagged_labels"][mask]
    lagged = np.where(label == NEITHER, lagged, (label == IN_B).astype(float))
    return (lagged - q) ** 2 / (2.0 * loop.engine.lag_time(loop.sampling.lag))


def _rate(terms, q_clamped, log_w):
    w = np.exp(log_w - logsumexp(log_w))
    flux = float(np.sum(w * terms))
    return flux / float(np.sum(w * (1 - q_clamped))), flux


def rate(loop, n_bootstrap, confidence, seed, flux):
    _check_fitted(loop, "rate()")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1), e.g. 0.95")
    if flux == "auto":
        flux = "generator" if loop.engine.brownian else "lagged"
    frames = loop.results.frames
    label = frames["label"].values
    q = np.where(label == NEITHER, frames["q"].values, (label == IN_B).astype(float))
    if flux == "generator":
        terms = flux_terms(loop, frames)
    elif flux == "lagged":
        terms = lagged_flux_terms(loop, q)
    else:
        raise ValueError(f"flux={flux!r} is not known; use 'generator' (Brownian dynamics), 'lagged' (any dynamics) "
                         "or 'auto'")
    log_w = frames["log_weight"].values
    k, total = _rate(terms, q, log_w)
    state = loop._state
    windows = state["data"]["state"][state["data"]["iteration"] > 0]
    groups = [np.flatnonzero(windows == window) for window in np.unique(windows)]
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_bootstrap):  # frames resampled within each window (each OPES run)
        pick = np.concatenate([rng.choice(group, len(group)) for group in groups])
        log_b = loop.sampling.log_weights(state, loop.engine.kT, pick)[0]
        samples.append(_rate(terms[pick], q[pick], log_b)[0])
    low, high = np.quantile(samples, [(1 - confidence) / 2, (1 + confidence) / 2]) if samples else (np.nan, np.nan)
    return xr.Dataset(
        {"rate": ((), k, {"long_name": "rate constant k_AB", "units": "1/ps"}),
         "low": ((), low, {"long_name": f"{confidence:.0%} bootstrap interval, lower", "units": "1/ps"}),
         "high": ((), high, {"long_name": f"{confidence:.0%} bootstrap interval, upper", "units": "1/ps"}),
         "flux": ((), total, {"long_name": "reactive flux", "units": "1/ps"}),
         "p_a": ((), float(np.sum(np.exp(log_w - logsumexp(log_w)) * (1 - q))),
                 {"long_name": "probability last in A", "units": "1"})},
        attrs={"n_bootstrap": n_bootstrap, "confidence": confidence, "friction": loop.engine.friction,
               "flux": flux})  # fmt: skip


def transition_state_ensemble(loop, lower, upper):
    _check_fitted(loop, "transition_states()")
    if not 0 <= lower < upper <= 1:
        raise ValueError(f"lower={lower!r}, upper={upper!r} must satisfy 0 <= lower < upper <= 1")
    frames = loop.results.frames
    keep = (frames["q"] >= lower) & (frames["q"] <= upper) & (frames["label"] == NEITHER)
    if not bool(keep.any()):
        raise ValueError(f"no window frame has {lower} <= q <= {upper}: the transition-state ensemble is empty; "
                         "widen the range or sample more windows near q = 0.5")
    tse = frames.isel(frame=np.flatnonzero(keep.values))
    weight = np.exp(tse["log_weight"].values - logsumexp(tse["log_weight"].values))
    return tse.assign(weight=("frame", weight, {"long_name": "weight within the ensemble", "units": "1"}))


def committor_test(loop, p, width, n_configurations, n_trajectories, max_steps, check_every, seed):
    _check_fitted(loop, "committor_test()")
    if not 0 < p < 1 or not 0 < width < 0.5:
        raise ValueError(f"p={p!r} must be in (0, 1) and width={width!r} in (0, 0.5), e.g. p=0.5, width=0.05")
    frames = loop.results.frames
    near = np.flatnonzero((np.abs(frames["q"].values - p) <= width) & (frames["label"].values == NEITHER))
    if near.size == 0:
        raise ValueError(f"no window frame has |q - {p}| <= {width}: nothing to shoot from; widen width")
    rng = np.random.default_rng(seed)
    picked = rng.choice(near, min(n_configurations, near.size), replace=False)
    e = loop.engine
    context = e.context(e.system, e.integrator(seed))
    outcome = np.full((len(picked), n_trajectories), np.nan)
    for c, n in enumerate(picked):
        for t in range(n_trajectories):
            context.setPositions(frames["positions"].values[n] / NM_TO_ANGSTROM)
            context.setVelocitiesToTemperature(e.temperature, int(rng.integers(1, 2**31 - 1)))
            for _ in range(0, max_steps, check_every):
                context.getIntegrator().step(check_every)
                x = context.getState(getPositions=True).getPositions(asNumpy=True)._value
                label = e.labels(x[None])[0]
                if label != NEITHER:
                    outcome[c, t] = float(label == IN_B)
                    break
    return xr.Dataset(
        {"q": ("configuration", frames["q"].values[picked], {"long_name": "predicted committor", "units": "1"}),
         "p_b": ("configuration", [np.nanmean(o) if np.isfinite(o).any() else np.nan for o in outcome],
                 {"long_name": "fraction reaching B first", "units": "1"}),
         "undecided": ("configuration", np.isnan(outcome).sum(axis=1),
                       {"long_name": f"trajectories in neither basin after {max_steps} steps"})},
        coords={"frame": ("configuration", picked)},
        attrs={"p": p, "width": width, "n_trajectories": n_trajectories})  # fmt: skip
