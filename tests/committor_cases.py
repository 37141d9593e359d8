"""The exact committor and rate of a 2-D toy, from its generator on a fine grid (the oracle of the committor tests).

Overdamped Langevin (Brownian) dynamics, ``dx = -∇U/(mγ) dt + sqrt(2 kT/(mγ)) dW``, as OpenMM's
BrownianIntegrator simulates the toys of :mod:`mdcvkit.systems` (m = 1 amu, γ = 1/ps). The generator is
discretised by the square-root approximation (a finite-volume scheme that keeps the Boltzmann density
stationary and converges to the continuous operator as the grid is refined): neighbours i, j exchange
at rate ``D/h² exp(-β(U_j - U_i)/2)``. The committor solves ``L q = 0`` with q = 0 on A and 1 on B;
the rate is transition-path theory's ``k_AB = ν / Σ π (1 - q)`` with the reactive flux
``ν = ½ Σ_ij π_i L_ij (q_j - q_i)²``. Independent of mdcvkit's committor code: numpy and scipy only.

Imported by tests/test_biasing_committor*.py and benchmarks/bench_committor.py.
"""

import numpy as np
import scipy.sparse as sp
from scipy.interpolate import RegularGridInterpolator
from scipy.sparse.linalg import spsolve

__all__ = ["exact_committor"]


def exact_committor(potential, bounds, beta, in_a, in_b, n=161, diffusion=None):
    """Committor on a grid, an interpolator of it, and the exact TPT rate (1/ps).

    Parameters
    ----------
    potential : callable
        (..., 2) reduced coordinates (nm) -> energy (kJ/mol).
    bounds : ((x_lo, x_hi), (y_lo, y_hi))
    beta : float
        mol/kJ.
    in_a, in_b : callable
        (..., 2) -> bool.
    n : int
        Grid points per axis.
    diffusion : float, optional
        nm²/ps; default kT (mass 1 amu, friction 1/ps).

    Returns
    -------
    q : callable
        (m, 2) -> exact committor (linear interpolation on the grid).
    rate : float
        k_AB in 1/ps.
    """
    axes = [np.linspace(lo, hi, n) for lo, hi in bounds]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    energy = potential(mesh).ravel()
    d = 1.0 / beta if diffusion is None else diffusion
    index = np.arange(n * n).reshape(n, n)
    rows, cols, scale = [], [], []
    for axis, (a, b) in enumerate(((index[1:, :], index[:-1, :]), (index[:, 1:], index[:, :-1]))):
        h = axes[axis][1] - axes[axis][0]
        rows += [a.ravel(), b.ravel()]
        cols += [b.ravel(), a.ravel()]
        scale.append(np.full(2 * a.size, d / h**2))
    rows, cols, scale = np.concatenate(rows), np.concatenate(cols), np.concatenate(scale)
    rates = scale * np.exp(-beta * (energy[cols] - energy[rows]) / 2)
    generator = sp.csr_matrix((rates, (rows, cols)), shape=(n * n, n * n))
    generator = generator - sp.diags(np.asarray(generator.sum(axis=1)).ravel())
    flat = mesh.reshape(-1, 2)
    a, b = in_a(flat), in_b(flat)
    free = ~(a | b)
    q = b.astype(float)
    rhs = -generator[free][:, b] @ np.ones(b.sum())
    q[free] = spsolve(generator[free][:, free].tocsc(), rhs)
    pi = np.exp(-beta * (energy - energy.min()))
    pi /= pi.sum()
    coo = generator.tocoo()
    off = coo.row != coo.col
    flux = 0.5 * np.sum(pi[coo.row[off]] * coo.data[off] * (q[coo.col[off]] - q[coo.row[off]]) ** 2)
    rate = flux / np.sum(pi * (1 - q))
    return RegularGridInterpolator(axes, q.reshape(n, n)), float(rate)
