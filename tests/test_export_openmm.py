"""Tests of mdcvkit.export.openmm: every featurizer's OpenMM form equals its torch forward and gradient."""

import numpy as np
import openmm
import pytest
import torch
from export_cases import (
    HEAVY,
    featurizers,
    frames,
    openmm_values_and_gradients,
    random_cv,
    torch_values_and_gradients,
)
from torch import nn

from mdcvkit.analysis import CollectiveVariable
from mdcvkit.biasing import cv_force
from mdcvkit.export import NM_TO_ANGSTROM, TorchCVEvaluator, available_routes, compile_expression, evaluate_cv
from mdcvkit.features import Dihedrals, Positions
from mdcvkit.models import GaussianMixtureVAE

POSITIONS = frames()
FEATURIZERS = featurizers(POSITIONS)
COMPILED = sorted(set(FEATURIZERS) - {"aligned"})


def _check_route(cv, route, rtol=1e-9):
    forces = [cv_force(cv, HEAVY, 22, component=k, route=route) for k in range(2)]
    values, gradients = openmm_values_and_gradients(forces, 22, POSITIONS / NM_TO_ANGSTROM)
    expected, expected_grad = torch_values_and_gradients(cv, POSITIONS[:, HEAVY])
    full = np.zeros_like(gradients)
    full[:, :, HEAVY] = expected_grad * NM_TO_ANGSTROM  # per Å -> per nm
    np.testing.assert_allclose(values, expected, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(gradients, full, rtol=rtol, atol=rtol * np.abs(full).max())


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("hidden", [(2,), (16,)], ids=["packed", "raw"])
def test_expression_equals_torch_forward_and_gradient(name, hidden):
    """Compiled: values and forces of OpenMM equal torch's, whether the first layer is folded or not."""
    _check_route(random_cv(FEATURIZERS[name], hidden=hidden), "expression")


@pytest.mark.parametrize("name", sorted(FEATURIZERS))
def test_python_route_equals_torch_forward_and_gradient(name):
    _check_route(random_cv(FEATURIZERS[name]), "python")


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", None])
def test_each_activation_compiles(activation):
    _check_route(random_cv(FEATURIZERS["dihedrals"], activation=activation, hidden=(5, 4)), "expression")


def test_vae_compiles_its_encoder_mean():
    """A VAE's encoder gives means and log-variances: the compiled CV keeps the means."""
    _check_route(random_cv(FEATURIZERS["distances"], model="vae"), "expression")


def test_what_does_not_compile_is_refused_with_the_fix():
    aligned = random_cv(FEATURIZERS["aligned"])
    with pytest.raises(ValueError, match="AlignedPositions has no OpenMM expression form.*route='python'"):
        compile_expression(aligned, HEAVY)
    assert available_routes(aligned, HEAVY)[0] != "expression"
    gmvae = CollectiveVariable(FEATURIZERS["dihedrals"], GaussianMixtureVAE(4, 2, hidden=(4,)))
    with pytest.raises(ValueError, match="is not encoder\\(normalization\\(x\\)\\).*route='python'"):
        compile_expression(gmvae, HEAVY)
    odd = random_cv(FEATURIZERS["dihedrals"])
    odd.model.encoder[1] = nn.Hardtanh()
    with pytest.raises(ValueError, match="cannot be compiled.*the compiler knows"):
        compile_expression(odd, HEAVY)
    with pytest.raises(ValueError, match="is not a CollectiveVariable"):
        compile_expression(lambda x: x[:, :, 0], HEAVY)
    with pytest.raises(ValueError, match="route='gpu' is not a bias route"):
        cv_force(odd, HEAVY, 22, route="gpu")


def test_too_many_collective_variables_is_refused():
    cv = random_cv(FEATURIZERS["distances"], hidden=(40,))  # 45 distances, 40 units: neither fits in 30
    with pytest.raises(ValueError, match="needs 40 OpenMM collective variables"):
        compile_expression(cv, HEAVY)


def test_feature_cv_of_an_angle_in_rad():
    """``from_featurizer`` of a raw dihedral gives φ itself (rad, OpenMM's sign), compiled."""
    cv = CollectiveVariable.from_featurizer(Dihedrals(22, [[4, 6, 8, 14]], trig=False), names=["phi"])
    force = cv_force(cv, range(22), 22, route="expression")
    values, _ = openmm_values_and_gradients([force], 22, POSITIONS[:2] / NM_TO_ANGSTROM)
    np.testing.assert_allclose(values[:, 0], evaluate_cv(cv, POSITIONS[:2])[:, 0], atol=1e-12)
    assert cv.names == ["phi"] and -np.pi < values[0, 0] <= np.pi


def test_evaluator_gradient_is_per_nanometre():
    cv = CollectiveVariable.from_featurizer(Positions(2, axes=(2,)))
    evaluator = TorchCVEvaluator(cv, n_cv=2)
    values, gradients = evaluator(np.array([[0.0, 0.0, 0.1], [0.3, 0.4, 0.2]]))  # nm
    np.testing.assert_allclose(values, [1.0, 2.0])  # Å
    np.testing.assert_allclose(gradients[1, 1], [0.0, 0.0, 10.0])  # Å per nm
    assert evaluator(np.array([[0.0, 0.0, 0.1], [0.3, 0.4, 0.2]]))[0] is values  # cached for the next component
    with pytest.raises(FloatingPointError, match="the simulation blew up"):
        evaluator(np.full((2, 3), np.nan))


def test_evaluate_cv_checks_the_output():
    with pytest.raises(ValueError, match=r"must return a tensor of shape \(n_frames, n_cv\)"):
        evaluate_cv(lambda x: x[:, 0, 0], POSITIONS[0])
    with pytest.raises(ValueError, match="the CV is not finite"):
        evaluate_cv(lambda x: x[:, 0] / 0.0 * 0.0, POSITIONS[0])
    with pytest.raises(ValueError, match="the CV failed on positions"):
        evaluate_cv(random_cv(FEATURIZERS["dihedrals"]), POSITIONS[0])  # 22 atoms, built for 10


def test_python_route_survives_pickling_by_openmm():
    """OpenMM clones PythonForces through pickle: a lambda CV (not picklable) still works in-process."""
    scale = 3.0
    cv = random_cv(FEATURIZERS["dihedrals"])

    def scaled(x):
        return scale * cv(x)

    system = openmm.System()
    for _ in range(22):
        system.addParticle(1.0)
    force = openmm.CustomCVForce("cv0")
    forces = {}
    from mdcvkit.export.openmm import collective_variables

    forces, _, _ = collective_variables(scaled, HEAVY, 2, 22, route="python")
    for key, variable in forces.items():
        force.addCollectiveVariable(key, variable)
    system.addForce(force)
    restored = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    context = openmm.Context(restored, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(POSITIONS[0] / NM_TO_ANGSTROM)
    energy = context.getState(getEnergy=True).getPotentialEnergy()._value
    assert energy == pytest.approx(scale * evaluate_cv(cv, POSITIONS[0, HEAVY])[0, 0], rel=1e-10)


def test_torch_route_without_openmm_torch_says_how_to_install():
    pytest.importorskip("torch")
    try:
        import openmmtorch  # noqa: F401

        pytest.skip("openmm-torch is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="route='torch' needs openmm-torch"):
        cv_force(random_cv(FEATURIZERS["dihedrals"]), HEAVY, 22, route="torch")


def test_torch_route_equals_torch(monkeypatch):  # pragma: no cover - GPU installs
    pytest.importorskip("openmmtorch")
    _check_route(random_cv(FEATURIZERS["aligned"]).float().double(), "torch", rtol=1e-5)


def test_the_cv_module_is_left_as_it_is():
    cv = random_cv(FEATURIZERS["dihedrals"]).float()
    TorchCVEvaluator(cv, 2)(POSITIONS[0, HEAVY] / NM_TO_ANGSTROM)
    assert next(cv.parameters()).dtype == torch.float32
