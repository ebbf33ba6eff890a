"""One benchmark server in its own OS process.

``python -m bench.server IMPL REDIS_URL PREFIX`` serves implementation IMPL
(ours, raw, socketio, or bare: a websocket without sessions) on a free
127.0.0.1 port, prints ``READY <port>`` once it accepts connections, and runs
until SIGTERM or SIGINT.

With ``BENCH_LIB_PATH=DIR`` in the environment it imports ``aiohttp_session_ws``
from DIR (a copy of the package, such as a prototype under ``/tmp``) instead of
the work tree; ``python -m bench --lib DIR`` sets it for every server.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys

from aiohttp import web

IMPLEMENTATIONS = {
    "bare": "bench.impl_bare",
    "ours": "bench.impl_ours",
    "raw": "bench.impl_raw",
    "socketio": "bench.impl_socketio",
}


LIB_PATH_VARIABLE = "BENCH_LIB_PATH"


def use_library_copy() -> None:
    """Put ``$BENCH_LIB_PATH`` first on ``sys.path``, before the work tree."""
    path = os.environ.get(LIB_PATH_VARIABLE)
    if path:
        sys.path.insert(0, path)


async def serve(impl: str, redis_url: str, prefix: str) -> None:
    """Serve until a termination signal arrives."""
    module = importlib.import_module(IMPLEMENTATIONS[impl])
    await serve_app(module.build_app(redis_url, prefix))


async def serve_app(app: web.Application) -> None:
    """Serve ``app`` on a free loopback port until a termination signal arrives."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("READY", runner.addresses[0][1], flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    use_library_copy()
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3]))
