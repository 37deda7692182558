# Sphinx configuration for lorrygate's documentation: `make docs` builds it
# into build/docs with warnings as errors.
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from lorrygate import __version__  # noqa: E402

project = "lorrygate"
author = "The lorrygate developers"
copyright = "2026, the lorrygate developers"
release = version = __version__
extensions = []
exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
html_static_path = []
highlight_language = "none"
