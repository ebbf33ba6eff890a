"""Importing the package: the optional Redis names without redis-py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aiohttp_session_ws._extras import REDIS_INSTALL_HINT


@pytest.mark.parametrize(
    ("statement", "who"),
    [
        (
            "from aiohttp_session_ws import RedisSessionWSRegistry",
            "RedisSessionWSRegistry",
        ),
        ("import aiohttp_session_ws.redis_registry", "RedisSessionWSRegistry"),
        ("from aiohttp_session_ws import RedisBackend", "The Redis backend"),
        ("import aiohttp_session_ws.backends.redis", "The Redis backend"),
    ],
)
def test_the_redis_names_without_redis_py_say_what_to_install(
    statement: str, who: str
) -> None:
    script = (
        "import sys; sys.modules['redis'] = None\n"
        "import aiohttp_session_ws as m\n"
        "assert m.SessionWSRegistry\n"
        "try:\n"
        f"    {statement}\n"
        "except ModuleNotFoundError as exc:\n"
        "    assert exc.name == 'redis', exc.name\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"{who} needs redis-py: {REDIS_INSTALL_HINT}")
    assert "pip install 'aiohttp-session-ws[redis]'" in REDIS_INSTALL_HINT
    assert "pip install -e '.[redis]'" in REDIS_INSTALL_HINT
