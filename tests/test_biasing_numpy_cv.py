import numpy as np
import pytest
import torch
from torch import nn

from mdcvkit import datasets
from mdcvkit.analysis import CollectiveVariable
from mdcvkit.biasing import TorchCVEvaluator
from mdcvkit.biasing.iterative import _ScaledCV
from mdcvkit.biasing.numpy_cv import numpy_twin
from mdcvkit.features import AlignedPositions, Dihedrals, Positions, backbone_dihedral_indices
from mdcvkit.models import AutoEncoder, GaussianMixtureVAE, VariationalAutoEncoder


@pytest.fixture(scope="module")
def heavy_frames():
    u = datasets.alanine_dipeptide()
    heavy = u.select_atoms("not name H*")
    frames = np.array([heavy.positions.astype(np.float64) for _ in u.trajectory[::97]])
    return heavy, frames


def model(n_features, activation, seed):
    torch.manual_seed(seed)
    ae = AutoEncoder(n_features, 2, hidden=(16, 8), activation=activation)
    rng = np.random.default_rng(seed)
    ae.normalization.mean.copy_(torch.as_tensor(rng.normal(size=n_features)))
    ae.normalization.scale.copy_(torch.as_tensor(rng.uniform(0.5, 3.0, size=n_features)))
    return ae


def torch_reference(cv, positions):
    """Values and gradients (per Å) through torch autograd in float64."""
    x = torch.as_tensor(positions[None], dtype=torch.float64).repeat(2, 1, 1).requires_grad_(True)
    out = cv.double()(x)
    (grad,) = torch.autograd.grad(out.diagonal().sum(), x)
    return out[0].detach().numpy(), grad.numpy()


@pytest.mark.parametrize(("activation", "atoms"), [("tanh", None), ("relu", None), ("elu", None),
                                                   ("tanh", [0, 1, 2, 3, 4, 6, 7, 8, 9])])  # fmt: skip
def test_twin_of_an_aligned_cv_matches_torch(heavy_frames, activation, atoms):
    heavy, frames = heavy_frames
    featurizer = AlignedPositions(frames[0], weights=heavy.masses, atoms=atoms)  # atoms: Cβ in the fit only
    cv = _ScaledCV(featurizer, model(featurizer.n_features, activation, 1), [0.3, -1.2], [2.0, 0.5])
    twin = numpy_twin(cv)
    assert twin is not None
    mirrored = frames[-1] * np.array([-1.0, 1.0, 1.0])  # the best proper rotation of a mirror image
    for positions in (*frames[1:4], mirrored):
        values, gradients = twin(positions)
        expected_values, expected_gradients = torch_reference(cv, positions)
        np.testing.assert_allclose(values, expected_values, rtol=0, atol=1e-10)
        np.testing.assert_allclose(gradients, expected_gradients, rtol=0, atol=1e-9 * np.abs(expected_gradients).max())


def test_twin_of_a_raw_position_cv_matches_torch(heavy_frames):
    heavy, frames = heavy_frames
    featurizer = Positions(heavy.n_atoms)
    cv = CollectiveVariable(featurizer, model(featurizer.n_features, "tanh", 2))
    values, gradients = numpy_twin(cv)(frames[2])
    expected_values, expected_gradients = torch_reference(cv, frames[2])
    np.testing.assert_allclose(values, expected_values, rtol=0, atol=1e-10)
    np.testing.assert_allclose(gradients, expected_gradients, rtol=0, atol=1e-10)


def test_twin_of_a_vae_is_its_encoder_mean(heavy_frames):
    heavy, frames = heavy_frames
    featurizer = AlignedPositions(frames[0])
    torch.manual_seed(4)
    vae = VariationalAutoEncoder(featurizer.n_features, 2, hidden=(12,))
    with torch.no_grad():  # a log-variance head far from the mean's, so that mixing them up shows
        vae.encoder[-1].bias[2:] += 5.0
    cv = CollectiveVariable(featurizer, vae)
    values, gradients = numpy_twin(cv)(frames[3])
    expected_values, expected_gradients = torch_reference(cv, frames[3])
    np.testing.assert_allclose(values, expected_values, rtol=0, atol=1e-10)
    np.testing.assert_allclose(gradients, expected_gradients, rtol=0, atol=1e-9 * np.abs(expected_gradients).max())


def test_no_twin_for_what_it_does_not_cover(heavy_frames):
    heavy, frames = heavy_frames
    aligned = AlignedPositions(frames[0])
    quadruplets, _ = backbone_dihedral_indices(heavy)
    dihedrals = Dihedrals(heavy.n_atoms, quadruplets)

    class Shifted(CollectiveVariable):
        def forward(self, positions, box=None):
            return super().forward(positions, box) + 1.0

    assert numpy_twin(CollectiveVariable(dihedrals, model(dihedrals.n_features, "tanh", 0))) is None
    assert numpy_twin(CollectiveVariable(aligned, GaussianMixtureVAE(aligned.n_features, 2))) is None
    assert numpy_twin(Shifted(aligned, model(aligned.n_features, "tanh", 0))) is None
    assert numpy_twin(lambda x: x[:, 0, :2]) is None
    silu = model(aligned.n_features, "tanh", 0)
    silu.encoder[1] = nn.SiLU()
    assert numpy_twin(CollectiveVariable(aligned, silu)) is None


def test_evaluator_uses_the_twin_in_float64_only(heavy_frames):
    heavy, frames = heavy_frames
    featurizer = AlignedPositions(frames[0])
    cv = CollectiveVariable(featurizer, model(featurizer.n_features, "tanh", 3)).eval()
    fast = TorchCVEvaluator(cv, 2)
    assert fast.twin is not None
    assert TorchCVEvaluator(cv, 2, dtype=torch.float32).twin is None
    torch_path = TorchCVEvaluator(nn.Sequential(cv), 2)  # not a CollectiveVariable: torch
    assert torch_path.twin is None
    positions_nm = frames[5] / 10
    values, gradients = fast(positions_nm)
    expected_values, expected_gradients = torch_path(positions_nm)
    np.testing.assert_allclose(values, expected_values, rtol=0, atol=1e-10)
    np.testing.assert_allclose(gradients, expected_gradients, rtol=0, atol=1e-9 * np.abs(expected_gradients).max())
