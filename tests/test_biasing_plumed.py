"""Tests of mdcvkit.biasing.plumed: TorchScript + plumed.dat export, openmm-torch modules."""

import json
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from mdcvkit.analysis import CollectiveVariable
from mdcvkit.biasing import DescriptorCV, Distance, Position, Torsion, to_openmm_torch, to_plumed
from mdcvkit.features import AlignedPositions, FramePositions, Positions
from mdcvkit.models import MODELS

PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)
PDB = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide" / "ala2.pdb"
HEAVY = [1, 4, 5, 6, 8, 10, 14, 15, 16, 18]  # heavy atoms of alanine dipeptide (system indices)
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


# --- aligned coordinates: FIT_TO_TEMPLATE + POSITION ----------------------------------------------------------


@pytest.fixture(scope="module")
def alanine_nm():
    return np.array(app.PDBFile(str(PDB)).positions.value_in_unit(unit.nanometer))


@pytest.fixture(scope="module", params=[None, [0, 1, 2, 3, 4, 6, 7, 8, 9]], ids=["all atoms", "no CB"])
def aligned_cv(alanine_nm, request):
    """An AE-shaped CV on aligned heavy-atom coordinates, with unequal fit weights and a fitted normalisation;
    once with every fitted atom as input, once with Cβ in the fit only."""
    reference = alanine_nm[HEAVY] * 10 + np.random.default_rng(1).normal(scale=0.3, size=(10, 3))  # Å
    weights = np.array([1, 2, 4, 4, 2, 1, 4, 2, 1, 4], dtype=float)  # exact in the PDB's 4 decimals once / 4
    featurizer = AlignedPositions(reference, weights=weights, atoms=request.param)
    torch.manual_seed(0)
    model = MODELS["ae"](featurizer.n_features, 2, hidden=(8,), activation="tanh",
                         scale_groups=featurizer.scale_groups)  # fmt: skip
    frames = torch.as_tensor(reference[None] + np.random.default_rng(2).normal(scale=0.5, size=(50, 10, 3)))
    model.normalization.fit(featurizer(frames.float()))
    return CollectiveVariable(featurizer, model).double()


def read_pdb(path):
    """ATOM records by column, as PLUMED's PDB reader takes them: serials, positions (Å), occupancy, beta."""
    rows = [line.ljust(80) for line in path.read_text().splitlines() if line[:6].strip() in ("ATOM", "HETATM")]
    serials = np.array([int(r[6:11]) for r in rows])
    xyz = np.array([[float(r[30 + 8 * k : 38 + 8 * k]) for k in range(3)] for r in rows])
    return serials, xyz, np.array([float(r[54:60]) for r in rows]), np.array([float(r[60:66]) for r in rows])


def fit_to_template(positions, serials, template, weights):
    """PLUMED's FIT_TO_TEMPLATE TYPE=OPTIMAL on all atoms (nm): x -> R (x - c_x) + c_ref."""
    w = weights / weights.sum()
    center = w @ template
    fitted = positions[serials - 1]
    c_x = w @ fitted
    correlation = ((fitted - c_x) * w[:, None]).T @ (template - center)
    u, _, vt = np.linalg.svd(correlation)
    flip = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
    rotation = vt.T @ flip @ u.T  # proper rotation taking (x - c_x) onto the centred template
    return (positions - c_x) @ rotation.T + center


def plumed_arguments(plumed_dat):
    """Atom index and axis of each PYTORCH_MODEL input, read from the POSITION actions and the ARG list."""
    atoms, args = {}, None
    for line in plumed_dat.read_text().splitlines():
        if ": POSITION ATOM=" in line:
            label, rest = line.split(": POSITION ATOM=")
            atoms[label] = int(rest.split()[0])
        if ": PYTORCH_MODEL " in line:
            args = line.split("ARG=")[1].split()[0].split(",")
    return np.array([atoms[a.split(".")[0]] - 1 for a in args]), np.array(["xyz".index(a[-1]) for a in args])


def test_aligned_cv_exports_fit_to_template_and_positions(aligned_cv, tmp_path):
    path = to_plumed(aligned_cv, tmp_path, particles=HEAVY, temperature=310)
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == "FIT_TO_TEMPLATE STRIDE=1 REFERENCE=reference.pdb TYPE=OPTIMAL"
    assert lines[1] == "p0: POSITION ATOM=2 NOPBC" and lines[10] == "p9: POSITION ATOM=19 NOPBC"
    assert lines[11].startswith("cv: PYTORCH_MODEL FILE=model.ptc ARG=p0.x,p0.y,p0.z,p1.x,")
    assert not any(line.startswith("UNITS") for line in lines)  # nm: the model converts to Å
    assert "# WHOLEMOLECULES ENTITY0=2,5,6,7,9,11,15,16,17,19" in path.read_text()
    serials, template, occupancy, beta = read_pdb(tmp_path / "reference.pdb")
    np.testing.assert_array_equal(serials, np.array(HEAVY) + 1)
    np.testing.assert_array_equal(occupancy, beta)
    weights = aligned_cv.featurizer.weights.numpy()
    np.testing.assert_allclose(occupancy, weights / weights.max())
    np.testing.assert_allclose(occupancy @ template, 0.0, atol=1e-4)  # centred on its weighted centroid
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["input_shape"] == [1, 30] and meta["units"]["length"] == "nm"
    assert meta["torch_version"] == torch.__version__


def test_emulated_plumed_gives_the_cv_and_its_gradient(aligned_cv, alanine_nm, tmp_path):
    """FIT_TO_TEMPLATE + POSITION emulated in numpy, fed to the traced model: the CV of transform, and,
    chained through the fit, the same gradient with respect to the system positions."""
    plumed_dat = to_plumed(aligned_cv, tmp_path, particles=HEAVY)
    model = torch.jit.load(str(tmp_path / "model.ptc"))
    serials, template, occupancy, _ = read_pdb(tmp_path / "reference.pdb")
    template_nm = template / 10  # PLUMED converts the PDB's Å to its length unit, nm

    atoms, axes = plumed_arguments(plumed_dat)

    def emulate(positions_nm):
        return fit_to_template(positions_nm, serials, template_nm, occupancy)[atoms, axes]

    rng = np.random.default_rng(3)
    for frame in range(3):
        system = alanine_nm + rng.normal(scale=0.02, size=alanine_nm.shape)  # nm
        system = Rotation.random(random_state=frame).apply(system) + rng.normal(size=3)
        inputs = torch.tensor(emulate(system)[None], dtype=torch.float32, requires_grad=True)
        out = model(inputs)
        assert out.dtype == torch.float32 and out.shape == (1, 2)
        x = torch.tensor(system[HEAVY] * 10, requires_grad=True)  # Å, float64
        expected = aligned_cv(x[None])
        np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-4, atol=1e-5)
        # d inputs / d system positions by central differences of the emulation (float64)
        h = 1e-6
        jacobian = np.zeros((system.size, inputs.shape[1]))
        for k in range(system.size):
            step = np.zeros(system.size)
            step[k] = h
            step = step.reshape(system.shape)
            jacobian[k] = (emulate(system + step) - emulate(system - step)) / (2 * h)
        for component in range(2):
            (model_grad,) = torch.autograd.grad(out[0, component], inputs, retain_graph=True)
            plumed_grad = (jacobian @ model_grad.double().numpy()[0]).reshape(system.shape)  # per nm
            (grad_angstrom,) = torch.autograd.grad(expected[0, component], x, retain_graph=True)
            reference = np.zeros_like(system)
            reference[HEAVY] = grad_angstrom.numpy() * 10  # per nm
            scale = np.abs(reference).max()
            np.testing.assert_allclose(plumed_grad, reference, rtol=0, atol=2e-4 * scale)


def test_frame_cv_exports_positions_and_the_model_builds_the_frame(alanine_nm, tmp_path):
    """Body-frame coordinates: POSITION of each atom (no fit), the traced model gives the CV (nm in)."""
    featurizer = FramePositions(10, (4, 3, 6))  # CA, N, C among the heavy atoms
    torch.manual_seed(0)
    model = MODELS["ae"](21, 2, hidden=(8,), activation="tanh", scale_groups=featurizer.scale_groups)
    frames = torch.as_tensor(
        alanine_nm[HEAVY][None] * 10 + np.random.default_rng(2).normal(scale=0.3, size=(50, 10, 3))
    )
    model.normalization.fit(featurizer(frames.float()))
    frame_cv = CollectiveVariable(featurizer, model).double()
    path = to_plumed(frame_cv, tmp_path, particles=HEAVY)
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == "p0: POSITION ATOM=2 NOPBC" and lines[9] == "p9: POSITION ATOM=19 NOPBC"
    assert lines[10].startswith("cv: PYTORCH_MODEL FILE=model.ptc ARG=p0.x,p0.y,p0.z,p1.x,")
    assert not (tmp_path / "reference.pdb").exists()
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["frame"] == [9, 7, 15] and meta["input_shape"] == [1, 30]
    traced = torch.jit.load(str(tmp_path / "model.ptc"))
    atoms, axes = plumed_arguments(path)
    system = Rotation.random(random_state=4).apply(alanine_nm) + 1.5  # nm, rotated and shifted
    out = traced(torch.tensor(system[atoms, axes][None], dtype=torch.float32))
    expected = frame_cv(torch.tensor(system[HEAVY][None] * 10))
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="a DescriptorCV of body-frame coordinates has no PLUMED form"):
        to_plumed(DescriptorCV.from_collective_variable(frame_cv), tmp_path / "descriptors")


def test_fitted_cv_on_raw_positions_cannot_be_exported(tmp_path):
    torch.manual_seed(0)
    fitted = CollectiveVariable(Positions(4), MODELS["ae"](12, 1, hidden=(4,)))
    with pytest.raises(ValueError, match="featurizer Positions has no descriptor form"):
        to_plumed(fitted, tmp_path)
