"""The messaging ops of the protocol (see :doc:`/protocol` and :doc:`/messaging`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..authorization import (
    REGISTER_HANDLER,
    SEND_TO_PATH,
    SEND_TO_SESSION,
    VIEW_SESSION,
    Action,
)
from ..peers import Peer
from ..protocol import (
    Arg,
    ErrorCode,
    FollowUp,
    Op,
    ProtocolError,
    ProtocolLimits,
    Request,
    encode,
)
from .responses import FilterResponses
from .service import DEFAULT_TIMEOUT, Messaging

logger = logging.getLogger("aiohttp_session_ws.messaging")


def messaging_ops(
    messaging: Messaging, limits: Callable[[], ProtocolLimits]
) -> list[Op[Peer]]:
    """The messaging ops, for the registry's op table.

    They are ``add_handler``, ``remove_handler``, ``send_to_path``,
    ``send_to_session`` and ``send_to_filter``, and the ``answer`` frame
    (not a request: no id, no reply).

    ``limits`` gives the connections' limits: ``request_timeout`` caps a
    request's timeout, ``max_handlers`` the registrations of a connection.
    """

    def timeout_of(request: Request) -> float:
        timeout = request.args.get("timeout", DEFAULT_TIMEOUT)
        if not timeout > 0:
            raise ProtocolError(ErrorCode.BAD_FRAME, "timeout must be positive")
        return float(min(timeout, limits().request_timeout))

    async def add_handler(peer: Peer, request: Request) -> dict[str, Any]:
        args = request.args
        properties = args.get("properties", [])
        if not all(isinstance(p, str) and p for p in properties):
            raise ProtocolError(
                ErrorCode.BAD_FRAME, "properties must be non-empty strings"
            )
        most = limits().max_handlers
        if messaging.handlers_of(peer) >= most:
            raise ProtocolError(
                ErrorCode.LIMIT, f"this connection has {most} handlers already"
            )
        with _bad_path:
            messaging.add_connection_handler(
                peer, args["path"], bool(args.get("addressed", False)), properties
            )
        await messaging.flush()
        return {}

    def add_handler_action(peer: Peer, request: Request) -> list[Action]:
        path = request.args.get("path")
        actions = [Action("add_handler", REGISTER_HANDLER, path=path)]
        if request.args.get("properties"):
            actions.append(Action("add_handler", VIEW_SESSION, path=path))
        return actions

    async def remove_handler(peer: Peer, request: Request) -> dict[str, Any]:
        args = request.args
        removed = messaging.remove_connection_handler(
            peer, args["path"], bool(args.get("addressed", False))
        )
        await messaging.flush()  # the other nodes no longer route to it
        return {"removed": removed}

    async def send_to_path(peer: Peer, request: Request) -> Any:
        args = request.args
        with _bad_path:
            return await messaging.send_to_path(
                args["path"], args.get("data"), timeout_of(request), peer
            )

    async def send_to_session(peer: Peer, request: Request) -> Any:
        args = request.args
        with _bad_path:
            return await messaging.send_to_session(
                args["path"],
                args["session"],
                args.get("data"),
                timeout_of(request),
                peer,
            )

    async def send_to_filter(peer: Peer, request: Request) -> FollowUp[Peer]:
        args = request.args
        with _bad_path:
            responses = await messaging.send_to_filter(
                args["filter"],
                args["path"],
                args.get("data"),
                timeout_of(request),
                peer,
            )

        async def forward(connection: Peer) -> None:
            await _forward(connection, request.id, responses)

        return FollowUp({"expected": responses.expected}, forward)

    async def answer(peer: Peer, request: Request) -> None:
        args = request.args
        messaging.answer(
            peer, args["conversation"], args.get("data"), args.get("error")
        )

    data = Arg("any")
    timeout = Arg("number")
    return [
        Op(
            "add_handler",
            add_handler,
            {
                "path": Arg("str", required=True),
                "addressed": Arg("bool"),
                "properties": Arg("array"),
            },
            add_handler_action,
        ),
        Op(
            "remove_handler",
            remove_handler,
            {"path": Arg("str", required=True), "addressed": Arg("bool")},
        ),
        Op(
            "send_to_path",
            send_to_path,
            {"path": Arg("str", required=True), "data": data, "timeout": timeout},
            lambda peer, r: Action("send_to_path", SEND_TO_PATH, path=r.args["path"]),
        ),
        Op(
            "send_to_session",
            send_to_session,
            {
                "path": Arg("str", required=True),
                "session": Arg("str", required=True),
                "data": data,
                "timeout": timeout,
            },
            lambda peer, r: Action(
                "send_to_session",
                SEND_TO_SESSION,
                session=r.args["session"],
                path=r.args["path"],
            ),
        ),
        Op(
            "send_to_filter",
            send_to_filter,
            {
                "filter": Arg("str", required=True),
                "path": Arg("str", required=True),
                "data": data,
                "timeout": timeout,
            },
            lambda peer, r: Action(
                "send_to_filter",
                SEND_TO_SESSION,
                path=r.args["path"],
                filter=r.args["filter"],
            ),
        ),
        Op(
            "answer",
            answer,
            {
                "conversation": Arg("int", required=True),
                "data": data,
                "error": Arg("str"),
            },
            reply=False,
        ),
    ]


class _BadPath:
    """Turn an invalid path (``ValueError``) into a ``bad_frame`` error.

    A class, not ``contextlib.contextmanager``: it runs on every request.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, ValueError):
            raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None


_bad_path = _BadPath()


async def _forward(peer: Peer, request_id: int, responses: FilterResponses) -> None:
    """Send a filter send's responses to its client, then the end."""
    async for response in responses:
        frame: dict[str, Any] = {
            "op": "response",
            "request": request_id,
            "session": response.session,
        }
        if response.error is None:
            frame["data"] = response.value
        else:
            frame["error"] = {
                "code": str(response.error.code),
                "message": response.error.message,
            }
        try:
            encoded = encode(frame)
        except (TypeError, ValueError):
            logger.error("A filter response is not JSON-able; sent as an error")
            frame.pop("data", None)
            frame["error"] = {"code": "rejected", "message": "the handler failed"}
            encoded = encode(frame)
        if not await peer.send(encoded):
            return
    await peer.send(
        encode(
            {
                "op": "response",
                "request": request_id,
                "done": True,
                "unanswered": sorted(responses.unanswered),
            }
        )
    )
