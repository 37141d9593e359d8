"""Tests of mdcvkit.biasing.opes: OPES (through openmm-opes) against exact free energies of toys, its results,
its weights, its state files and its errors."""

from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import pytest
from scipy.special import logsumexp
from test_biasing_eabf import rmse_in_kT  # RMSE in kT against a toy's exact free energy

import mdcvkit as mk
from mdcvkit import systems
from mdcvkit.analysis import CollectiveVariable
from mdcvkit.biasing import OPES, Grid, opes_log_weights
from mdcvkit.features import Dihedrals

PDB = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide" / "ala2.pdb"
PHI = (4, 6, 8, 14)
KT_300 = 2.494  # kJ/mol at 300 K


@pytest.fixture(scope="module")
def toy():
    return systems.DoubleWell2D()


@pytest.fixture(scope="module")
def double_well_run(toy):
    """1M Brownian steps along x1 (barrier 8 kT, a kernel every 500 steps, adaptive width); about 3 s."""
    return OPES.for_toy(toy, "x1", grid=(-2, 2, 80), barrier=8 * toy.kT, sample_frequency=50, seed=1).run(1_000_000)


def test_double_well_pmf_matches_exact(toy, double_well_run):
    """OPES's own estimate (its reweighted kernel density) and the reweighted histogram of its samples.

    Measured at 1M steps, seeds 1-3: 0.16-0.18 kT (kernel density, too low on the steep walls where the
    kernels smooth the most) and 0.06-0.13 kT (reweighted histogram) over 54 bins; 0.22-0.25 and 0.12-0.17
    kT at 600k steps."""
    error, n_bins = rmse_in_kT(toy, double_well_run.results.pmf, ["x1"])
    assert n_bins == 54
    assert error < 0.3
    error, _ = rmse_in_kT(toy, double_well_run.results.reweighted_pmf, ["x1"])
    assert error < 0.2


def test_results_are_labelled_xarray(toy, double_well_run):
    results = double_well_run.results
    for name in ("pmf", "reweighted_pmf", "bias", "counts"):
        assert results[name].dims == ("x1",) and results[name].shape == (80,)
        assert "long_name" in results[name].attrs
    assert results.pmf.attrs["units"] == "kJ/mol" and np.nanmin(results.pmf.values) == 0
    np.testing.assert_allclose(results.pmf.x1.values, Grid(-2, 2, 80).centers(0))
    samples = results.samples
    assert samples.sizes["sample"] == 20_000 and set(samples.data_vars) == {"xi", "bias"}
    assert samples.time.attrs["units"] == "ps"
    np.testing.assert_allclose(samples.time.values[:2], [0.05, 0.10])  # every 50 steps of 1 fs
    assert int(results.counts.sum()) == np.count_nonzero(np.abs(samples.xi.values) < 2)
    assert results.n_kernels > 0
    # OPES flattens the barrier: both wells are visited (unbiased, the particle stays left for ~1e5 steps)
    assert (samples.xi.values < -0.5).mean() > 0.2 and (samples.xi.values > 0.5).mean() > 0.2
    # the bias fills the wells: V is highest (least negative) at the wells, by about the free-energy barrier
    bias = results.bias.sel(x1=[-1, 0, 1], method="nearest").values
    assert bias[0] - bias[1] > 2 * toy.kT and bias[2] - bias[1] > 2 * toy.kT
    assert np.all(results.bias.values >= -8 * toy.kT - 1e-9)  # V = (1 - 1/γ) kT ln(P/Z + ε) ≥ -barrier


def test_samples_hold_the_bias_acting_on_them(toy, double_well_run):
    """``samples.bias`` is V(ξ) of the run's last bias at its last sample (OpenMM's energy minus the barrier),
    and the log-weights are β V normalised."""
    last = double_well_run.results.samples.isel(sample=-1)
    table = double_well_run.results.bias  # V on the bin centres; OpenMM splines it on twice as many nodes
    expected = np.interp(float(last.xi[0]), table.x1.values, table.values)
    assert float(last.bias) == pytest.approx(expected, abs=0.02 * toy.kT)
    log_w = opes_log_weights(double_well_run)
    bias = double_well_run.results.samples.bias.values
    np.testing.assert_allclose(log_w, bias / toy.kT - logsumexp(bias / toy.kT))


@pytest.mark.slow
def test_entropic_switch_along_x1_matches_exact():
    """FEBILAE's toy along x1 (4M Brownian steps, ~12 s): the hidden channels in x2 make it converge slowly.

    Measured at 4M steps, barrier 12 kT, seeds 1-3: 0.10-0.15 kT (kernel density) and 0.04-0.11 kT
    (reweighted histogram) over 34 bins; with barrier 8 kT, seeds 1-4, 0.10-0.44 kT (see docs/findings/opes.md).
    """
    toy = systems.EntropicSwitch()
    run = OPES.for_toy(toy, "x1", grid=(-2, 2, 80), barrier=12 * toy.kT, sample_frequency=50, seed=2)
    run.run(4_000_000)
    for estimate in (run.results.pmf, run.results.reweighted_pmf):
        error, n_bins = rmse_in_kT(toy, estimate, ["x1"])
        assert n_bins == 34
        assert error < 0.3


def test_two_dimensional_grid_is_laid_out_like_the_cv(toy):
    """A 2-D run on a grid of 20 x 30 bins: results along (x1, x2), the wells at x1 = ±1, x2 = 0."""
    grid = Grid([-2.0, -3.0], [2.0, 3.0], [20, 30], names=["x1", "x2"])
    run = OPES.for_toy(toy, ("x1", "x2"), grid=grid, barrier=8 * toy.kT, sample_frequency=50, seed=1).run(200_000)
    pmf = run.results.pmf
    assert pmf.dims == ("x1", "x2") and pmf.shape == (20, 30)
    assert run.results.counts.shape == (20, 30) and run.results.bias.shape == (20, 30)
    x1, x2 = pmf.idxmin("x1"), pmf.idxmin("x2")
    assert float(np.abs(x1.sel(x2=0, method="nearest"))) == pytest.approx(1.0, abs=0.25)
    assert float(x2.sel(x1=-1, method="nearest")) == pytest.approx(0.0, abs=0.3)


def test_explore_mode_samples_both_wells(toy):
    run = OPES.for_toy(toy, "x1", grid=(-2, 2, 80), barrier=8 * toy.kT, explore=True, sample_frequency=50,
                       seed=1).run(300_000)  # fmt: skip
    xi = run.results.samples.xi.values
    assert (xi < -0.5).mean() > 0.2 and (xi > 0.5).mean() > 0.2
    error, _ = rmse_in_kT(toy, run.results.reweighted_pmf, ["x1"])
    assert error < 0.5


def test_caller_system_is_not_modified(toy):
    n_forces = toy.system.getNumForces()
    run = OPES.for_toy(toy, "x1", grid=(-2, 2, 40), barrier=2.0)
    assert toy.system.getNumForces() == n_forces
    assert run.system.getNumForces() == n_forces + 1
    assert run.force.this == run.system.getForce(n_forces).this and run.force.getName() == "mdcvkit OPES bias"


# --- state files -------------------------------------------------------------------------------------------


def make(toy, cv="x1", **kwargs):
    settings = {"grid": (-2, 2, 40), "barrier": 2.0, "pace": 200, "sample_frequency": 10, "seed": 2, **kwargs}
    return OPES.for_toy(toy, cv, **settings)


def test_restore_continues_the_same_estimate(toy, tmp_path):
    first = make(toy, store_positions=True).run(20_000)
    written = first.save(tmp_path / "state")
    assert written == tmp_path / "state.npz" and not list(tmp_path.glob(".*"))  # no temporary file left
    second = make(toy, store_positions=True).restore(tmp_path / "state")
    assert second.n_steps == 20_000 and second.results.n_kernels == first.results.n_kernels
    np.testing.assert_allclose(second.results.pmf.values, first.results.pmf.values)
    np.testing.assert_array_equal(second.results.counts.values, first.results.counts.values)
    np.testing.assert_allclose(second.context.getState(getPositions=True).getPositions(asNumpy=True)._value,
                               first.context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    # the restored bias acts at once: the same energy as in the first run's context
    assert second._sampler.getBiasEnergy(second.context) == first._sampler.getBiasEnergy(first.context)
    second.run(20_000)
    samples = second.results.samples
    assert samples.sizes["sample"] == 4000 and samples.positions.shape == (4000, 1, 3)
    assert samples.time.values[-1] == pytest.approx(40.0) and np.all(np.diff(samples.time.values) > 0)
    assert second.results.n_kernels >= first.results.n_kernels


@pytest.mark.parametrize("change, setting", [
    ({"cv": "x2"}, "cv.featurizer.axes"),
    ({"barrier": 3.0}, "sampler.barrier"),
    ({"pace": 100}, "sampler.pace"),
    ({"explore": True}, "sampler.explore"),
    ({"grid": (-2, 2, 50)}, "sampler.grid.n_bins"),
])  # fmt: skip
def test_restore_refuses_other_settings_naming_them(toy, tmp_path, change, setting):
    make(toy).run(1000).save(tmp_path / "s")
    with pytest.raises(ValueError, match=rf"path='.*s.npz' was written for other settings .*{setting}: .* in the "
                                         rf"file, .* now"):  # fmt: skip
        make(toy, **change).restore(tmp_path / "s")


def test_restore_from_another_cv_of_the_same_layout_is_refused(tmp_path):
    """Two CVs that differ only in their parameters (a retrained network) are told apart by a digest."""
    toy = systems.DoubleWell2D()
    cvs = [CollectiveVariable.from_featurizer(mk.features.Positions(1, axes=[0]), scale=scale) for scale in (10, 5)]
    OPES.for_toy(toy, cvs[0], grid=(-2, 2, 40), barrier=2.0, pace=100).run(100).save(tmp_path / "s")
    with pytest.raises(ValueError, match=r"cv.parameters: '[0-9a-f]+' in the file"):
        OPES.for_toy(toy, cvs[1], grid=(-2, 2, 40), barrier=2.0, pace=100).restore(tmp_path / "s")


def test_state_files_refuse_foreign_files(toy, tmp_path):
    written = make(toy).run(100).save(tmp_path / "s")
    (tmp_path / "text.npz").write_text("not a state")
    with pytest.raises(ValueError, match="text.npz' is not an OPES state"):
        make(toy).restore(tmp_path / "text.npz")
    (tmp_path / "cut.npz").write_bytes(written.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.npz' is not an OPES state"):
        make(toy).restore(tmp_path / "cut.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz': no such file"):
        make(toy).restore(tmp_path / "missing")


# --- alanine dipeptide ---------------------------------------------------------------------------------------


def test_alanine_phi_periodic_with_multiple_time_stepping():
    """OPES along φ on a periodic grid, the bias evaluated every 2 steps (MTSLangevinIntegrator)."""
    pdb = app.PDBFile(str(PDB))
    system = mk.datasets.alanine_dipeptide_system("vacuum").system
    cv = CollectiveVariable.from_featurizer(Dihedrals(22, [PHI], trig=False), names=["phi"])
    run = OPES(system, pdb.positions, cv, Grid(-np.pi, np.pi, 36, periodic=True, names=["phi"]), 30.0, 300,
               pace=100, sample_frequency=10, bias_stride=2, seed=0,
               integrator=openmm.LangevinMiddleIntegrator(300, 1.0, 0.002)).run(2000)  # fmt: skip
    assert isinstance(run.integrator, openmm.MTSLangevinIntegrator) and run.route == "expression"
    assert run.results.samples.sizes["sample"] == 200 and run.results.n_kernels > 0
    assert np.all(np.abs(run.results.samples.xi.values) <= np.pi)
    assert np.all(np.isfinite(run.results.bias.values)) and run.results.pmf.dims == ("phi",)


@pytest.mark.slow
def test_alanine_phi_crosses_and_gives_the_basin_gap():
    """1 ns of OPES along φ in vacuum (barrier 30 kJ/mol, a kernel every 1 ps; ~5 s): C7eq <-> C7ax crossings, and
    A(C7ax) - A(C7eq) between the basin minima near eABF's and metadynamics' 3.0 kT (``tests/test_biasing_metad.py``).

    Measured (seed 0): 46 crossings in 1 ns (unbiased MD: none in 5 ns); the gap 2.82 kT (kernel estimate) and 2.95
    kT (reweighted histogram). Over 3 seeds of 5 ns, against eABF and metadynamics: ``docs/findings/opes.md``."""
    setup = mk.datasets.alanine_dipeptide_system("vacuum")
    cv = CollectiveVariable.from_featurizer(Dihedrals(22, [PHI], trig=False), names=["phi"])
    run = OPES(setup.system, setup.positions, cv, Grid(-np.pi, np.pi, 72, periodic=True, names=["phi"]), 30.0, 300,
               pace=250, sample_frequency=10, integrator=setup.integrator(), seed=0).run(250_000)  # fmt: skip
    phi = np.degrees(run.results.samples.xi.values[:, 0])
    assert mk.datasets.basin_crossings(phi) >= 20
    centres = np.degrees(run.results.pmf.phi.values)
    for pmf in (run.results.pmf.values, run.results.reweighted_pmf.values):
        gap = np.nanmin(pmf[(centres > 30) & (centres < 100)]) - np.nanmin(pmf[(centres > -150) & (centres < -40)])
        assert gap / KT_300 == pytest.approx(3.0, abs=0.5)


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("barrier", [0.0, -2.0, float("nan"), "high"])
def test_barrier_must_be_positive(toy, barrier):
    with pytest.raises(ValueError, match=r"barrier=.* must be a positive number \(kilojoule/mole\); pass e.g."):
        OPES.for_toy(toy, "x1", grid=(-2, 2, 40), barrier=barrier)


@pytest.mark.parametrize("pace", [0, -5, 2.5])
def test_pace_must_be_a_positive_integer(toy, pace):
    with pytest.raises(ValueError, match=rf"pace={pace!r} must be an integer >= 1; pass the steps between kernel "
                                         rf"depositions \(PLUMED's PACE\)"):  # fmt: skip
        OPES.for_toy(toy, "x1", grid=(-2, 2, 40), barrier=2.0, pace=pace)


def test_cv_of_more_than_two_components_is_refused(toy):
    with pytest.raises(ValueError, match=r"the CV has n_cv=3 components; OPES's grid takes 1 or 2"):
        OPES.for_toy(toy, ("x1", "x2", "x3"), grid=[(-2, 2, 10)] * 3, barrier=2.0)


def test_other_bad_settings_are_named(toy):
    with pytest.raises(ValueError, match=r"bias_factor=1 must exceed 1 .*kT = 0.25 kJ/mol"):
        OPES.for_toy(toy, "x1", grid=(-2, 2, 40), barrier=0.25)
    with pytest.raises(ValueError, match=r"sigma=-0.1 must be 'adaptive' or one or 1 positive kernel widths"):
        OPES.for_toy(toy, "x1", grid=(-2, 2, 40), barrier=2.0, sigma=-0.1)
    with pytest.raises(ValueError, match=r"does not contain the starting CV value \[-1.0\]; widen the grid"):
        OPES.for_toy(toy, "x1", grid=(0, 2, 40), barrier=2.0)
    with pytest.raises(ValueError, match=r"names=\['x1'\] must have one entry per CV component \(2\)"):
        OPES.for_toy(toy, "x1", grid=[(-2, 2, 10)] * 2, barrier=2.0)
    with pytest.raises(ValueError, match=r"sample_frequency=30, which must divide pace=500"):
        OPES.for_toy(toy, "x1", grid=(-2, 2, 40), barrier=2.0, sample_frequency=30)
    with pytest.raises(ValueError, match=r"bias_stride=2 needs a Langevin integrator, not BrownianIntegrator"):
        OPES.for_toy(toy, "x1", grid=(-2, 2, 40), barrier=2.0, bias_stride=2)
    run = OPES.for_toy(toy, "x1", grid=(-2, 2, 40), barrier=2.0)
    with pytest.raises(ValueError, match=r"n_steps=15 must be a multiple of sample_frequency=10; pass n_steps=10"):
        run.run(15)
    with pytest.raises(ValueError, match=r"the OPES run holds no sample; call run\(\)"):
        opes_log_weights(run)


def test_sigma_may_be_fixed(toy):
    """A fixed initial width (PLUMED's SIGMA) gives kernels from the first deposition on."""
    run = OPES.for_toy(toy, "x1", grid=(-2, 2, 40), barrier=2.0, sigma=0.1, pace=100).run(1000)
    assert run.results.n_kernels > 0 and run.sigma == [0.1]
