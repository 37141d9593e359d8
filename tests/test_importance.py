"""Tests of mdcvkit.importance: sensitivity of a CV to its inputs, and retraining on the top inputs."""

import numpy as np
import pytest
from conftest import SHORT, STEP

import mdcvkit as mk
from mdcvkit.importance import feature_importance


def test_feature_importance_of_a_linear_cv_is_its_weights(heavy):
    cv = mk.AutoencoderCV(heavy, n_cv=2, features="distances", activation=None, hidden=(), max_epochs=2,
                          seed=0).run(step=STEP)
    model = cv.results.model.model
    weight = model.encoder[0].weight.detach().numpy()  # (n_cv, n_features), on normalised features
    importance = cv.feature_importance()
    assert importance.dims == ("cv", "feature") and importance.shape == (2, 45)
    np.testing.assert_allclose(importance.values, np.abs(weight), rtol=1e-5)
    raw = cv.feature_importance(normalized=False)
    np.testing.assert_allclose(raw.values, np.abs(weight) / model.normalization.scale.numpy(), rtol=1e-5)
    assert importance["label"].values[0] == "d(CH3,C)" and importance["atoms"].values[0] == "CH3,C"
    atoms = cv.feature_importance(per="atom")
    assert atoms.dims == ("cv", "atom") and list(atoms["name"].values) == list(heavy.names)
    np.testing.assert_array_equal(atoms["index"].values, heavy.indices)
    np.testing.assert_allclose(atoms.sum("atom"), importance.sum("feature"), rtol=1e-10)
    residues = cv.feature_importance(per="residue")
    assert list(residues["resname"].values) == ["ACE", "ALA", "NME"]
    np.testing.assert_allclose(residues.sum("residue"), importance.sum("feature"), rtol=1e-10)
    with pytest.raises(ValueError, match="per='bond' is not known"):
        cv.feature_importance(per="bond")


def test_feature_importance_is_weighted_like_the_training(heavy):
    n = 1000
    weights = np.r_[np.ones(n // 2), np.zeros(n // 2)]
    cv = mk.AutoencoderCV(heavy, n_cv=1, features="distances", weights=weights, **SHORT).run(step=STEP)
    expected = feature_importance(cv.results.model, cv.results.features[: n // 2], cv._atoms)
    np.testing.assert_allclose(cv.feature_importance().values, expected.values, rtol=1e-5)


def test_loaded_cv_averages_over_given_frames(heavy, tmp_path):
    """A CV read from disk has no training features: it averages over the frames it is given."""
    cv = mk.AutoencoderCV(heavy, n_cv=2, features="distances", **SHORT).run(step=STEP)
    cv.save(tmp_path / "cv.pt")
    loaded = mk.AutoencoderCV.load(tmp_path / "cv.pt")
    given = loaded.feature_importance(per="atom", atomgroup=heavy, step=STEP)
    np.testing.assert_allclose(given.values, cv.feature_importance(per="atom").values, rtol=1e-5)
    part = loaded.feature_importance(atomgroup=heavy, stop=200, step=STEP)
    expected = feature_importance(cv.results.model, cv.results.features[:2], cv._atoms)
    np.testing.assert_allclose(part.values, expected.values, rtol=1e-5)
    with pytest.raises(ValueError, match="of a loaded CV needs frames to average over: pass atomgroup="):
        loaded.feature_importance()


def test_top_k_retrains_on_the_most_important_inputs(heavy):
    cv = mk.AutoencoderCV(heavy, n_cv=1, features="distances", **SHORT).run(step=STEP)
    scores = cv.feature_importance().sum("cv")
    best = set(scores.sortby(-scores)["label"].values[:5])
    smaller = cv.top_k(5)
    assert set(smaller._featurizer.labels) == best and smaller.model_name == "ae"
    smaller.run(step=STEP)
    assert smaller.results.features.shape == (1000, 5)
    atoms = mk.AutoencoderCV(heavy, n_cv=2, model="vae", beta=0.5, **SHORT).run(step=STEP).top_k(4)
    assert atoms._groups[0].n_atoms == 4 and atoms.model_kwargs == {"beta": 0.5}
    with pytest.raises(ValueError, match=r"k=46 must be an integer in \[1, 45\]"):
        cv.top_k(46)
    with pytest.raises(ValueError, match=r"k=2 must be an integer in \[3, 10\] atoms"):
        mk.AutoencoderCV(heavy, **SHORT).run(step=STEP).top_k(2)
