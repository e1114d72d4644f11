"""Sphinx configuration of the djthreads documentation (``make docs``).

Pages are Markdown (MyST). ``make docs`` builds them twice, both times with
warnings as errors: ``-b html`` for the site and ``-b doctest``, which runs the
tutorial's and how-to guides' code against the example site in ``_examples``
(a fresh SQLite file database per run, set up by ``docsite.setup()``).
"""

from __future__ import annotations

import sys
from importlib.metadata import version as installed_version
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_examples"), str(DOCS / "_ext")]

project = "djthreads"
author = "djthreads developers"
copyright = "djthreads developers"
release = installed_version("djthreads")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "djthreads_docs",  # _ext/djthreads_docs.py: the generated benchmark tables and chart
]
source_suffix = {".md": "markdown"}
# _parts holds fragments other pages include; _examples the code they show.
exclude_patterns = ["_build", "_parts", "_examples", "_generated"]

myst_enable_extensions = ["colon_fence", "deflist", "substitution"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"djthreads {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
python_use_unqualified_type_names = True
autodoc_default_options = {"members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# The examples run in the sphinx-build process: Django is set up once per run.
doctest_global_setup = "import docsite\ndocsite.setup()"
doctest_test_doctest_blocks = ""

# No intersphinx (the build has no network): names from the standard library,
# Django and pytest in signatures cannot be linked, and -n must not fail on them.
nitpick_ignore_regex = [
    (r"py:.*", r"(builtins|collections|concurrent|contextlib|contextvars|datetime)\..*"),
    (r"py:.*", r"(multiprocessing|threading|types|typing|unittest)\..*"),
    (r"py:.*", r"(django|django_tasks|pytest|_pytest)\..*"),
    # The type variables of generic signatures (ParamSpec P, TypeVars R and T).
    (r"py:.*", r"(djthreads\.[\w.]+\.)?(P|R|T)(\.args|\.kwargs)?"),
    # The Tasks framework's types, aliased by djthreads._tasks_compat for both Django lines.
    (r"py:.*", r"Any(Task|TaskResult|TaskContext)"),
    # run_async(on_commit=..., using=...)'s return type: a typing Protocol, private.
    (r"py:class", r"djthreads\.decorators\._Decorator"),
]
