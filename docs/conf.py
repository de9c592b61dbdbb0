"""Sphinx configuration of the skflowsearch documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
from the repository root; the gallery executes every script in ``examples/``.
"""

import os
import sys

# The gallery runs the examples in this process. Their flows are small, and
# torch's intra-op threads only add synchronisation cost there; on a busy
# two-core machine two threads made examples up to 20 times slower than one.
# Set before torch is imported; an explicit OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Document the checkout this file belongs to, installed or not.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import skflowsearch  # noqa: E402

# -- Project -----------------------------------------------------------------

project = "skflowsearch"
author = "The skflowsearch developers"
copyright = "the skflowsearch developers"
release = skflowsearch.__version__
version = release

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []
default_role = "literal"

autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "inherited-members": True,
    # Their docstrings link to labels of scikit-learn's own documentation
    # (set_output is described in the user guide).
    "exclude-members": "get_metadata_routing,set_output",
}
autodoc_typehints = "none"

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_show_inherited_class_members = False

# -- Example gallery -----------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Execute every example (not only those named plot_*).
    "filename_pattern": r"\.py$",
    "ignore_pattern": r"__init__\.py",
    "image_scrapers": ("matplotlib",),
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
}


# -- HTML --------------------------------------------------------------------

try:
    import pydata_sphinx_theme  # noqa: F401
except ImportError:  # fall back to Sphinx's builtin theme
    html_theme = "alabaster"
    html_theme_options = {}
else:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_prev_next": False,
    }

html_title = f"skflowsearch {release}"
html_static_path = []
