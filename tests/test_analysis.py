import MDAnalysis as mda
import numpy as np
import pytest
import torch
from MDAnalysis.analysis.dihedrals import Ramachandran
from MDAnalysis.analysis.pca import PCA
from MDAnalysisTests.datafiles import DCD, PSF

import mdcvkit as mk

STEP = 4  # 25,000 of the 100,000 shipped frames keep the suite fast


@pytest.fixture(scope="module")
def fitted(ala2):
    heavy = ala2.select_atoms("not name H*")
    return mk.AutoencoderCV(heavy, n_cv=2, seed=0).run(step=STEP)


def test_results_layout(fitted):
    cv = fitted.results.cv
    assert cv.dims == ("frame", "cv") and cv.shape == (25_000, 2)
    assert cv.attrs["units"] == "dimensionless" and cv.attrs["time_units"] == "ps"
    np.testing.assert_array_equal(cv["frame"][:3], [0, 4, 8])
    assert cv["time"].values[1] - cv["time"].values[0] == pytest.approx(4.0)  # ps
    # the Universe chains four files: they stay four trajectories
    np.testing.assert_array_equal(np.unique(cv["trajectory"]), [0, 1, 2, 3])
    assert fitted._lengths == [6250] * 4
    loss = fitted.results.loss
    assert set(loss.data_vars) >= {"train", "validation"} and loss.sizes["epoch"] > 1
    assert 0.15 < fitted.results.validation.mean() < 0.3


def test_cv_determines_backbone_dihedrals(ala2, fitted):
    """Issue 2: kNN from the 2-D CV to (sin φ, cos φ, sin ψ, cos ψ) reaches R² >= 0.9 on held-out blocks."""
    angles = np.deg2rad(Ramachandran(ala2.select_atoms("resname ALA")).run(step=STEP).results.angles[:, 0])
    targets = np.hstack([np.sin(angles), np.cos(angles)])
    score = mk.metrics.knn_score(fitted.results.cv, targets, lengths=fitted._lengths)
    assert float(score) >= 0.9, score.attrs["per_target"]


def test_transform_reproduces_training_cv(ala2, fitted):
    again = fitted.transform(ala2.select_atoms("not name H*"), step=STEP)
    np.testing.assert_allclose(again.values, fitted.results.cv.values, atol=1e-5)


def test_save_load_bit_identical(tmp_path, ala2, fitted):
    path = fitted.save(tmp_path / "cv.pt")
    loaded = mk.AutoencoderCV.load(path)
    heavy = ala2.select_atoms("not name H*")
    a = fitted.transform(heavy, stop=300)
    b = loaded.transform(heavy, stop=300)
    np.testing.assert_array_equal(a.values, b.values)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no temporary left


@pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*:DeprecationWarning")  # torch.jit.load
def test_torchscript_round_trip(tmp_path, ala2, fitted):
    path = fitted.to_torchscript(tmp_path / "cv.ts")
    scripted = torch.jit.load(str(path))
    heavy = ala2.select_atoms("not name H*")
    positions = torch.from_numpy(np.array([heavy.positions.copy() for _ in ala2.trajectory[:40:7]]))
    torch.testing.assert_close(scripted(positions), fitted.results.model(positions), rtol=1e-5, atol=1e-5)


def test_same_seed_same_cv(ala2, tmp_path):
    heavy = ala2.select_atoms("not name H*")
    runs = [mk.AutoencoderCV(heavy, n_cv=1, seed=7, max_epochs=5).run(step=100).results.cv.values
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    # a training checkpoint: an interrupted run (3 of 5 epochs) resumes to the same CV
    path = tmp_path / "training.pt"
    mk.AutoencoderCV(heavy, n_cv=1, seed=7, max_epochs=3, checkpoint=path).run(step=100)
    resumed = mk.AutoencoderCV(heavy, n_cv=1, seed=7, max_epochs=5, checkpoint=path).run(step=100)
    np.testing.assert_array_equal(resumed.results.cv.values, runs[0])


def test_list_of_atomgroups_are_separate_trajectories(ala2):
    from mdcvkit.datasets import data_path

    universes = [mda.Universe(str(data_path("ala2.pdb")), str(data_path(f"implicit_{k}.xtc"))) for k in (0, 1)]
    groups = [u.select_atoms("backbone") for u in universes]
    cv = mk.AutoencoderCV(groups, n_cv=1, features="dihedrals", max_epochs=3, seed=0).run(step=50)
    assert cv._lengths == [500, 500]
    np.testing.assert_array_equal(np.unique(cv.results.cv["trajectory"]), [0, 1])


def test_weights_are_used(ala2):
    heavy = ala2.select_atoms("not name H*")
    n = len(range(0, ala2.trajectory.n_frames, 200))
    weights = np.r_[np.ones(n // 2), np.zeros(n - n // 2)]
    cv = mk.AutoencoderCV(heavy, n_cv=1, features="distances", weights=weights, max_epochs=2,
                          validation_fraction=0.0).run(step=200)
    features = cv.results.features
    np.testing.assert_allclose(cv.results.model.model.normalization.mean.numpy(),
                               features[: n // 2].mean(0), rtol=1e-4)


def test_linear_autoencoder_spans_pca_subspace():
    """A linear AE (activation=None) on aligned coordinates spans the top principal components."""
    u = mda.Universe(PSF, DCD)
    ca = u.select_atoms("name CA")
    cv = mk.AutoencoderCV(ca, n_cv=2, activation=None, hidden=(), max_epochs=3000, patience=3000,
                          learning_rate=1e-2, batch_size=98, validation_fraction=0.0, seed=0).run()
    pca = PCA(u, select="name CA", align=True, n_components=2).run()
    decoder = cv.results.model.model.decoder[0].weight.detach().numpy().astype(np.float64)  # (n_features, 2)
    ours, _ = np.linalg.qr(decoder)
    cosines = np.linalg.svd(ours.T @ pca.results.p_components[:, :2], compute_uv=False)
    assert cosines.min() > 0.98, cosines


@pytest.mark.parametrize("kwargs, match", [
    (dict(model="bogus"), "model='bogus' is not known"),
    (dict(features="bogus"), "features='bogus' is not known"),
    (dict(activation="sigmoid"), "activation='sigmoid' is not known"),
    (dict(n_cv=30), "n_cv=30 must be smaller than the number of features"),
    (dict(reference="median"), "reference='median' is not known"),
    (dict(n_cv=0), "n_cv=0 must be an integer >= 1"),
    (dict(seed=-1), r"seed=-1 must be an integer between 0 and 2\*\*32 - 1"),
    (dict(device="tpu"), "device='tpu' is not a device"),
])
def test_bad_settings(ala2, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mk.AutoencoderCV(ala2.select_atoms("not name H*"), **kwargs)


def test_bad_atom_selections(ala2):
    with pytest.raises(ValueError, match="empty"):
        mk.AutoencoderCV(ala2.select_atoms("name XYZ"))
    with pytest.raises(ValueError, match="at least 3 atoms"):
        mk.AutoencoderCV(ala2.select_atoms("name CA CB"), n_cv=1)
    with pytest.raises(TypeError, match="AtomGroup"):
        mk.AutoencoderCV(np.zeros((10, 3)))


def test_bad_weights_and_frames(ala2):
    heavy = ala2.select_atoms("not name H*")
    with pytest.raises(ValueError, match="one value per analysed frame"):
        mk.AutoencoderCV(heavy, weights=np.ones(3)).run(step=1000)
    with pytest.raises(ValueError, match="negative"):
        mk.AutoencoderCV(heavy, weights=-np.ones(100)).run(step=1000)
    with pytest.raises(ValueError, match="only 5 frames"):
        mk.AutoencoderCV(heavy).run(stop=5)
    for step in (0, -1, 2.5):  # caught before any frame is read, not by Python's slice
        with pytest.raises(ValueError, match=f"step={step} must be an integer >= 1; pass e.g. step=4"):
            mk.AutoencoderCV(heavy).run(step=step)
    with pytest.raises(ValueError, match="start=1.5 must be a frame index"):
        mk.AutoencoderCV(heavy).run(start=1.5)


def test_nan_coordinates(ala2):
    heavy = ala2.select_atoms("not name H*")
    u = mda.Merge(heavy)
    coordinates = np.array([heavy.positions.copy() for _ in ala2.trajectory[:30]])
    coordinates[17, 2, 0] = np.nan
    u.load_new(coordinates)
    with pytest.raises(ValueError, match="frame 17 .* NaN"):
        mk.AutoencoderCV(u.atoms, features="distances").run()


def test_transform_and_load_errors(tmp_path, ala2, fitted):
    with pytest.raises(ValueError, match="select the same atoms"):
        fitted.transform(ala2.select_atoms("backbone"))
    with pytest.raises(ValueError, match="call run\\(\\) before transform"):
        mk.AutoencoderCV(ala2.select_atoms("not name H*")).transform(ala2.atoms)
    with pytest.raises(FileNotFoundError, match="missing.pt': no such file; expected a CV saved by"):
        mk.AutoencoderCV.load(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="corrupt.pt' is a text file .*, not a CV saved by mdcvkit"):
        mk.AutoencoderCV.load(corrupt)


def test_to_plumed_writes_actions_and_model(tmp_path, ala2):
    backbone = ala2.select_atoms("backbone")
    cv = mk.AutoencoderCV(backbone, n_cv=1, features="dihedrals", max_epochs=2, seed=0).run(step=200)
    plumed = cv.to_plumed(tmp_path / "plumed")
    text = plumed.read_text()
    assert "TORSION" in text and "PYTORCH_MODEL" in text
    # PLUMED numbers atoms from 1: the phi torsion C(ACE)-N-CA-C of the system
    phi = ala2.select_atoms("resname ACE and name C", "resname ALA and name N CA C").indices + 1
    assert ",".join(str(i) for i in phi) in text.replace(" ", "")
    aligned = mk.AutoencoderCV(ala2.select_atoms("not name H*"), max_epochs=1).run(step=500)
    text = aligned.to_plumed(tmp_path / "aligned").read_text()
    assert "UNITS LENGTH=A" in text and text.count("POSITION ATOM=") == 10  # the model fits itself


@pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*:DeprecationWarning")  # torch.jit.load
def test_torchscript_refuses_another_atom_count(tmp_path, ala2, fitted):
    scripted = torch.jit.load(str(fitted.to_torchscript(tmp_path / "cv.ts")))
    heavy = torch.from_numpy(ala2.select_atoms("not name H*").positions.copy())
    with pytest.raises(torch.jit.Error, match=r"shape \[1, 11, 3\], but the CV was exported for \(n_frames, 10, 3\)"):
        scripted(torch.cat([heavy, heavy[:1]])[None])
