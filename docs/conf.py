"""Sphinx configuration of the mdcvkit documentation.

The API reference is generated at build time from each public module's ``__all__`` (see
``_write_api_pages``), so it follows the code; the tutorials are the notebooks of ``tutorials/``,
rendered from their stored outputs and never executed here (the test suite executes them).
"""

import importlib
import types
from pathlib import Path

import mdcvkit

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

project = "mdcvkit"
author = "mdcvkit developers"
copyright = "mdcvkit developers, LGPL-3.0-or-later"  # noqa: A001 (Sphinx's name)
release = mdcvkit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_theme = "furo"
html_title = f"mdcvkit {release}"

# numpydoc-style docstrings through napoleon
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "none"  # the docstrings state types, shapes and units
autodoc_mock_imports = ["openmmtorch", "mdaencore"]  # optional extras

# tutorials: rendered from the outputs stored in the notebooks
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# "more than one target found": shape names such as n_features in docstring type fields match
# attributes of several classes; they are words of a shape, not references
suppress_warnings = ["mystnb.unknown_mime_type", "ref.python"]


def public_modules():
    """The public modules of mdcvkit: the package itself and every module named in its ``__all__``."""
    modules = [mdcvkit]
    for name in mdcvkit.__all__:
        obj = getattr(mdcvkit, name)
        if isinstance(obj, types.ModuleType):
            modules.append(obj)
    return modules


def _object_kind(obj):
    if isinstance(obj, type):
        return "class"
    if isinstance(obj, types.ModuleType):
        return "module"
    if callable(obj):
        return "function"
    return "data"


def _write_if_changed(path, text):
    """Write ``text`` to ``path`` unless it holds it already (keeps incremental builds incremental)."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _homes(modules):
    """Where each re-exported class or function is documented: the last public module listing it
    (a subpackage rather than the top level), so that an object gets one page and one anchor."""
    homes = {}
    for module in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            if _object_kind(obj) in ("class", "function"):
                homes[id(obj)] = f"{module.__name__}.{name}"
    return homes


def _write_api_pages(app, config):
    """Write ``api/<module>.rst``: one autosummary table per public module, from its ``__all__``."""
    api = DOCS / "api"
    (api / "generated").mkdir(parents=True, exist_ok=True)
    modules = [importlib.import_module(m.__name__) for m in public_modules()]
    homes = _homes(modules)
    entries = []
    for module in modules:
        names = [n for n in module.__all__ if not n.startswith("_")]
        groups = {"class": [], "function": [], "data": []}
        elsewhere = []
        for name in names:
            obj = getattr(module, name)
            kind = _object_kind(obj)
            if kind == "module":
                continue
            home = homes.get(id(obj), f"{module.__name__}.{name}")
            if home != f"{module.__name__}.{name}":
                elsewhere.append((name, kind, home))
            else:
                groups[kind].append(name)
        title = f"``{module.__name__}``"
        lines = [title, "=" * len(title), "", f".. automodule:: {module.__name__}", "   :no-members:", ""]
        lines += [f".. currentmodule:: {module.__name__}", ""]
        if elsewhere:
            lines += ["Also exported here", "------------------", ""]
            role = {"class": "class", "function": "func"}
            lines += [f"- ``{module.__name__}.{name}``: :{role[kind]}:`{home}`" for name, kind, home in elsewhere]
            lines += [""]
        for kind, heading in (("class", "Classes"), ("function", "Functions"), ("data", "Constants")):
            if not groups[kind]:
                continue
            lines += [heading, "-" * len(heading), "", ".. autosummary::", "   :toctree: generated",
                      "   :nosignatures:", f"   :template: {kind}.rst", ""]
            lines += [f"   {name}" for name in groups[kind]] + [""]
        _write_if_changed(api / f"{module.__name__}.rst", "\n".join(lines))
        entries.append(module.__name__)
    index = ["API reference", "=============", "",
             "Every public name of mdcvkit, generated from each module's ``__all__``.", "",
             ".. toctree::", "   :maxdepth: 1", ""] + [f"   {name}" for name in entries]
    _write_if_changed(api / "index.rst", "\n".join(index) + "\n")
    for stale in set(api.glob("mdcvkit*.rst")) - {api / f"{name}.rst" for name in entries}:
        stale.unlink()


def _copy_tutorials(app, config):
    """Copy the notebooks of ``tutorials/`` (with their stored outputs) into ``tutorials/`` here."""
    target = DOCS / "tutorials"
    target.mkdir(exist_ok=True)
    sources = sorted((ROOT / "tutorials").glob("*.ipynb"))
    for old in set(target.glob("*.ipynb")) - {target / s.name for s in sources}:
        old.unlink()
    for notebook in sources:
        _write_if_changed(target / notebook.name, notebook.read_text())


def _describe_undocumented_data(app, what, name, obj, options, lines):
    """A constant without a ``#:`` comment would show its type's docstring (``dict()`` ...):
    describe it by its type and keys instead."""
    if what != "data" or not lines or not type(obj).__doc__:
        return
    if lines[0].strip() != type(obj).__doc__.strip().splitlines()[0].strip():
        return
    lines.clear()
    if isinstance(obj, dict):
        keys = ", ".join(f"``{key!r}``" for key in obj)
        lines.append(f"A ``dict`` with the keys {keys}.")
    else:
        lines.append(f"A ``{type(obj).__name__}``.")


def setup(app):
    app.connect("autodoc-process-docstring", _describe_undocumented_data)
    # at config-inited, before Sphinx lists the source files that autosummary then reads
    app.connect("config-inited", _write_api_pages)
    app.connect("config-inited", _copy_tutorials)
