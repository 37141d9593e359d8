"""The documentation site builds, its API reference lists every public name, the tutorials render, and
docstrings stay short (narrative belongs in docs/guide, measured results in docs/findings)."""

import importlib
import importlib.util
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mdcvkit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MAX_DOCSTRING_LINES = 80

def _docs_conf():
    spec = importlib.util.spec_from_file_location("mdcvkit_docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site once, as `make docs` does but collecting the warnings instead of stopping."""
    pytest.importorskip("myst_nb", reason='the docs extra is missing: pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("docs")
    warnings_file = out / "warnings.txt"
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-q", "--keep-going", "-w", str(warnings_file),
         "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = warnings_file.read_text() if warnings_file.exists() else ""
    # one entry per warning: a line that names its level, with the lines that continue it
    warnings = re.split(r"\n(?=\S[^\n]*?(?:WARNING|ERROR|CRITICAL|SEVERE):)", text.strip()) if text.strip() else []
    return out / "html", warnings


@pytest.mark.slow
def test_site_builds_without_any_warning(site):
    """What `make docs` (-W) asks: a page or docstring that does not render is an error."""
    _, warnings = site
    assert not warnings, "the documentation build warns:\n" + "\n".join(warnings)


@pytest.mark.slow
def test_api_reference_lists_every_public_name(site):
    html, _ = site
    for module in _docs_conf().public_modules():
        page = (html / "api" / f"{module.__name__}.html").read_text()
        missing = [name for name in module.__all__ if not name.startswith("_") and name not in page]
        assert not missing, f"the API page of {module.__name__} lacks {missing}"


@pytest.mark.slow
def test_every_tutorial_renders_with_its_outputs(site):
    import nbformat

    html, _ = site
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        page = html / "tutorials" / f"{notebook.stem}.html"
        assert page.exists(), f"{notebook.name} is not rendered"
        cells = nbformat.read(notebook, as_version=4).cells
        n_images = sum("image/png" in output.get("data", {}) for cell in cells for output in cell.get("outputs", []))
        assert page.read_text().count("<img") >= n_images, f"{page.name} lacks the figures stored in {notebook.name}"


def _docstrings():
    """(qualified name, number of lines) of every docstring defined in the package."""
    rows = {}
    for info in pkgutil.walk_packages(mdcvkit.__path__, "mdcvkit."):
        module = importlib.import_module(info.name)
        rows[module.__name__] = module.__doc__
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                rows[f"{module.__name__}.{name}"] = obj.__doc__
            if inspect.isclass(obj):
                for member_name, member in vars(obj).items():
                    member = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                    if inspect.isfunction(member):
                        rows[f"{module.__name__}.{name}.{member_name}"] = member.__doc__
    return {name: doc.count("\n") + 1 for name, doc in rows.items() if doc}  # source lines, quotes included


def test_no_docstring_is_longer_than_80_lines():
    """Docstrings keep what a caller needs; narrative goes to docs/guide, measured results to docs/findings."""
    lengths = _docstrings()
    too_long = {name: n for name, n in lengths.items() if n > MAX_DOCSTRING_LINES}
    assert not too_long, (
        f"docstrings longer than {MAX_DOCSTRING_LINES} lines: {too_long}; keep what a caller needs and move "
        "narrative to docs/guide and measured results to docs/findings"
    )
