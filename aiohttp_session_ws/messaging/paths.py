"""Message paths: which are valid, and the registered paths that serve one."""

from __future__ import annotations

import functools
import re

MAX_PATH_LENGTH = 256
"""Characters of a path at most."""
MAX_SEGMENTS = 32
"""Segments of a path at most."""

_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f\ud800-\udfff]")


def check_path(path: object) -> str:
    """Return ``path`` if it is a valid message path.

    A path is ``/``-separated segments (``chat/rooms/42``): non-empty, at
    most :data:`MAX_PATH_LENGTH` characters and :data:`MAX_SEGMENTS`
    segments, with no empty segment (so no leading, trailing or double
    ``/``), whitespace, control character or lone surrogate.

    :raises ValueError: it is not.
    """
    if type(path) is str:
        return _checked(path)
    return _check_path(path)


@functools.lru_cache(maxsize=4096)
def _checked(path: str) -> str:
    return _check_path(path)


def _check_path(path: object) -> str:
    """The checks of :func:`check_path` (not cached)."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"a message path must be a non-empty string, not {path!r:.60}")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(
            f"message path {path[:40]!r}… is over {MAX_PATH_LENGTH} characters"
        )
    if _BAD_CHAR.search(path):
        raise ValueError(
            f"message path {path[:40]!r} holds whitespace, a control character "
            "or a lone surrogate"
        )
    segments = path.split("/")
    if "" in segments:
        raise ValueError(
            f"message path {path[:40]!r} has an empty segment (a leading, "
            "trailing or double '/')"
        )
    if len(segments) > MAX_SEGMENTS:
        raise ValueError(f"message path {path[:40]!r} has over {MAX_SEGMENTS} segments")
    return path


@functools.lru_cache(maxsize=4096)
def prefixes(path: str) -> tuple[str, ...]:
    """The paths that can serve ``path``, most specific first.

    ``prefixes("a/b/c") == ("a/b/c", "a/b", "a")``: a handler registered for
    ``a/b`` serves every path below it that has no handler of its own.
    """
    found = [path]
    end = path.rfind("/")
    while end > 0:
        found.append(path[:end])
        end = path.rfind("/", 0, end)
    return tuple(found)


def best_match(path: str, registered: object) -> str | None:
    """The most specific path in ``registered`` (a container) serving ``path``."""
    for candidate in prefixes(path):
        if candidate in registered:  # type: ignore[operator]
            return candidate
    return None
