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

#: Docstrings that do not render yet, found when the site was first built: {pattern of the warning: what is
#: wrong}. The build may not warn about anything else; remove an entry once its docstring is fixed.
KNOWN_DOCSTRING_PROBLEMS = {
    r"docstring of mdcvkit\.msm\.ck\.ck_test": "cites [1]_ and [3]_, defined only in the mdcvkit.msm docstring",
    r"docstring of mdcvkit\.msm\.timescales\.implied_timescales": "cites [1]_ and [2]_, defined only in mdcvkit.msm",
    r"docstring of mdcvkit\.msm:": "footnotes [1]-[4] that its own text never cites",
    r"docstring of mdcvkit\.repair\.geometry\.bond_geometry": "|length − target| reads as an rst substitution",
    r"docstring of mdcvkit\.repair\.geometry\.bonded_terms": "|normalised signed volume| reads as a substitution",
    r"docstring of mdcvkit\.biasing\.czar\.integrate_gradient": "*grid.shape in a type starts rst emphasis",
    # the summary line of collective_variables ends inside ``{prefix}0 ... {prefix}{n_cv-1}`` (the "." ends it)
    r"api/mdcvkit\.export\.rst:\d+:<autosummary>:1: WARNING: Inline literal": "mdcvkit.export (new, in progress)",
}

#: Docstrings longer than MAX_DOCSTRING_LINES when the limit was set, with their length then: they may
#: shrink, not grow. Remove an entry once it is within the limit.
KNOWN_LONG_DOCSTRINGS = {
    "mdcvkit.ensembles.compare_ensembles": 196,
    "mdcvkit.repair.core.BondGeometryRepair": 82,
}


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


def _known(warning):
    return any(re.search(pattern, warning) for pattern in KNOWN_DOCSTRING_PROBLEMS)


@pytest.mark.slow
def test_site_builds_without_new_warnings(site):
    """A page or docstring that does not render is an error; only the listed known problems are left."""
    _, warnings = site
    new = [w for w in warnings if not _known(w)]
    assert not new, "the documentation build warns:\n" + "\n".join(new)


@pytest.mark.xfail(strict=False, reason="docstrings of mdcvkit.msm, mdcvkit.repair.geometry, mdcvkit.biasing.czar "
                   "and mdcvkit.export do not render yet: see KNOWN_DOCSTRING_PROBLEMS")  # fmt: skip
@pytest.mark.slow
def test_site_builds_without_any_warning(site):
    """What `make docs` (-W) asks: no warning at all."""
    _, warnings = site
    assert not warnings, "\n".join(warnings)


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
    return {name: len(inspect.cleandoc(doc).splitlines()) for name, doc in rows.items() if doc}


def test_no_docstring_grows_past_the_limit():
    """No docstring beyond the known long ones exceeds the limit, and the known ones do not grow."""
    lengths = _docstrings()
    too_long = {name: n for name, n in lengths.items()
                if n > max(MAX_DOCSTRING_LINES, KNOWN_LONG_DOCSTRINGS.get(name, 0))}  # fmt: skip
    assert not too_long, (
        f"docstrings longer than {MAX_DOCSTRING_LINES} lines: {too_long}; keep what a caller needs and move "
        "narrative to docs/guide and measured results to docs/findings"
    )


@pytest.mark.xfail(strict=False, reason="compare_ensembles (196 lines) and BondGeometryRepair "
                   "(82) are still longer than 80 lines: see KNOWN_LONG_DOCSTRINGS")  # fmt: skip
def test_longest_docstring_is_at_most_80_lines():
    lengths = _docstrings()
    longest = max(lengths, key=lengths.get)
    assert lengths[longest] <= MAX_DOCSTRING_LINES, f"{longest}: {lengths[longest]} lines"
