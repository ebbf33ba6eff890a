"""One cluster node in its own OS process, for the tests.

``python -m tests.cluster_node URL PREFIX NODE_TTL [GRACE]`` serves the tests'
app (an echo websocket at /ws, the protocol at /live, /logout) on a free
127.0.0.1 port with a Redis registry, prints ``READY <port> <node id>`` once
it has joined the cluster, then ``START <handle>`` and ``END <handle>`` for
each session start and end it reports, and runs until it is killed.

Its policy allows every client action (``wire.allow_all``), and it has two
server request handlers, registered before ``READY``: ``node/echo`` answers
with the request's value, ``node/slow`` prints ``SLOW <value as JSON>`` and
never answers (a request in flight on this node, for the fault tests).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from aiohttp_session_ws import RedisSessionWSRegistry
from aiohttp_session_ws.messaging import RequestContext

from .apps import build_app, logout
from .wire import allow_all


def echo(value: Any, context: RequestContext) -> Any:
    """``node/echo``: the response is the request."""
    return value


async def slow(value: Any, context: RequestContext) -> Any:
    """``node/slow``: say the request came, then never answer."""
    print("SLOW", json.dumps(value), flush=True)
    await asyncio.Event().wait()


async def serve(url: str, prefix: str, node_ttl: float, grace: float) -> None:
    """Run the node until cancelled or killed."""
    registry = RedisSessionWSRegistry(
        url,
        prefix=prefix,
        node_ttl=node_ttl,
        reconnect_max_delay=0.5,
        grace_period=grace,
        authorize=allow_all,
    )

    def report(what: str) -> Callable[[Any], None]:
        def say(session_ws_id: Any) -> None:
            print(what, registry.public_handle(session_ws_id), flush=True)

        return say

    registry.on_session_start.append(report("START"))
    registry.on_session_end.append(report("END"))
    app = build_app(registry, routes=[web.get("/logout", logout)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await registry.messaging.add_request_handler("node/echo", echo)
    await registry.messaging.add_request_handler("node/slow", slow)
    print("READY", port, registry.node_id, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    grace = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
    asyncio.run(serve(sys.argv[1], sys.argv[2], float(sys.argv[3]), grace))
