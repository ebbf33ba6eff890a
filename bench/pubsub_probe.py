"""A Redis subscriber in its own process, for the push-latency scenario.

``python -m bench.pubsub_probe REDIS_URL CHANNEL`` subscribes to CHANNEL,
prints ``READY``, then publishes each message it gets back on
``CHANNEL:back``, until stdin closes or SIGTERM. The load client publishes
and waits for the echo: a Redis pub/sub round trip between two processes, as
between two nodes (two hops through Redis, and each process woken once).
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as redis


async def probe(url: str, channel: str) -> None:
    """Subscribe, say READY, and report every message's arrival."""
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)  # before listen(): it returns at once otherwise
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    ended = asyncio.create_task(reader.read())  # stdin closed: the parent is done

    async def report() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                await client.publish(f"{channel}:back", message["data"])

    reporting = asyncio.create_task(report())
    try:
        await asyncio.wait([ended, reporting], return_when=asyncio.FIRST_COMPLETED)
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(probe(sys.argv[1], sys.argv[2]))
