"""The demo's cookie key: from the environment, or a fresh random one.

``python -m demo.key`` prints a new key, ready for the environment variable.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Mapping

KEY_ENV_VAR = "AIOHTTP_SESSION_WS_DEMO_KEY"
"""The environment variable that holds the key, so several demos share sessions."""

KEY_SIZE = 32
"""The size of a key in bytes; it is written as 44 characters of urlsafe base64."""

MAKE_KEY_COMMAND = ".venv/bin/python -m demo.key"
"""A shell command, run in the checkout after ``make demo``, that prints a valid key."""


class InvalidKeyError(ValueError):
    """The key in the environment is not 32 bytes of urlsafe base64."""


def load_key(environ: Mapping[str, str]) -> bytes | None:
    """Return the key in ``environ``, or ``None`` when the variable is not set.

    :raises InvalidKeyError: the variable is set but holds no valid key; the
        message says how to make one (and never repeats the value).
    """
    value = environ.get(KEY_ENV_VAR)
    if value is None:
        return None
    try:
        key = base64.b64decode(value.strip(), altchars=b"-_", validate=True)
    except ValueError:  # binascii.Error, or characters that are not ASCII
        key = b""
    if len(key) != KEY_SIZE:
        raise InvalidKeyError(
            f"{KEY_ENV_VAR} must be a key of {KEY_SIZE} bytes in urlsafe base64 "
            f"(44 characters); make one with:\n    {MAKE_KEY_COMMAND}\n"
            f"or unset {KEY_ENV_VAR} to use a random key"
        )
    return key


def random_key() -> bytes:
    """Return a fresh random key; sessions made with it end with the process."""
    return os.urandom(KEY_SIZE)


def encode_key(key: bytes) -> str:
    """Write ``key`` as the environment variable holds it (urlsafe base64)."""
    return base64.urlsafe_b64encode(key).decode()


def main() -> int:
    """Print a fresh key, for ``export AIOHTTP_SESSION_WS_DEMO_KEY=...``."""
    print(encode_key(random_key()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
