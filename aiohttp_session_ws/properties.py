"""Session properties: which keys and values are valid, and the fixed keys.

Keys and values follow Diffusion's rules: fixed keys start with ``$`` and
are computed by the library; user keys are non-empty, case-sensitive, and
hold no whitespace, quote, parenthesis or comma; values are strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

SESSION_ID = "$SessionId"
CONNECTION_ID = "$ConnectionId"
PRINCIPAL = "$Principal"
ROLES = "$Roles"
CLIENT_IP = "$ClientIP"
NODE = "$Node"
START_TIME = "$StartTime"
TRANSPORT = "$Transport"

FIXED_KEYS = frozenset(
    {
        SESSION_ID,
        CONNECTION_ID,
        PRINCIPAL,
        ROLES,
        CLIENT_IP,
        NODE,
        START_TIME,
        TRANSPORT,
    }
)
"""The properties the library computes for every protocol connection."""

APP_SET_FIXED_KEYS = frozenset({PRINCIPAL, ROLES})
"""Fixed keys that ``properties_factory`` may set (an authenticator's)."""

MAX_KEY_LENGTH = 256
MAX_VALUE_LENGTH = 64 * 1024

_BAD_KEY = re.compile(r"[\s\"'(),\x00-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def check_user_key(key: object) -> str:
    """Return ``key`` if it is a valid user property key.

    :raises ValueError: it is not a non-empty string of at most
        :data:`MAX_KEY_LENGTH` characters without whitespace, control
        characters, quotes, parentheses, commas or lone surrogates, or it
        starts with ``$`` (fixed keys).
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"a property key must be a non-empty string, not {key!r}")
    if key.startswith("$"):
        raise ValueError(
            f"property key {key!r} starts with '$': those are fixed properties, "
            "computed by the library"
        )
    if len(key) > MAX_KEY_LENGTH or _BAD_KEY.search(key):
        raise ValueError(
            f"property key {key[:40]!r} is invalid: at most {MAX_KEY_LENGTH} "
            "characters, without whitespace, control characters, quotes, "
            "parentheses, commas or lone surrogates"
        )
    return key


def check_value(key: str, value: object) -> str:
    """Return ``value`` if it is a valid property value (a string).

    :raises ValueError: it is not a string of at most
        :data:`MAX_VALUE_LENGTH` characters, or holds a lone surrogate.
    """
    if not isinstance(value, str):
        raise ValueError(
            f"the value of property {key!r} must be a str, not {type(value).__name__}"
        )
    if len(value) > MAX_VALUE_LENGTH:
        raise ValueError(
            f"the value of property {key!r} is over {MAX_VALUE_LENGTH} characters"
        )
    if _SURROGATE.search(value):
        raise ValueError(
            f"the value of property {key!r} holds a lone surrogate: not Unicode text"
        )
    return value


def check_updates(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """Validate what ``set_session_properties`` got; ``None`` removes a key.

    :raises ValueError: a key or a value is invalid.
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"properties must be a mapping, not {type(values).__name__}")
    return {
        check_user_key(key): None if value is None else check_value(key, value)
        for key, value in values.items()
    }


def format_roles(roles: str | Iterable[str]) -> str:
    """The canonical ``$Roles`` value: the roles quoted, sorted, comma-separated.

    A string is taken as one role.

    :raises ValueError: a role is not a non-empty string without a quote.
    """
    items = [roles] if isinstance(roles, str) else list(roles)
    for role in items:
        if not isinstance(role, str) or not role or '"' in role:
            raise ValueError(
                f"a role must be a non-empty string without '\"': {role!r}"
            )
    return ",".join(f'"{role}"' for role in sorted(set(items)))


def check_factory_result(values: object) -> dict[str, str]:
    """Validate what ``properties_factory`` returned for a connection.

    User keys, plus ``$Principal`` (a string) and ``$Roles`` (a string, one
    role, or an iterable of roles).

    :raises ValueError: a key or a value is invalid.
    """
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ValueError(
            f"properties_factory must return a mapping, not {type(values).__name__}"
        )
    result: dict[str, str] = {}
    for key, value in values.items():
        if key == ROLES:
            result[key] = format_roles(value)
        elif key == PRINCIPAL:
            result[key] = check_value(key, value)
        else:
            result[check_user_key(key)] = check_value(key, value)
    return result
