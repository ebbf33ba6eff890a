"""Run the demo: ``python -m demo [--host HOST] [--port PORT] [--redis URL]``."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from .app import make_app
from .key import KEY_ENV_VAR, MAKE_KEY_COMMAND, InvalidKeyError, load_key, random_key

Serve = Callable[[web.Application, str, int], None]
"""Runs an app on a host and port until it is stopped."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Time and logger name on every line: a Redis outage and its recovery both show."""

logger = logging.getLogger("demo")


def port_number(text: str) -> int:
    """Parse a TCP port, 0 to 65535 (0 picks a free one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The command line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Serve the aiohttp-session-ws demo: a page whose websockets "
        "close when the session resets or logs out.",
        epilog=f"{KEY_ENV_VAR}: the cookie key (32 bytes, urlsafe base64), so "
        "several demo processes share sessions; unset, a random key is used. "
        f"Make one with: {MAKE_KEY_COMMAND}",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (%(default)s)"
    )
    parser.add_argument(
        "--port", type=port_number, default=8080, help="port to listen on (%(default)s)"
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="join the cluster on this Redis (redis://127.0.0.1:6379); "
        "nodes with the same key share sessions and close each other's sockets",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is ``None``)."""
    return build_parser().parse_args(argv)


def configure_logging() -> None:
    """Log INFO and above to stderr (a no-op when logging is already set up)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def serve_forever(app: web.Application, host: str, port: int) -> None:
    """Run ``app`` until Ctrl+C."""
    web.run_app(app, host=host, port=port)


def listen_error(exc: OSError, host: str, port: int) -> str | None:
    """One line that explains why the demo cannot listen, or ``None``."""
    if exc.errno == errno.EADDRINUSE:
        return f"demo: port {port} is in use; pass --port or make demo PORT=..."
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
        reason = os.strerror(exc.errno).lower()
        return f"demo: cannot listen on {host} port {port}: {reason}"
    return None


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    serve: Serve = serve_forever,
) -> int:
    """Run the demo; return the exit status.

    It is 2 when the key is not valid, 1 when the demo cannot listen (the port
    is in use, say); each gets one line on stderr, not a traceback.
    """
    args = parse_args(argv)
    configure_logging()
    try:
        key = load_key(os.environ if environ is None else environ)
    except InvalidKeyError as exc:
        print(f"python -m demo: error: {exc}", file=sys.stderr)
        return 2
    if key is None:
        if args.redis is None:
            logger.info(
                "%s is not set: using a random key, so sessions end with this process",
                KEY_ENV_VAR,
            )
        else:
            logger.warning(
                "%s is not set: this node uses a random key, so no other node "
                "can read its session cookies and each node's cookie overwrites "
                "the other's; export one key to every node: "
                'export %s="$(%s)"',
                KEY_ENV_VAR,
                KEY_ENV_VAR,
                MAKE_KEY_COMMAND,
            )
        key = random_key()
    try:
        serve(make_app(key, redis_url=args.redis), args.host, args.port)
    except OSError as exc:
        message = listen_error(exc, args.host, args.port)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
