import subprocess
import sys

import xarray as xr

import mdcvkit as mk
from mdcvkit import cli
from mdcvkit.datasets import data_path


def test_help_runs_as_a_command():
    out = subprocess.run([sys.executable, "-m", "mdcvkit.cli", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "train" in out.stdout


def test_demo_writes_report(tmp_path):
    report = cli.demo(tmp_path, step=50, max_epochs=3)
    text = report.read_text()
    assert "R² =" in text
    assert "Chapman–Kolmogorov" in text
    for name in ("cv.nc", "model.pt", "loss.png", "free_energy.png", "ramachandran.png", "implied_timescales.png",
                 "ck_test.png"):
        assert (tmp_path / name).stat().st_size > 0
    cv = xr.open_dataarray(tmp_path / "cv.nc")
    assert cv.dims == ("frame", "cv") and cv.sizes["frame"] == 2000
    loaded = mk.AutoencoderCV.load(tmp_path / "model.pt")
    assert loaded.n_cv == 2


def test_train_command(tmp_path):
    status = cli.main(["train", str(data_path("ala2.pdb")), str(data_path("implicit_0.xtc")),
                       str(data_path("implicit_1.xtc")), "--output", str(tmp_path), "--step", "100",
                       "--max-epochs", "2", "--n-cv", "1", "--features", "dihedrals"])
    assert status == 0
    cv = xr.open_dataarray(tmp_path / "cv.nc")
    assert sorted(set(cv["trajectory"].values)) == [0, 1]


def test_train_reports_bad_input_without_traceback(tmp_path, capsys):
    status = cli.main(["train", str(data_path("ala2.pdb")), str(data_path("implicit_0.xtc")),
                       "--output", str(tmp_path), "--model", "bogus"])
    assert status == 2
    assert "model='bogus' is not known" in capsys.readouterr().err
