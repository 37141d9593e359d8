"""Every notebook in tutorials/ runs top to bottom, with the short settings of MDCVKIT_TUTORIAL_QUICK=1; so do
the tutorials' scripts, with --quick."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # runs simulations or notebooks: `pytest -m "not slow"` skips them

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("MDCVKIT_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    # a failing cell raises CellExecutionError with the cell's traceback
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


def test_febilae_alanine_script_runs(tmp_path):
    """The script behind tutorial 05's n_models loops runs its smoke settings and prints its tables."""
    script = Path(__file__).resolve().parents[1] / "tutorials" / "febilae_alanine.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--max-iterations", "1", "--out",
                           str(tmp_path / "loop")], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = done.stdout.split("ESS (frames)\n")[1].splitlines()
    assert [row.split()[0] for row in rows[:2]] == ["0", "1"]
    assert "production:" in rows[2] and "frames in C7ax" in rows[2]
    assert list(tmp_path.glob("loop_s0_k100_n4.state"))


def test_committor_alanine_script_runs(tmp_path):
    """The alanine committor study (brute-force MD and the committor loop) runs its smoke settings and writes
    its results."""
    script = Path(__file__).resolve().parents[1] / "tutorials" / "committor_alanine.py"
    for step in ("brute", "learn"):
        done = subprocess.run([sys.executable, str(script), step, "--quick", "--output", str(tmp_path)],
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    brute = json.loads((tmp_path / "brute_600K_10.json").read_text())
    assert brute["ns"] == 0.004 and brute["n_ab"] >= 0 and brute["time_a_ps"] > 0
    learn = json.loads(next(tmp_path.glob("learn_600K_10_umbrella_*.json")).read_text())
    assert learn["iterations"] == 1 and learn["frames"] == 15 and learn["rate"] >= 0
