"""Tests of mdcvkit.biasing.czar and .grid: the CZAR estimator, gradient integration, grids."""

import numpy as np
import pytest

from mdcvkit.biasing import CZARAccumulator, Grid, czar, integrate_gradient
from mdcvkit.biasing.eabf import MOLAR_GAS_CONSTANT

TEMPERATURE = 300.0
KT = MOLAR_GAS_CONSTANT * TEMPERATURE


def double_well(x):
    return 4.0 * KT * (x**2 - 1) ** 2


def tilted_well(x):
    """A 4 kT double well tilted so that the right basin lies 1 kT above the left one."""
    return double_well(x) + 0.5 * KT * x


def sample_extended(n, kappa, bias_fraction, seed, free_energy=double_well):
    """Exact samples of (ξ, λ) from exp(-β[A(ξ) + κ/2 (ξ-λ)² - f A(λ)]), λ clipped to ±1.3 in the bias,
    drawn on a fine grid and jittered within cells."""
    rng = np.random.default_rng(seed)
    h = 0.004
    xs = np.arange(-2.2, 2.2, h) + h / 2
    xi, lam = np.meshgrid(xs, xs, indexing="ij")
    energy = (
        free_energy(xi) + 0.5 * kappa * (xi - lam) ** 2 - bias_fraction * free_energy(np.clip(lam, -1.3, 1.3))
    )
    weights = np.exp(-(energy - energy.min()) / KT).ravel()
    cells = rng.choice(weights.size, size=n, p=weights / weights.sum())
    i, j = np.unravel_index(cells, xi.shape)
    return xs[i] + rng.uniform(-h / 2, h / 2, n), xs[j] + rng.uniform(-h / 2, h / 2, n)


@pytest.mark.parametrize("bias_fraction", [0.0, 0.9], ids=["unbiased", "abf-like bias on lambda"])
def test_czar_recovers_the_free_energy_of_exact_samples(bias_fraction):
    """Physics oracle: CZAR is exact whatever the bias on λ (here a 4 kT double well)."""
    kappa = KT / 0.1**2
    xi, lam = sample_extended(400_000, kappa, bias_fraction, seed=0)
    grid = Grid(-1.6, 1.6, 64)
    estimate = czar(xi, lam, grid, kappa, TEMPERATURE)
    exact = double_well(grid.centers(0))
    weight = np.exp(-exact / KT)
    region = weight / weight.sum() > 1e-3
    diff = estimate.pmf.values[region] - exact[region]
    assert np.all(np.isfinite(diff))
    diff -= diff.mean()
    assert np.sqrt(np.mean(diff**2)) < 0.1 * KT
    assert estimate.pmf.attrs["units"] == "kJ/mol"
    assert estimate.counts.sum() == np.sum(grid.contains(xi[:, None]))
    assert estimate.gradient.dims == ("component", "cv0")


def test_czar_2d_with_a_stiff_coupling_and_wide_bins():
    """κ Δ² = 4 kT along y: the restraint term must average λ - ξ per sample. Taking λ minus the bin
    centre adds κ (⟨ξ⟩_bin - z) and gave 0.25 kT RMS here (measured), this 0.10 kT at 200k and 800k samples."""
    kappa = KT / 0.1**2
    xi_x, lam_x = sample_extended(200_000, kappa, 0.5, seed=3, free_energy=tilted_well)
    rng = np.random.default_rng(4)
    xi_y = rng.normal(0.0, 0.5, xi_x.size)  # A(y) = 2 kT y², no bias on λ_y: λ_y ~ N(ξ_y, kT/κ)
    lam_y = xi_y + rng.normal(0.0, np.sqrt(KT / kappa), xi_x.size)
    grid = Grid([-1.6, -1.5], [1.6, 1.5], [32, 15])
    estimate = czar(np.c_[xi_x, xi_y], np.c_[lam_x, lam_y], grid, kappa, TEMPERATURE)
    gx, gy = np.meshgrid(grid.centers(0), grid.centers(1), indexing="ij")
    exact = tilted_well(gx) + 2 * KT * gy**2
    region = np.exp(-(exact - exact.min()) / KT) > 5e-2
    diff = estimate.pmf.values[region] - exact[region]
    assert np.all(np.isfinite(diff))
    diff -= diff.mean()
    assert np.sqrt(np.mean(diff**2)) < 0.15 * KT


def test_accumulator_is_additive():
    xi, lam = sample_extended(20_000, 100.0, 0.0, seed=1)
    grid = Grid(-1.5, 1.5, 30)
    whole = CZARAccumulator(grid, [100.0], KT)
    whole.add(xi[:, None], lam[:, None])
    parts = CZARAccumulator(grid, [100.0], KT)
    parts.add(xi[:7000, None], lam[:7000, None])
    parts.add(xi[7000:, None], lam[7000:, None])
    np.testing.assert_array_equal(whole.counts, parts.counts)
    np.testing.assert_allclose(whole.gradient(), parts.gradient(), equal_nan=True)


def test_integrate_gradient_1d_and_2d():
    grid1 = Grid(-2, 2, 200)
    x = grid1.centers(0)
    pmf = integrate_gradient((3 * x**2 - 2)[None], grid1)
    expected = x**3 - 2 * x
    np.testing.assert_allclose(pmf - pmf.mean(), expected - expected.mean(), atol=1e-3)

    grid2 = Grid([-2, -1], [2, 3], [40, 50])
    gx, gy = np.meshgrid(grid2.centers(0), grid2.centers(1), indexing="ij")
    potential = np.sin(gx) * gy**2 + 0.3 * gx**2
    gradient = np.stack([np.cos(gx) * gy**2 + 0.6 * gx, 2 * np.sin(gx) * gy])
    gradient[:, :4, :4] = np.nan  # unknown corner: left out, not spread
    pmf = integrate_gradient(gradient, grid2)
    known = np.isfinite(pmf)
    assert known.sum() == 40 * 50 - 16
    diff = pmf[known] - potential[known]
    assert np.abs(diff - diff.mean()).max() < 0.01
    assert np.nanmin(pmf) == 0.0


def test_integrate_keeps_the_largest_sampled_region():
    grid = Grid(0, 10, 10)
    gradient = np.ones((1, 10))
    gradient[0, 3] = np.nan
    pmf = integrate_gradient(gradient, grid)
    assert np.all(np.isnan(pmf[:4])) and np.all(np.isfinite(pmf[4:]))
    np.testing.assert_allclose(np.diff(pmf[4:]), 1.0)


def test_a_region_across_the_periodic_boundary_is_one_region():
    """Bins on both sides of φ = ±180° join through the boundary: 2 x 6 columns outweigh 8 in the middle."""
    grid = Grid([-np.pi, -np.pi], [np.pi, np.pi], [36, 36], periodic=True)
    phi, psi = np.meshgrid(grid.centers(0), grid.centers(1), indexing="ij")
    potential = 3 * np.cos(phi) + np.cos(psi) * np.sin(phi)
    gradient = np.stack([-3 * np.sin(phi) + np.cos(psi) * np.cos(phi), -np.sin(psi) * np.sin(phi)])
    known = np.zeros(36, dtype=bool)
    known[:6] = known[-6:] = known[14:22] = True
    gradient[:, ~known] = np.nan
    pmf = integrate_gradient(gradient, grid)
    edges = np.r_[0:6, 30:36]
    assert np.all(np.isfinite(pmf[edges])) and np.all(np.isnan(pmf[14:22]))
    diff = pmf[edges] - potential[edges]  # one constant across the boundary
    assert np.abs(diff - diff.mean()).max() < 0.05


def test_grid_bins_and_periodicity():
    grid = Grid(-np.pi, np.pi, 36, periodic=True, names=["phi"])
    assert grid.index([[np.pi + 0.01]])[0] == 0  # wraps
    assert grid.index([[-np.pi + 0.01]])[0] == 0
    np.testing.assert_allclose(grid.wrap([[2 * np.pi - 0.1]]), [[-0.1]])
    flat = Grid(0, 1, 10)
    np.testing.assert_array_equal(flat.index([[-0.1], [0.05], [0.95], [1.2]]), [-1, 0, 9, -1])
    two = Grid.create([(0, 1, 10), (-1, 1, 4)])
    assert two.shape == (10, 4) and two.n_dim == 2
    assert two.index([[0.05, 0.9]])[0] == 3
    np.testing.assert_allclose(two.center_of(np.array([3])), [[0.05, 0.75]])
    assert Grid.create((0, 1, 10)) == flat
    assert Grid.create(flat) is flat


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ((1.0, 0.0, 10), "must be finite with upper > lower"),
        ((0.0, 1.0, 2), r"n_bins=\[2\] must be integers >= 3"),
        ("x1", "is not a grid; pass mdcvkit.biasing.Grid"),
        ([(0, 1, 5)] * 3, "for 1 or 2 components"),
    ],
)
def test_bad_grids(grid, match):
    with pytest.raises(ValueError, match=match):
        Grid.create(grid)


def test_czar_bad_input():
    with pytest.raises(ValueError, match=r"kappa=-1.0 must be a positive coupling constant"):
        czar(np.zeros(5), np.zeros(5), (0, 1, 5), -1.0, 300)
    with pytest.raises(ValueError, match=r"must both have shape \(n_samples, 1\)"):
        czar(np.zeros(5), np.zeros(4), (0, 1, 5), 1.0, 300)
