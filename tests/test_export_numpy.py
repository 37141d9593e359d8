"""Tests of mdcvkit.export.numpy: the NumPy form of a CV equals the torch module's value and Jacobian."""

import numpy as np
import pytest
import torch
from export_cases import HEAVY, featurizers, frames, random_cv, torch_values_and_gradients
from torch import nn

from mdcvkit.export import NumpyCV, NumpyCVEvaluator, TorchCVEvaluator, cv_evaluator
from mdcvkit.export.numpy import NUMPY_ACTIVATIONS
from mdcvkit.features import AlignedPositions, Concatenate, Positions

POSITIONS = frames()[:, HEAVY]
FEATURIZERS = featurizers(frames())
NUMPY_FORMS = {
    "aligned": FEATURIZERS["aligned"],
    "aligned, weighted, all atoms": AlignedPositions(POSITIONS[0], weights=np.arange(1.0, 11.0)),
    "positions": FEATURIZERS["positions"],
    "concatenate": Concatenate([FEATURIZERS["aligned"], Positions(len(HEAVY), axes=(1,))]),
}


def _check(cv, positions=POSITIONS, rtol=1e-10):
    expected, expected_grad = torch_values_and_gradients(cv, positions)
    numpy_cv = NumpyCV(cv)
    for frame, values, grad in zip(positions, expected, expected_grad, strict=True):
        got, jacobian = numpy_cv(frame.astype(float))
        np.testing.assert_allclose(got, values, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(jacobian, grad, rtol=rtol, atol=rtol * np.abs(grad).max())


@pytest.mark.parametrize("name", sorted(NUMPY_FORMS))
def test_numpy_form_equals_torch_value_and_jacobian(name):
    """On frames of the shipped alanine dipeptide data, far from the fit reference as well."""
    _check(random_cv(NUMPY_FORMS[name], hidden=(7, 5)))


@pytest.mark.parametrize("activation", sorted(NUMPY_ACTIVATIONS, key=lambda t: t.__name__), ids=lambda t: t.__name__)
def test_each_activation_and_its_derivative(activation):
    cv = random_cv(FEATURIZERS["aligned"], hidden=(6,))
    cv.model.encoder[1] = activation()
    _check(cv.eval())  # Dropout: the identity in evaluation


def test_vae_keeps_the_encoder_means():
    _check(random_cv(FEATURIZERS["aligned"], model="vae"))


def test_rotated_and_shifted_frames_give_the_same_cv():
    """The Kabsch fit of the NumPy form removes rigid motions, as the torch one does."""
    cv = random_cv(FEATURIZERS["aligned"])
    angle = 1.1
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    frame = POSITIONS[2].astype(float)
    moved = frame @ rotation.T + [3.0, -1.0, 2.0]
    np.testing.assert_allclose(NumpyCV(cv)(moved)[0], NumpyCV(cv)(frame)[0], atol=1e-10)


def test_what_has_no_numpy_form_is_refused_and_falls_back_to_torch():
    dihedrals = random_cv(FEATURIZERS["dihedrals"])
    with pytest.raises(ValueError, match="Dihedrals has no NumPy form.*evaluated through torch"):
        NumpyCV(dihedrals)
    assert type(cv_evaluator(dihedrals, 2)) is TorchCVEvaluator
    odd = random_cv(FEATURIZERS["aligned"])
    odd.model.encoder[1] = nn.ELU(alpha=0.5)
    with pytest.raises(ValueError, match="has no NumPy form"):
        NumpyCV(odd)
    with pytest.raises(ValueError, match="is not a CollectiveVariable"):
        NumpyCV(lambda x: x[:, :, 0])
    assert type(cv_evaluator(random_cv(FEATURIZERS["aligned"]), 2)) is NumpyCVEvaluator


def test_the_module_is_read_once_and_left_as_it_is():
    cv = random_cv(FEATURIZERS["aligned"]).float()
    numpy_cv = NumpyCV(cv)
    assert next(cv.parameters()).dtype == torch.float32  # the float64 copy is the evaluator's
    before = numpy_cv(POSITIONS[1].astype(float))[0]
    with torch.no_grad():
        cv.model.encoder[0].weight.mul_(2.0)
    np.testing.assert_array_equal(numpy_cv(POSITIONS[1].astype(float))[0], before)


def test_a_degenerate_fit_is_named_not_a_bare_linear_algebra_error(monkeypatch):
    """Where the Kabsch fit's derivative cannot be solved, the error says why (a FEBILAE seed hit this)."""

    def singular(*args, **kwargs):
        raise np.linalg.LinAlgError("Singular matrix")

    evaluator = NumpyCVEvaluator(random_cv(FEATURIZERS["aligned"]), 2)
    monkeypatch.setattr(np.linalg, "solve", singular)
    with pytest.raises(FloatingPointError, match="Singular matrix.*best rotation of a Kabsch fit is not unique"):
        evaluator(POSITIONS[0] / 10.0)
