"""What the push scenarios share between the servers and the load client.

The push service is new: until the library has it (``session_ws_endpoint`` and
``send_to_session``), our server says so on ``GET /bench/features`` and the
push scenarios are skipped with that reason.

Timestamps cross processes: :func:`time.perf_counter` is ``CLOCK_MONOTONIC`` on
Linux, one clock for every process of the machine, so a server's ``at`` and the
client's arrival time can be subtracted.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

SUBPROTOCOL = "aiohttp-session-ws.v1"
PROTOCOL_PATH = "/live"
PUSH_PREFIX = '{"op":"push"'
"""How a compact push frame starts; others are parsed to be sure."""


def is_push(data: str) -> bool:
    """Whether a text frame of the protocol is a push (not hello, result...)."""
    if data.startswith(PUSH_PREFIX):
        return True
    try:
        frame = json.loads(data)
    except ValueError:
        return False
    return isinstance(frame, dict) and frame.get("op") == "push"


def push_frame(payload: object) -> str:
    """The push frame the floor sends: what the protocol's push looks like."""
    return json.dumps({"op": "push", "data": payload}, separators=(",", ":"))


def clock() -> float:
    """The clock that server and client timestamps share."""
    return time.perf_counter()


def push_request(request: web.Request) -> tuple[int, str, str | None, bool]:
    """Rounds, payload, session (or None) and ``remote`` of a push request.

    ``POST /bench/push?session=S&m=M&payload=P&remote=1`` pushes to one
    session; ``POST /bench/pushfan?m=M`` to every session of the node.
    ``remote=1`` asks the floors to reach the other nodes too.
    """
    rounds = int(request.query.get("m", "1"))
    payload = request.query.get("payload", "x" * 32)
    if len(payload) > 1024 or not 1 <= rounds <= 100_000:
        raise web.HTTPBadRequest(text="m must be in 1..100000 and the payload small")
    remote = request.query.get("remote") == "1"
    return rounds, payload, request.query.get("session"), remote


def push_reply(sent: int, at: float) -> web.Response:
    """``{"sent": n, "at": t}``: deliveries counted, and when the first send began."""
    body: dict[str, Any] = {"sent": sent, "at": at}
    return web.json_response(body)
