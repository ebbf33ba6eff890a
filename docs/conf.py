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

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# furo scrolls wide code blocks instead of clipping them (alabaster clipped them)
html_theme = "furo"
html_title = f"aiohttp-session-ws {release}"
html_static_path: list[str] = []
