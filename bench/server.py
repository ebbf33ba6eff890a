"""One benchmark server in its own OS process.

``python -m bench.server IMPL REDIS_URL PREFIX`` serves implementation IMPL
(ours, raw or socketio) on a free 127.0.0.1 port, prints ``READY <port>``
once it accepts connections, and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys

from aiohttp import web

IMPLEMENTATIONS = {
    "ours": "bench.impl_ours",
    "raw": "bench.impl_raw",
    "socketio": "bench.impl_socketio",
}


async def serve(impl: str, redis_url: str, prefix: str) -> None:
    """Serve until a termination signal arrives."""
    module = importlib.import_module(IMPLEMENTATIONS[impl])
    app: web.Application = module.build_app(redis_url, prefix)
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
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3]))
