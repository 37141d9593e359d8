"""Tests of mdcvkit.biasing.force and .descriptors: the CV as an OpenMM force, nm <-> Å boundary."""

import importlib.util
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch
from conftest import SHORT, STEP
from torch import nn

import mdcvkit as mk
from mdcvkit.biasing import (
    DescriptorCV,
    Distance,
    FramePosition,
    Position,
    TorchCVEvaluator,
    Torsion,
    add_cv_bias,
    available_routes,
    evaluate_cv,
    fastest_platform,
    step,
)

PDB = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide" / "ala2.pdb"
PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)
BIAS_GROUP = 5


@pytest.fixture(scope="module")
def alanine():
    pdb = app.PDBFile(str(PDB))
    system = app.ForceField("amber99sbildn.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None
    )
    positions = np.array(pdb.positions.value_in_unit(openmm.unit.nanometer))
    return system, positions


def ae_like_cv(seed=0, activation=nn.Tanh):
    """A small encoder on sin/cos of (phi, psi), as an AE CV would be (2 components)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), activation(), nn.Linear(6, 5), activation(), nn.Linear(5, 2)).double()
    return DescriptorCV([Torsion(*PHI), Torsion(*PSI)], model=model, mean=[0.1, -0.2, 0.3, 0.0], std=[0.7] * 4)


def torch_dihedral(positions):
    """A plain torch function: phi in rad, (n_frames, 1)."""
    p0, p1, p2, p3 = (positions[:, i] for i in PHI)
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.linalg.cross(b0, b1), torch.linalg.cross(b1, b2)
    m1 = torch.linalg.cross(n1, b1 / torch.linalg.vector_norm(b1, dim=-1, keepdim=True))
    return torch.atan2(-(m1 * n2).sum(-1), (n1 * n2).sum(-1))[:, None]


class PositionMLP(nn.Module):
    """A CV on raw positions (not rotation invariant): only the python route can run it."""

    def __init__(self, n_atoms=22):
        super().__init__()
        torch.manual_seed(1)
        self.n_atoms = n_atoms
        self.net = nn.Sequential(nn.Linear(3 * n_atoms, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, positions):
        centred = positions - positions.mean(dim=1, keepdim=True)
        return self.net(centred.flatten(1).float()) * 0.1


def _bias_state(system, positions, group=BIAS_GROUP):
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context


def _energy_and_forces(context, positions, bias=None):
    context.setPositions(positions)
    if getattr(bias, "updater", None) is not None:
        bias.updater.update(context)  # "external" route: linearise at these positions
    state = context.getState(getEnergy=True, getForces=True, groups={BIAS_GROUP})
    return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value


def _finite_difference_forces(context, positions, h=1e-5, bias=None):
    forces = np.zeros_like(positions)
    for i in range(len(positions)):
        for d in range(3):
            energies = []
            for sign in (1, -1):
                shifted = positions.copy()
                shifted[i, d] += sign * h
                context.setPositions(shifted)
                if getattr(bias, "updater", None) is not None:
                    bias.updater.update(context)
                energies.append(context.getState(getEnergy=True, groups={BIAS_GROUP}).getPotentialEnergy()._value)
            forces[i, d] = -(energies[0] - energies[1]) / (2 * h)
    return forces


HARMONIC = "0.5*k*(cv0-0.3)^2 + 0.5*k*(cv1+0.1)^2"


@pytest.mark.parametrize("route", ["python", "expression", "external"])
def test_bias_forces_match_finite_differences(alanine, route):
    """Bias forces (kJ/mol/nm) are minus the gradient of the bias energy: float64, rel. error <= 1e-4."""
    system, positions = alanine
    system = openmm.XmlSerializer.clone(system)
    force = add_cv_bias(
        system, ae_like_cv(), HARMONIC, positions, route=route, parameters={"k": 80.0}, force_group=BIAS_GROUP
    )
    assert force.route == route and force.n_cv == 2
    context = _bias_state(system, positions)
    energy, forces = _energy_and_forces(context, positions, force)
    assert energy > 0
    fd = _finite_difference_forces(context, positions, bias=force)
    assert np.abs(forces - fd).max() / np.abs(forces).max() <= 1e-4


@pytest.mark.parametrize("route", ["python", "external"])
def test_fitted_autoencoder_cv_forces_match_finite_differences(alanine, heavy, route):
    """The AE CV as users fit it (aligned heavy-atom coordinates, Kabsch fit inside): forces = -dU/dx."""
    system, positions = alanine
    cv = mk.AutoencoderCV(heavy, n_cv=2, **SHORT).run(step=STEP)
    system = openmm.XmlSerializer.clone(system)
    xi = evaluate_cv(cv.results.model, positions[heavy.indices][None] * 10)[0]
    force = add_cv_bias(system, cv.results.model, "0.5*k*((cv0-c0)^2+(cv1-c1)^2)", positions,
                        particles=heavy.indices, route=route, force_group=BIAS_GROUP,
                        parameters={"k": 80.0, "c0": float(xi[0]) + 0.5, "c1": float(xi[1]) - 0.3})  # fmt: skip
    context = _bias_state(system, positions)
    energy, forces = _energy_and_forces(context, positions, force)
    assert energy > 0 and np.all(forces[np.setdiff1d(np.arange(22), heavy.indices)] == 0)
    fd = _finite_difference_forces(context, positions, bias=force)
    assert np.abs(forces - fd).max() / np.abs(forces).max() <= 1e-4


def test_routes_agree_and_match_the_torch_cv(alanine):
    system, positions = alanine
    cv = ae_like_cv(seed=3)
    results = []
    for route in ("python", "expression", "external"):
        biased = openmm.XmlSerializer.clone(system)
        force = add_cv_bias(
            biased, cv, HARMONIC, positions, route=route, parameters={"k": 80.0}, force_group=BIAS_GROUP
        )
        results.append(_energy_and_forces(_bias_state(biased, positions), positions, force))
    xi = evaluate_cv(cv, positions * 10)[0]
    expected = 0.5 * 80.0 * ((xi[0] - 0.3) ** 2 + (xi[1] + 0.1) ** 2)
    for energy, forces in results:
        assert energy == pytest.approx(expected, rel=1e-10)
        np.testing.assert_allclose(forces, results[0][1], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU, nn.Sigmoid, nn.SiLU, nn.Softplus, nn.ELU])
def test_expression_compiles_each_activation(alanine, activation):
    system, positions = alanine
    cv = ae_like_cv(seed=5, activation=activation)
    biased = openmm.XmlSerializer.clone(system)
    add_cv_bias(biased, cv, "cv0 + 2*cv1", positions, route="expression", force_group=BIAS_GROUP)
    energy, _ = _energy_and_forces(_bias_state(biased, positions), positions)
    xi = evaluate_cv(cv, positions * 10)[0]
    assert energy == pytest.approx(xi[0] + 2 * xi[1], rel=1e-9, abs=1e-12)


def test_unit_boundary_distance_in_angstrom(alanine):
    """A CV in Å on positions in Å: OpenMM's force in kJ/mol/nm is -k (d_Å - d0) * 10 * unit vector."""
    system, positions = alanine
    i, j = 4, 14
    d_nm = np.linalg.norm(positions[j] - positions[i])
    cv = DescriptorCV([Distance(i, j)])
    k, d0 = 3.0, 10 * d_nm - 0.5
    for route in ("python", "expression"):
        biased = openmm.XmlSerializer.clone(system)
        add_cv_bias(biased, cv, "0.5*k*(cv0-d0)^2", positions, route=route, parameters={"k": k, "d0": d0},
                    force_group=BIAS_GROUP)  # fmt: skip
        energy, forces = _energy_and_forces(_bias_state(biased, positions), positions)
        assert energy == pytest.approx(0.5 * k * 0.5**2, rel=1e-10)
        unit_vector = (positions[j] - positions[i]) / d_nm
        np.testing.assert_allclose(forces[j], -k * 0.5 * 10 * unit_vector, rtol=1e-9)
        np.testing.assert_allclose(forces[i], k * 0.5 * 10 * unit_vector, rtol=1e-9)


def test_torsion_descriptor_matches_openmm_convention(alanine):
    _, positions = alanine
    cv = DescriptorCV([Torsion(*PHI, trig=False)])
    phi = evaluate_cv(cv, positions * 10)[0, 0]
    np.testing.assert_allclose(phi, evaluate_cv(torch_dihedral, positions * 10)[0, 0])
    torsion = openmm.CustomTorsionForce("theta")
    torsion.addTorsion(*PHI, [])
    system = openmm.System()
    for _ in range(len(positions)):
        system.addParticle(1.0)
    system.addForce(torsion)
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    assert context.getState(getEnergy=True).getPotentialEnergy()._value == pytest.approx(phi, rel=1e-10)
    assert -np.pi < phi < 0  # C7eq: phi ~ -80 degrees


@pytest.mark.parametrize("cv", [torch_dihedral, PositionMLP()], ids=["function", "positions-mlp"])
def test_python_route_takes_any_torch_cv(alanine, cv):
    system, positions = alanine
    biased = openmm.XmlSerializer.clone(system)
    force = add_cv_bias(biased, cv, "10*cv0^2", positions, force_group=BIAS_GROUP)
    assert force.route == "python"
    context = _bias_state(biased, positions)
    energy, forces = _energy_and_forces(context, positions)
    assert energy == pytest.approx(10 * evaluate_cv(cv, positions * 10)[0, 0] ** 2, rel=1e-5)
    fd = _finite_difference_forces(context, positions, h=1e-4 if isinstance(cv, PositionMLP) else 1e-5)
    tolerance = 1e-2 if isinstance(cv, PositionMLP) else 1e-4  # the MLP runs in float32
    assert np.abs(forces - fd).max() / np.abs(forces).max() <= tolerance


def test_evaluator_gradient_is_per_nanometre():
    cv = DescriptorCV([Distance(0, 1), Position(1, 2)])
    evaluator = TorchCVEvaluator(cv, n_cv=2)
    positions = np.array([[0.0, 0.0, 0.0], [0.3, 0.4, 0.0]])  # nm
    values, gradients = evaluator(positions)
    np.testing.assert_allclose(values, [5.0, 0.0])  # Å
    np.testing.assert_allclose(gradients[0, 1], [6.0, 8.0, 0.0])  # Å per nm = 10 * unit vector
    np.testing.assert_allclose(gradients[1, 1], [0.0, 0.0, 10.0])
    assert evaluator(positions)[0] is values  # cached for the second component


@pytest.mark.parametrize("route", ["python", "external"])
def test_verlet_conserves_energy_with_bias(alanine, route):
    """A harmonic restraint on the CV (Python-driven routes) keeps a Verlet run conservative."""
    system, positions = alanine
    drifts = {}
    for biased in (False, True):
        s = openmm.XmlSerializer.clone(system)
        biases = []
        if biased:
            biases.append(add_cv_bias(s, ae_like_cv(), HARMONIC, positions, route=route, parameters={"k": 200.0}))
        integrator = openmm.VerletIntegrator(0.0005)
        context = openmm.Context(s, integrator, openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(positions)
        context.setVelocitiesToTemperature(300, 1)
        energies = []
        for _ in range(40):
            step(context, 25, biases)
            for bias in biases:
                if bias.updater is not None:
                    bias.updater.update(context)  # energies at the current positions
            state = context.getState(getEnergy=True)
            energies.append(state.getPotentialEnergy()._value + state.getKineticEnergy()._value)
        energies = np.array(energies)
        drifts[biased] = np.abs(energies - energies[0]).max()
    # the bias adds no systematic error: the excursion stays of the unbiased size (a few 0.01 kJ/mol)
    assert drifts[True] < 3 * drifts[False] + 0.05


def test_available_routes():
    assert "expression" in available_routes(ae_like_cv())
    assert "expression" not in available_routes(torch_dihedral)
    assert available_routes(torch_dihedral)[-2:] == ["python", "external"]


def test_fastest_platform_returns_a_candidate(alanine):
    system, positions = alanine

    def make(name):
        sim = app.Simulation(app.PDBFile(str(PDB)).topology, system, openmm.VerletIntegrator(0.0005),
                             openmm.Platform.getPlatformByName(name))  # fmt: skip
        sim.context.setPositions(positions)
        return sim

    name, timings = fastest_platform(make, candidates=("Reference", "NoSuchPlatform"), n_steps=5)
    assert name == "Reference" and set(timings) == {"Reference"}
    with pytest.raises(ValueError, match="holds no installed platform"):
        fastest_platform(make, candidates=("NoSuchPlatform",))


# --- error contracts ---------------------------------------------------------------------------------------


def test_cv_with_wrong_output_shape(alanine):
    system, positions = alanine
    with pytest.raises(ValueError, match=r"must return a tensor of shape \(n_frames, n_cv\)"):
        add_cv_bias(openmm.XmlSerializer.clone(system), lambda x: torch_dihedral(x)[:, 0], "cv0", positions)


def test_cv_not_finite_at_start(alanine):
    system, positions = alanine
    with pytest.raises(ValueError, match="the CV is not finite at the given positions"):
        add_cv_bias(openmm.XmlSerializer.clone(system), lambda x: torch_dihedral(x) / 0.0 * 0.0, "cv0", positions)


def test_particle_count_mismatch(alanine):
    system, positions = alanine
    with pytest.raises(ValueError, match="positions has 21 rows but the system has 22 particles"):
        add_cv_bias(openmm.XmlSerializer.clone(system), torch_dihedral, "cv0", positions[:21])
    with pytest.raises(ValueError, match="the CV was built for n_atoms=22 atoms but 10 particles are given"):
        add_cv_bias(openmm.XmlSerializer.clone(system), PositionMLP(), "cv0", positions, particles=range(10))
    with pytest.raises(ValueError, match="the CV reads atom 16 but only 10 particles are given"):
        add_cv_bias(openmm.XmlSerializer.clone(system), ae_like_cv(), "cv0", positions, particles=range(10))
    with pytest.raises(ValueError, match="must be indices of system particles"):
        add_cv_bias(openmm.XmlSerializer.clone(system), torch_dihedral, "cv0", positions, particles=[0, 99])


def test_bad_route(alanine):
    system, positions = alanine
    with pytest.raises(ValueError, match=r"route='gpu' is not a bias route; use one of \['auto', 'python'"):
        add_cv_bias(openmm.XmlSerializer.clone(system), torch_dihedral, "cv0", positions, route="gpu")
    with pytest.raises(ValueError, match="route='expression' needs a mdcvkit.biasing.DescriptorCV"):
        add_cv_bias(openmm.XmlSerializer.clone(system), torch_dihedral, "cv0", positions, route="expression")


def test_uncompilable_layer_names_the_known_ones(alanine):
    system, positions = alanine
    cv = DescriptorCV([Torsion(*PHI)], model=nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.Linear(2, 1)))
    with pytest.raises(
        ValueError, match=r"cannot be compiled into an OpenMM expression; the compiler knows \['Linear'"
    ):
        add_cv_bias(openmm.XmlSerializer.clone(system), cv, "cv0", positions, route="expression")
    force = add_cv_bias(openmm.XmlSerializer.clone(system), cv, "cv0", positions)  # auto falls back
    assert force.route == "python"


@pytest.mark.skipif(importlib.util.find_spec("openmmtorch") is not None, reason="openmm-torch is installed")
def test_torch_route_without_openmm_torch_says_how_to_install(alanine):
    system, positions = alanine
    with pytest.raises(ImportError, match="conda install -c conda-forge openmm-torch"):
        add_cv_bias(openmm.XmlSerializer.clone(system), torch_dihedral, "cv0", positions, route="torch")


@pytest.mark.skipif(importlib.util.find_spec("openmmtorch") is None, reason="needs openmm-torch")
def test_torch_route_matches_python_route(alanine):  # pragma: no cover - GPU installs
    system, positions = alanine
    results = []
    for route in ("python", "torch"):
        biased = openmm.XmlSerializer.clone(system)
        add_cv_bias(biased, ae_like_cv(), HARMONIC, positions, route=route, parameters={"k": 80.0},
                    force_group=BIAS_GROUP)  # fmt: skip
        results.append(_energy_and_forces(_bias_state(biased, positions), positions))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-3, atol=1e-3)


def test_descriptor_cv_bad_arguments():
    with pytest.raises(ValueError, match="must be a non-empty list of Distance, Torsion or Position"):
        DescriptorCV([])
    with pytest.raises(ValueError, match=r"mean has shape \(3,\), but the descriptors give n_features=2"):
        DescriptorCV([Torsion(*PHI)], mean=[0, 0, 0])
    with pytest.raises(ValueError, match="must be positive"):
        DescriptorCV([Distance(0, 1)], std=[0.0])
    with pytest.raises(ValueError, match="must be 2 distinct non-negative atom indices"):
        Distance(3, 3)
    with pytest.raises(ValueError, match="axis=5 must be 0, 1 or 2"):
        Position(0, 5)


# --- a fitted featurizer -> normalization -> encoder CV, duck-typed like mdcvkit.analysis' ------------------


class Dihedrals(nn.Module):
    """Stand-in with the buffers and output of mdcvkit.features.Dihedrals (sin, cos per angle)."""

    def __init__(self, quadruplets):
        super().__init__()
        self.n_atoms = 22
        self.register_buffer("quadruplets", torch.tensor(quadruplets))

    def forward(self, positions, box=None):
        angles = torch.cat([Torsion(*q.tolist(), trig=False)(positions)[:, None] for q in self.quadruplets], 1)
        return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(len(positions), -1)


class PairwiseDistances(nn.Module):
    def __init__(self, pairs):
        super().__init__()
        self.n_atoms = 22
        self.uses_box = False
        self.register_buffer("pairs", torch.tensor(pairs))

    def forward(self, positions, box=None):
        delta = positions[:, self.pairs[:, 1]] - positions[:, self.pairs[:, 0]]
        return torch.sqrt((delta**2).sum(-1))


class Concatenate(nn.Module):
    def __init__(self, parts):
        super().__init__()
        self.n_atoms = 22
        self.parts = nn.ModuleList(parts)

    def forward(self, positions, box=None):
        return torch.cat([p(positions) for p in self.parts], dim=1)


class FittedCV(nn.Module):
    def __init__(self, featurizer, n_features, encode_override=False):
        super().__init__()
        torch.manual_seed(2)
        self.featurizer = featurizer
        self.model = nn.Module()
        self.model.normalization = nn.Module()
        self.model.normalization.register_buffer("mean", 0.1 * torch.randn(n_features))
        self.model.normalization.register_buffer("scale", 0.5 + torch.rand(n_features))
        self.model.encoder = nn.Sequential(nn.Linear(n_features, 8), nn.Tanh(), nn.Linear(8, 2))
        self.encode_override = encode_override

    def forward(self, positions, box=None):
        n = self.model.normalization
        z = self.model.encoder((self.featurizer(positions) - n.mean) / n.scale)
        return z * 2 if self.encode_override else z


def test_fitted_cv_on_invariant_features_compiles(alanine):
    system, positions = alanine
    fitted = FittedCV(Concatenate([Dihedrals([PHI, PSI]), PairwiseDistances([[1, 18], [4, 14]])]), 6)
    cv = DescriptorCV.from_collective_variable(fitted, positions[None] * 10)
    x = torch.tensor(positions[None] * 10)
    np.testing.assert_allclose(cv(x).detach().numpy(), fitted(x.float()).detach().numpy(), rtol=1e-5, atol=1e-6)
    biased = openmm.XmlSerializer.clone(system)
    force = add_cv_bias(biased, cv, "cv0 - cv1", positions, force_group=BIAS_GROUP)
    assert force.route == "expression"
    with pytest.raises(ValueError, match="does not reproduce it"):
        DescriptorCV.from_collective_variable(FittedCV(Dihedrals([PHI]), 2, encode_override=True))
    with pytest.raises(ValueError, match="featurizer PositionMLP has no descriptor form"):
        DescriptorCV.from_collective_variable(FittedCV(PositionMLP(), 1))
    with pytest.raises(ValueError, match="is not a featurizer -> normalization -> encoder CV"):
        DescriptorCV.from_collective_variable(PositionMLP())


def test_python_route_takes_closures(alanine):
    """A lambda cannot be pickled; OpenMM clones PythonForces through pickle: the route must cope."""
    system, positions = alanine
    scale = 3.0
    biased = openmm.XmlSerializer.clone(system)
    add_cv_bias(biased, lambda x: scale * torch_dihedral(x), "cv0^2", positions, force_group=BIAS_GROUP)
    energy, _ = _energy_and_forces(_bias_state(biased, positions), positions)
    assert energy == pytest.approx((scale * evaluate_cv(torch_dihedral, positions * 10)[0, 0]) ** 2, rel=1e-10)
    restored = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(biased))  # same process
    energy_restored, _ = _energy_and_forces(_bias_state(restored, positions), positions)
    assert energy_restored == pytest.approx(energy, rel=1e-12)


def test_wide_input_packs_the_first_layer(alanine):
    """All 45 heavy-atom distances (more than OpenMM's 32 collective variables) plus torsions and
    positions: normalisation and first layer fold into one force per unit and kind of descriptor."""
    system, positions = alanine
    heavy = [1, 4, 5, 6, 8, 10, 14, 15, 16, 18]
    distances = [Distance(a, b) for k, a in enumerate(heavy) for b in heavy[k + 1 :]]
    descriptors = [*distances, Torsion(*PHI), Torsion(*PSI), Torsion(1, 4, 6, 8, trig=False), Position(8, 2)]
    n_features = len(distances) + 6
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(n_features, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    rng = np.random.default_rng(0)
    cv = DescriptorCV(descriptors, model=model, mean=rng.normal(size=n_features),
                      std=rng.uniform(0.5, 2.0, size=n_features))  # fmt: skip
    forces, _ = cv.openmm_expression(list(range(22)))
    assert len(forces) == 5 * 4  # units x kinds (distances, trig torsions, plain torsions, positions)
    results = []
    for route in ("python", "expression"):
        biased = openmm.XmlSerializer.clone(system)
        force = add_cv_bias(biased, cv, HARMONIC, positions, route=route, parameters={"k": 80.0},
                            force_group=BIAS_GROUP)  # fmt: skip
        assert force.route == route
        results.append(_energy_and_forces(_bias_state(biased, positions), positions, force))
    xi = evaluate_cv(cv, positions * 10)[0]
    expected = 0.5 * 80.0 * ((xi[0] - 0.3) ** 2 + (xi[1] + 0.1) ** 2)
    assert results[1][0] == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-8, atol=1e-8)
    wide = DescriptorCV(distances, model=nn.Sequential(nn.Linear(45, 40), nn.Tanh(), nn.Linear(40, 1)))
    with pytest.raises(ValueError, match="needs 40 OpenMM collective variables, more than 30"):
        wide.openmm_expression(list(range(22)))


@pytest.mark.parametrize("width", [22, 4])
def test_frame_coordinates_compile(alanine, heavy, width):
    """A CV on body-frame coordinates compiles: per descriptor (wide first layer) or packed per unit
    (narrow); energies equal the torch CV and forces match the Python route and finite differences."""
    system, positions = alanine
    frame = mk.features.make_featurizer("frame", heavy)  # N, CA, C of the alanine
    descriptors = [FramePosition(a, frame.frame, axis) for a in frame.atoms for axis in range(3)]
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(21, width), nn.Tanh(), nn.Linear(width, 2)).double()
    rng = np.random.default_rng(1)
    cv = DescriptorCV(descriptors, model=model, mean=rng.normal(size=21), std=rng.uniform(1.0, 3.0, size=21))
    forces, _ = cv.openmm_expression(heavy.indices)
    assert len(forces) == (21 if width == 22 else width)
    results = []
    for route in ("python", "expression"):
        biased = openmm.XmlSerializer.clone(system)
        force = add_cv_bias(biased, cv, HARMONIC, positions, particles=heavy.indices, route=route,
                            parameters={"k": 80.0}, force_group=BIAS_GROUP)  # fmt: skip
        context = _bias_state(biased, positions)
        results.append(_energy_and_forces(context, positions, force))
    xi = evaluate_cv(cv, positions[heavy.indices][None] * 10)[0]
    assert results[1][0] == pytest.approx(0.5 * 80.0 * ((xi[0] - 0.3) ** 2 + (xi[1] + 0.1) ** 2), rel=1e-10)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-8, atol=1e-8)
    fd = _finite_difference_forces(context, positions, bias=force)
    assert np.abs(results[1][1] - fd).max() / np.abs(results[1][1]).max() <= 1e-4
    with pytest.raises(ValueError, match=r"frame=\(8, 8, 14\) must be 3 distinct"):
        FramePosition(1, (8, 8, 14))
