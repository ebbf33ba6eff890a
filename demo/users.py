"""The demo's users: a fixed list of names and their roles, no passwords."""

from __future__ import annotations

from collections.abc import Mapping

USERS: Mapping[str, tuple[str, ...]] = {
    "alice": ("admin", "user"),
    "bob": ("user",),
    "carol": ("user",),
}
"""The demo's users and their roles: ``POST /login`` takes one of the names."""

USER_KEY = "demo_user"
"""The session key that holds the logged-in user's name."""
