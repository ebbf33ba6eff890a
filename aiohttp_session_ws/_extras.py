"""Install hints for the optional dependencies (extras), shared by their guards."""

from __future__ import annotations

REDIS_INSTALL_HINT = (
    "pip install 'aiohttp-session-ws[redis]' "
    "(or, in a checkout of this project, pip install -e '.[redis]')"
)
"""How to install redis-py, from a release or from a checkout."""


def redis_missing(what: str) -> ModuleNotFoundError:
    """The error to raise when ``what`` is imported without redis-py."""
    message = f"{what} needs redis-py: {REDIS_INSTALL_HINT}"
    return ModuleNotFoundError(message, name="redis")
