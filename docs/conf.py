"""Sphinx configuration for aiohttp-session-ws."""

from __future__ import annotations

import sys
from pathlib import Path

# Import the package from this checkout even without ``pip install -e``.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp_session_ws

project = "aiohttp-session-ws"
author = "aiohttp-session-ws contributors"
copyright = "aiohttp-session-ws contributors"
release = aiohttp_session_ws.__version__
version = release

# Only extensions that ship with Sphinx and need no network (no intersphinx).
extensions = ["sphinx.ext.autodoc"]

source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "benchmarks/results.rst"]  # included, not a page
templates_path: list[str] = []

highlight_language = "python3"
pygments_style = "sphinx"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_theme_options = {
    "description": "Session-bound websockets for aiohttp",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
