import re
import subprocess
import sys

import pytest
import xarray as xr

import mdcvkit as mk
from mdcvkit import cli
from mdcvkit.datasets import data_path


def test_help_runs_as_a_command():
    out = subprocess.run([sys.executable, "-m", "mdcvkit.cli", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "train" in out.stdout


def test_demo_command_prints_its_stages_and_not_mdanalysis_chatter(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mdcvkit.cli", "demo", "--output", str(tmp_path), "--step", "100",
                          "--max-epochs", "2", "--eabf-ps", "4"], capture_output=True, text=True, check=True)
    for stage in ("1/5 training", "2/5 the CV determines", "3/5 eABF along the CV", "4/5 MSM validation",
                  "5/5 decoding"):
        assert stage in out.stderr
    assert "Choosing frames to analyze" not in out.stderr  # MDAnalysis logs every analysis run at INFO
    assert "report written to" in out.stdout


def _markdown_table(text, header):
    """Rows of the markdown table whose header line starts with ``header``, as {first cell: {column: cell}}."""
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(header))
    columns = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(columns, cells, strict=True))
    return rows


def _number(cell):
    """The value of a report cell such as ``0.0123 [0.0110, 0.0135]``."""
    return float(cell.split()[0])


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo")
    return output, cli.demo(output, step=50, max_epochs=3, eabf_ps=20).read_text()


def test_demo_writes_report(demo_report):
    tmp_path, text = demo_report
    assert "R² =" in text
    assert "Chapman–Kolmogorov" in text
    assert re.search(r"at lags [0-9, ]+ ps;", text)  # lag times in ps (demo step 50: 50, 100, ... ps)
    for name in ("cv.nc", "model.pt", "loss.png", "free_energy.png", "ramachandran.png", "implied_timescales.png",
                 "ck_test.png", "reconstruction.png", "eabf.png"):
        assert (tmp_path / name).stat().st_size > 0
        assert f"| `{name}` |" in text  # listed in the report's file table
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
    assert "argument --model: invalid choice: 'bogus'" in capsys.readouterr().err


PDB, XTC = str(data_path("ala2.pdb")), str(data_path("implicit_0.xtc"))


@pytest.mark.parametrize("arguments, message", [
    ([PDB, "missing.xtc"], "no file at 'missing.xtc'; check the path"),
    ([PDB, XTC, "--select", "name XYZ"], "select='name XYZ' selects no atom of"),
    ([PDB, XTC, "--select", "name ("], "select='name (' is not an MDAnalysis selection"),
    ([PDB, XTC, "--step", "0"], "argument --step: '0' is not a positive integer"),
])
def test_train_reports_bad_files_and_selections(tmp_path, capsys, arguments, message):
    assert cli.main(["train", *arguments, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_version_and_help_with_defaults(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mdcvkit {mk.__version__}"
    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, default in [("--select", "not name H*"), ("--n-cv", "2"), ("--model", "ae"),
                            ("--features", "aligned"), ("--step", "None"), ("--max-epochs", "200"), ("--seed", "0")]:
        assert option in text and f"(default: {default})" in text
    assert "Å" in text  # units


@pytest.mark.parametrize("case, message", [
    ("output_is_file", "--output '{out}' is an existing file; pass a folder"),
    ("topology_is_folder", "is a folder; pass a topology or trajectory file"),
    ("topology_only", "no trajectory given, and the topology"),
    ("text_trajectory", "MDAnalysis cannot read"),
    ("seed", "argument --seed: '-1' is not an integer seed"),
])
def test_train_checks_paths_before_it_works(tmp_path, capsys, monkeypatch, case, message):
    out = tmp_path / "out"
    arguments = [PDB, XTC]
    if case == "output_is_file":
        out.write_text("x")
    elif case == "topology_is_folder":
        arguments = [str(tmp_path), XTC]
    elif case == "topology_only":
        arguments = [PDB]
    elif case == "text_trajectory":
        bad = tmp_path / "bad.xtc"
        bad.write_text("not a trajectory\n")
        arguments = [PDB, str(bad)]
    read = []
    monkeypatch.setattr(mk.AutoencoderCV, "run", lambda self, *a, **k: read.append(1))  # nothing may be read
    extra = ["--seed", "-1"] if case == "seed" else []
    assert cli.main(["train", *arguments, "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message.format(out=out) in err and "Traceback" not in err and err.count("\n") == 1 and not read


def test_demo_repairs_and_compares_reconstructions(demo_report):
    _, text = demo_report
    assert "## Decoded, repaired, compared: reconstructions against MD" in text
    assert "![reconstructions](reconstruction.png)" in text
    rows = _markdown_table(text, "| ensemble |")
    md = rows["MD frames (floor; distances: MD halves)"]
    raw, repaired = rows["reconstructions, raw"], rows["reconstructions, repaired"]
    # MD floor: thermal bond-length spread of heavy atoms, about 0.03 Å, and no inverted centres
    assert 0.005 < _number(md["bond RMSD (Å)"]) < 0.05
    assert _number(md["inversions per frame"]) == 0
    assert md["paired MSE (Å²)"] == "—"
    # the repair reaches its tolerance and restores handedness
    assert _number(repaired["bond RMSD (Å)"]) <= 0.01
    assert _number(repaired["angle RMSD (°)"]) <= 2.0
    assert _number(repaired["inversions per frame"]) == 0
    assert _number(raw["bond RMSD (Å)"]) > _number(repaired["bond RMSD (Å)"])
    for row in (raw, repaired):
        lower, upper = (float(v) for v in row["paired MSE (Å²)"].split("[")[1].rstrip("]").split(","))
        assert _number(row["paired MSE (Å²)"]) > 0 and 0 < lower <= upper
        assert -1 <= _number(row["Spearman"]) <= 1
        assert _number(row["RMSD W₁ (Å)"]) >= 0 and _number(row["RMSF ratio"]) > 0


def test_an_unreadable_trajectory_is_one_line_from_the_command(tmp_path):
    bad = tmp_path / "bad.xtc"
    bad.write_text("not a trajectory\n")
    out = subprocess.run([sys.executable, "-m", "mdcvkit.cli", "train", PDB, str(bad), "--output", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "MDAnalysis cannot read" in out.stderr and "bad.xtc" in out.stderr


def test_demo_biases_along_the_learned_cv(demo_report):
    """The eABF section: 20 ps along the (barely trained) CV from C7eq, against the shipped unbiased vacuum run."""
    _, text = demo_report
    assert "## Biased: eABF along the learned CV" in text and "![eABF](eabf.png)" in text
    rows = _markdown_table(text, "| run |")
    biased, unbiased = rows["eABF along the CV"], rows["unbiased (shipped `vacuum.xtc`)"]
    assert biased["length (ps)"] == "20" and int(biased["C7eq ↔ C7ax crossings"]) >= 0
    # the shipped 20 ns in vacuum stay in C7eq: no frame in the C7ax core (20 000 frames, 1 ps apart)
    assert unbiased["length (ps)"] == "19999" and unbiased["C7eq ↔ C7ax crossings"] == "0"
    assert unbiased["time in C7ax (%)"] == "0.0" and unbiased["first in C7ax"] == "never"
    # where both runs sample, CZAR along the CV agrees with -kT ln p of the unbiased run (measured 0.25 kT, 3 bins)
    rms, n_bins = re.search(r"agree to\s+RMS ([0-9.]+) kT over the (\d+) bins", text).groups()
    assert int(n_bins) >= 2 and float(rms) < 1.0


def test_demo_checks_the_eabf_length(tmp_path):
    with pytest.raises(ValueError, match=r"eabf_ps=0 must be a number of ps, at least 0.4"):
        cli.demo(tmp_path, eabf_ps=0)
