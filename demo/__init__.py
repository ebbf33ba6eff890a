"""A small app that shows session-bound websockets: run it with ``python -m demo``."""

from .app import make_app

__all__ = ["make_app"]
