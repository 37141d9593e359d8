"""Tests of mdcvkit.biasing.plumed: TorchScript + plumed.dat export, openmm-torch modules."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from mdcvkit.biasing import DescriptorCV, Distance, Position, Torsion, to_openmm_torch, to_plumed

PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)
# PLUMED and openmm-torch load TorchScript: torch's deprecation of torch.jit is not ours to act on here
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*:DeprecationWarning")


@pytest.fixture(scope="module")
def cv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    return DescriptorCV([Torsion(*PHI), Torsion(*PSI), Distance(1, 18)], model=model,
                        mean=[0, 0, 0, 0, 6.0], std=[1, 1, 1, 1, 2.0])  # fmt: skip


@pytest.fixture(scope="module")
def positions():
    rng = np.random.default_rng(0)
    return torch.tensor(rng.normal(scale=3.0, size=(4, 22, 3)))  # Å


def test_traced_model_gives_the_cv_and_its_gradient(cv, positions, tmp_path):
    to_plumed(cv, tmp_path)
    model = torch.jit.load(str(tmp_path / "model.ptc"))
    descriptors = cv.descriptor_values(positions).float()
    for frame in range(len(positions)):
        x = descriptors[frame : frame + 1].clone().requires_grad_(True)  # PLUMED's (1, n_inputs), float32
        out = model(x)
        assert out.dtype == torch.float32 and out.shape == (1, 2)
        expected = cv(positions[frame : frame + 1])
        np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-5, atol=1e-5)
        for k in range(2):
            (grad,) = torch.autograd.grad(out[0, k], x, retain_graph=True)
            reference = x.detach().double().requires_grad_(True)
            (expected_grad,) = torch.autograd.grad(cv.head(reference)[0, k], reference)
            np.testing.assert_allclose(grad.numpy(), expected_grad.numpy(), rtol=1e-4, atol=1e-5)


def test_plumed_input_computes_the_descriptors(cv, tmp_path):
    path = to_plumed(cv, tmp_path, particles=np.arange(22) + 100, temperature=310)
    text = path.read_text()
    assert "UNITS LENGTH=A" in text
    assert "d0: TORSION ATOMS=105,107,109,115" in text  # 1-based, shifted by the particle map
    assert "d2: DISTANCE ATOMS=102,119" in text
    assert "cv: PYTORCH_MODEL FILE=model.ptc ARG=d0,d1,d2" in text
    assert "# opes: OPES_METAD ARG=cv.node-0,cv.node-1" in text
    assert "# metad: METAD ARG=cv.node-0,cv.node-1" in text and "TEMP=310" in text
    assert f"torch {torch.__version__}" in text
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["torch_version"] == torch.__version__ and meta["input_shape"] == [1, 3]


def test_position_descriptor_uses_components(tmp_path):
    cv = DescriptorCV([Position(0, 2), Position(1, 0)], std=[10.0, 10.0])
    text = to_plumed(cv, tmp_path).read_text()
    assert "d0: POSITION ATOM=1 NOPBC" in text
    assert "ARG=d0.z,d1.x" in text


def test_openmm_torch_modules_are_scalar_per_component(cv, positions, tmp_path):
    n_particles = 30
    particles = np.arange(22) + 5
    paths = to_openmm_torch(cv, tmp_path, n_particles, particles=particles)
    assert [p.name for p in paths] == ["cv0.pt", "cv1.pt"]
    system_positions = torch.zeros(n_particles, 3)
    system_positions[particles] = (positions[0] / 10).float()  # nm
    expected = cv(positions[:1]).detach().numpy()[0]
    for k, path in enumerate(paths):
        module = torch.jit.load(str(path))
        value = module(system_positions)
        assert value.shape == ()
        assert value.item() == pytest.approx(expected[k], rel=1e-4, abs=1e-4)


def test_export_needs_a_descriptor_cv(tmp_path):
    with pytest.raises(ValueError, match="cv must be a mdcvkit.biasing.DescriptorCV"):
        to_plumed(lambda x: x[:, :1, 0], tmp_path)
    cv = DescriptorCV([Distance(0, 5)])
    with pytest.raises(ValueError, match="particles has 2 entries but the CV reads 6 atoms"):
        to_plumed(cv, tmp_path, particles=[0, 1])
