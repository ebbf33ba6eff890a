"""What a client operation asks for beyond its own session, and who decides.

The dispatcher asks the registry's ``authorize`` policy about every request
that reaches beyond the connection's own session; requests on the own
session are not asked about. See :doc:`/security`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

logger = logging.getLogger("aiohttp_session_ws")

VIEW_SESSION = "session_ws.view_session"
"""Permission to read another session's properties (op ``properties``), and
to receive a sender's properties with requests (op ``add_handler``)."""
REGISTER_HANDLER = "session_ws.register_handler"
"""Permission to handle requests sent to a path, or to one's own session
(op ``add_handler``)."""
SEND_TO_PATH = "session_ws.send_to_path"
"""Permission to send a request to a path's handler (op ``send_to_path``)."""
ACQUIRE_LOCK = "session_ws.acquire_lock"
"""Permission to take a session lock, and to see who holds it (ops
``lock`` and ``lock_info``; the lock's name is :attr:`Action.lock`)."""
REGISTER_EVENT = "session_ws.register_event"
"""Permission to register events of a type (op ``register_events``; the
type is :attr:`Action.event_type`, one action per type of the batch)."""
SUBSCRIBE_EVENTS = "session_ws.subscribe_events"
"""Permission to subscribe to and query events of a query type (ops
``subscribe``, ``query_latest``, ``query_timeseries``; one action per
query type, ``*`` when a query names none)."""
SEND_TO_SESSION = "session_ws.send_to_session"
"""Permission to send a request to another session, by handle or by filter
(ops ``send_to_session`` and ``send_to_filter``)."""


@dataclass(frozen=True, slots=True)
class Action:
    """A client request that reaches beyond its own session."""

    op: str
    """The op asked for."""
    permission: str
    """The permission name it needs (``session_ws.…``), as
    :func:`aiohttp_security_policy` asks aiohttp-security."""
    session: str | None = None
    """The public handle of the session it reaches, if it names one."""
    path: str | None = None
    """The message path it sends to or handles, if any."""
    filter: str | None = None
    """The session filter it sends to, if any (as the client wrote it)."""
    lock: str | None = None
    """The name of the session lock it takes or looks at, if any."""
    event_type: str | None = None
    """The event type (or query type, with ``?`` and ``*``) it registers,
    subscribes to or queries, written ``a/b/c``."""


Authorize = Callable[[web.Request, Action], "bool | Awaitable[bool]"]
"""A policy: may this request (the websocket's upgrade request) do ``action``?"""


def deny_all(request: web.Request, action: Action) -> bool:
    """The default policy: refuse every request that reaches beyond its session.

    What a connection does to its own session (ping, read its properties,
    receive pushes) is never asked about, so this allows exactly that.
    """
    return False


async def allowed(policy: Authorize, request: web.Request, action: Action) -> bool:
    """Ask ``policy`` (sync or async) about ``action``; a failing policy denies."""
    try:
        answer = policy(request, action)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception:
        logger.exception("The authorize policy failed; denied %s", action.op)
        return False
    return answer is True


def aiohttp_security_policy() -> Authorize:
    """A policy that asks aiohttp-security: ``permits(request, action.permission)``.

    The permission names are the ``session_ws.*`` constants of this module
    (the ``action`` is passed as the ``context``). Unlike ``permits`` itself,
    it denies when aiohttp-security is not set up on the application.
    Needs the ``security`` extra (``pip install aiohttp-session-ws[security]``).

    :raises ImportError: aiohttp-security is not installed.
    """
    try:
        import aiohttp_security
        from aiohttp_security.api import AUTZ_KEY, IDENTITY_KEY
    except ImportError as exc:
        raise ImportError(
            "aiohttp_security_policy() needs aiohttp-security: "
            "pip install aiohttp-session-ws[security]"
        ) from exc

    async def policy(request: web.Request, action: Action) -> bool:
        config = request.config_dict
        if config.get(IDENTITY_KEY) is None or config.get(AUTZ_KEY) is None:
            logger.warning(
                "aiohttp-security is not set up on this application: denied %s",
                action.op,
            )
            return False
        return bool(await aiohttp_security.permits(request, action.permission, action))

    return policy


async def principal_of(request: web.Request) -> str | None:
    """aiohttp-security's ``authorized_userid``, if it is installed and set up."""
    try:
        import aiohttp_security
    except ImportError:
        return None
    return await aiohttp_security.authorized_userid(request)
