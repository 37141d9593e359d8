"""The README stays a front door: short, and its quick start runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MAX_LINES = 150


def test_readme_is_short():
    n_lines = len(README.read_text().splitlines())
    assert n_lines <= MAX_LINES, (
        f"README.md has {n_lines} lines, more than {MAX_LINES}: move details to the user guide (docs/guide/) "
        "and measured results to docs/findings/"
    )


def test_readme_links_exist():
    """Relative links and images of the README point at files of the checkout."""
    targets = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    relative = [t for t in targets if "://" not in t]
    assert relative, "README has no relative link"
    missing = [t for t in relative if not (README.parent / t).exists()]
    assert not missing, f"README links to missing paths: {missing}"


def test_quick_start_runs(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python block"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # the block is our own documentation
    assert namespace["cv"].results.cv.shape == (25_000, 2)
    for name in ("ala2_cv.pt", "ala2_cv.ts", "ala2_free_energy.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert namespace["new"].sizes["frame"] == 1000


def test_every_subpackage_is_packaged():
    """Every folder of mdcvkit/ with an ``__init__.py`` is listed in ``[tool.setuptools] packages``, so that
    ``pip install .`` (not only the editable install the tests run from) ships it."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    root = README.parent
    packages = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(root).parts) for init in (root / "mdcvkit").rglob("__init__.py")}
    missing = sorted(found - packages)
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {missing}; add them"
    assert "mdcvkit.export" in found  # the walk finds the sub-packages
