"""Tests of mdcvkit.export.torchscript: TorchScript round trips and openmm-torch modules."""

import json

import numpy as np
import pytest
import torch
from export_cases import HEAVY, featurizers, frames, random_cv

from mdcvkit.export import NM_TO_ANGSTROM, evaluate_cv, to_openmm_torch, to_torchscript

POSITIONS = frames()
FEATURIZERS = featurizers(POSITIONS)
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*:DeprecationWarning")


@pytest.mark.parametrize("name", ["aligned", "concatenate"])
def test_torchscript_round_trip(name, tmp_path):
    cv = random_cv(FEATURIZERS[name]).float()
    path = to_torchscript(cv, tmp_path / "cv.pt")
    loaded = torch.jit.load(str(path))
    x = torch.tensor(POSITIONS[:, HEAVY], dtype=torch.float32)
    np.testing.assert_allclose(loaded(x).detach().numpy(), cv(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="exported for"):
        loaded(x[:, :5])
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary name, renamed


def test_openmm_torch_modules_are_scalar_per_component(tmp_path):
    cv = random_cv(FEATURIZERS["dihedrals"])
    paths = to_openmm_torch(cv, tmp_path, 22, particles=HEAVY)
    assert [p.name for p in paths] == ["cv0.pt", "cv1.pt"]
    assert json.loads((tmp_path / "cv.json").read_text())["n_cv"] == 2
    expected = evaluate_cv(cv, POSITIONS[0, HEAVY])[0]
    for k, path in enumerate(paths):
        module = torch.jit.load(str(path))
        value = module(torch.tensor(POSITIONS[0] / NM_TO_ANGSTROM, dtype=torch.float32))
        assert value.shape == () and float(value.detach()) == pytest.approx(expected[k], rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="particles must be system indices from 0 to 21"):
        to_openmm_torch(cv, tmp_path, 22, particles=[0, 30])
