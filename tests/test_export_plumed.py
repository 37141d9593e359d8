"""Tests of mdcvkit.export.plumed: plumed.dat + PYTORCH_MODEL, checked by emulating PLUMED."""

import json

import numpy as np
import pytest
import torch
from export_cases import HEAVY, featurizers, frames, random_cv, torch_values_and_gradients

from mdcvkit.export import to_plumed

POSITIONS = frames()
FEATURIZERS = featurizers(POSITIONS)
# PLUMED loads TorchScript: torch's deprecation of torch.jit is not ours to act on here
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*:DeprecationWarning")


def _torsion(p0, p1, p2, p3):
    """Dihedral (rad) by the textbook formula of PLUMED's TORSION (Blondel and Karplus)."""
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.linalg.cross(b0, b1), torch.linalg.cross(b1, b2)
    y = (torch.linalg.cross(n1, n2) * b1).sum() / torch.linalg.norm(b1)
    return torch.atan2(y, (n1 * n2).sum())


def emulate(folder, positions):
    """Run ``plumed.dat`` on one frame of all-atom positions (Å): the CV and dCV/dx (per Å), by autograd."""
    lines = [line.split("#")[0].strip() for line in (folder / "plumed.dat").read_text().splitlines()]
    lines = [line for line in lines if line]
    assert lines[0] == "UNITS LENGTH=A ENERGY=kj/mol"
    x = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
    values = {}
    model = None
    for line in lines[1:]:
        label, _, action = line.partition(": ") if ": " in line else ("", "", line)
        words = dict(w.split("=", 1) for w in action.split()[1:] if "=" in w)
        kind = action.split()[0]
        if kind == "DISTANCE":
            a, b = (int(k) - 1 for k in words["ATOMS"].split(","))
            values[label] = torch.linalg.norm(x[b] - x[a])
        elif kind == "TORSION":
            values[label] = _torsion(*(x[int(k) - 1] for k in words["ATOMS"].split(",")))
        elif kind == "POSITION":
            assert "NOPBC" in action.split()
            atom = x[int(words["ATOM"]) - 1]
            for k, axis in enumerate("xyz"):
                values[f"{label}.{axis}"] = atom[k]
        elif kind == "PYTORCH_MODEL":
            model = torch.jit.load(str(folder / words["FILE"]))
            inputs = torch.stack([values[a] for a in words["ARG"].split(",")])[None].float()
            out = model(inputs)[0].double()
        elif kind != "PRINT":
            raise AssertionError(f"the emulator does not know {kind}")
    assert model is not None
    grads = [torch.autograd.grad(out[k], x, retain_graph=True)[0] for k in range(len(out))]
    return out.detach().numpy(), torch.stack(grads).numpy()


@pytest.mark.parametrize("name", sorted(FEATURIZERS))
def test_emulated_plumed_equals_torch_forward_and_gradient(name, tmp_path):
    """PLUMED computes the same CV and gradient as the torch module (float32 model: rtol 1e-4)."""
    cv = random_cv(FEATURIZERS[name])
    to_plumed(cv, tmp_path, particles=HEAVY)
    expected, expected_grad = torch_values_and_gradients(cv, POSITIONS[:, HEAVY])
    for frame in range(3):
        got, grad = emulate(tmp_path, POSITIONS[frame])
        np.testing.assert_allclose(got, expected[frame], rtol=1e-4, atol=1e-4)
        scale = np.abs(expected_grad[frame]).max()
        np.testing.assert_allclose(grad[:, HEAVY], expected_grad[frame], atol=1e-3 * scale)
        assert np.all(grad[:, np.setdiff1d(np.arange(22), HEAVY)] == 0)


def test_input_names_its_atoms_units_and_version(tmp_path):
    cv = random_cv(FEATURIZERS["dihedrals"])
    path = to_plumed(cv, tmp_path, particles=np.asarray(HEAVY) + 100, label="ae", temperature=310)
    text = path.read_text()
    assert "f0: TORSION ATOMS=105,107,109,115" in text  # PLUMED numbers are system index + 1
    assert "ae: PYTORCH_MODEL FILE=model.ptc ARG=f0,f1" in text
    assert "TEMP=310" in text and "PRINT ARG=ae.node-0,ae.node-1" in text
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["torch_version"] == torch.__version__ and meta["input_shape"] == [1, 2]


def test_model_refuses_another_input_width(tmp_path):
    to_plumed(random_cv(FEATURIZERS["distances"]), tmp_path, particles=HEAVY)
    model = torch.jit.load(str(tmp_path / "model.ptc"))
    with pytest.raises(Exception, match="exported for"):
        model(torch.zeros(1, 44))


def test_export_needs_a_fitted_cv(tmp_path):
    with pytest.raises(ValueError, match="cv must be a fitted mdcvkit CollectiveVariable"):
        to_plumed(lambda x: x, tmp_path)
    with pytest.raises(ValueError, match="particles has 3 entries"):
        to_plumed(random_cv(FEATURIZERS["dihedrals"]), tmp_path, particles=[1, 2, 3])
