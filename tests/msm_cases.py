"""Shared cases of the mdcvkit.msm tests: a simulated double well and a four-state Markov chain.

The oracle is overdamped Langevin dynamics in a 1-D double well, simulated here with
numpy; its slowest relaxation time comes from the generator of the Smoluchowski
equation discretised on a fine grid (square-root approximation, a finite-volume
scheme that is exact for the stationary density and converges to the continuous
operator as the grid is refined).

Plain functions and constants, imported by tests/test_msm_*.py; each test module wraps the
builders it needs in module-scoped fixtures (``double_well``, ``chain_cv``).
"""

import numpy as np
import xarray as xr
from deeptime.markov.msm import MarkovStateModel
from scipy.linalg import eigh_tridiagonal

__all__ = ["BARRIER", "DIFFUSION", "DT_FRAME", "N_CLUSTERS", "LAGS", "simulate_double_well",
           "exact_slowest_timescale", "four_state_chain", "emit", "four_state_chain_cv",
           "as_dataarray"]

BARRIER = 3.0  # kT, V(x) = BARRIER (x^2 - 1)^2
DIFFUSION = 1.0  # length^2 / time
DT_FRAME = 0.05  # time between saved frames
N_CLUSTERS = 30
LAGS = [1, 2, 5, 10, 20]


def _double_well_force(x):
    return -4.0 * BARRIER * x * (x * x - 1.0)


def simulate_double_well(n_walkers=20, n_frames=3000, stride=50, seed=1):
    """Euler–Maruyama trajectories of dx = -D V'(x) dt + sqrt(2 D) dW (kT = 1), one per walker."""
    rng = np.random.default_rng(seed)
    step = DT_FRAME / stride
    x = rng.choice([-1.0, 1.0], size=n_walkers)
    out = np.empty((n_frames, n_walkers))
    for frame in range(n_frames):
        for _ in range(stride):
            noise = np.sqrt(2 * DIFFUSION * step) * rng.standard_normal(n_walkers)
            x = x + DIFFUSION * _double_well_force(x) * step + noise
        out[frame] = x
    return list(out.T)


def exact_slowest_timescale(n_cells=2000, lo=-2.5, hi=2.5):
    """Slowest relaxation time of the double well from a fine-grid Smoluchowski rate matrix.

    Rates between neighbouring cells k_{i->i±1} = D/h² exp(-(V_{i±1} - V_i) / 2) (kT = 1); the matrix
    is similar to a symmetric tridiagonal one with off-diagonal D/h², whose second-largest
    eigenvalue -1/t_1 gives the timescale.
    """
    x = np.linspace(lo, hi, n_cells)
    h = x[1] - x[0]
    potential = BARRIER * (x * x - 1.0) ** 2
    up = DIFFUSION / h**2 * np.exp(-(potential[1:] - potential[:-1]) / 2)
    down = DIFFUSION / h**2 * np.exp(-(potential[:-1] - potential[1:]) / 2)
    diagonal = np.zeros(n_cells)
    diagonal[:-1] -= up
    diagonal[1:] -= down
    eigenvalues = eigh_tridiagonal(diagonal, np.sqrt(up * down), select="i",
                                   select_range=(n_cells - 2, n_cells - 1), eigvals_only=True)
    return -1.0 / np.sort(eigenvalues)[0]


def four_state_chain():
    """Two metastable sets {0, 1} and {2, 3} of two fast-exchanging states each."""
    return MarkovStateModel(np.array([[0.90, 0.09, 0.01, 0.00],
                                      [0.09, 0.90, 0.00, 0.01],
                                      [0.01, 0.00, 0.90, 0.09],
                                      [0.00, 0.01, 0.09, 0.90]]))


def emit(model, positions, n_trajectories=4, n_steps=20000, noise=0.05, seed=0):
    """CV trajectories of a Markov chain: state i emits positions[i] plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    dtrajs = [model.simulate(n_steps, seed=seed + i) for i in range(n_trajectories)]
    return dtrajs, [np.asarray(positions)[d] + noise * rng.standard_normal(len(d)) for d in dtrajs]


def four_state_chain_cv():
    """Dtrajs and CV trajectories of :func:`four_state_chain`, the sets at CV values 0, 1 and 3, 4."""
    return emit(four_state_chain(), [0.0, 1.0, 3.0, 4.0])


def as_dataarray(trajectories, dt):
    values = np.concatenate(trajectories)
    trajectory = np.concatenate([np.full(len(t), i) for i, t in enumerate(trajectories)])
    time = np.concatenate([np.arange(len(t)) * dt for t in trajectories])  # restarts in each trajectory
    return xr.DataArray(values[:, None], dims=("frame", "cv"),
                        coords={"frame": np.arange(len(values)), "time": ("frame", time),
                                "trajectory": ("frame", trajectory)})
