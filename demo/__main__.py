"""Run the demo: ``python -m demo [--host HOST] [--port PORT] [--redis URL]``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from .app import make_app
from .key import KEY_ENV_VAR, InvalidKeyError, load_key, random_key

Serve = Callable[[web.Application, str, int], None]
"""Runs an app on a host and port until it is stopped."""


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
        "several demo processes share sessions; unset, a random key is used.",
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


def serve_forever(app: web.Application, host: str, port: int) -> None:
    """Run ``app`` until Ctrl+C."""
    web.run_app(app, host=host, port=port)


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    serve: Serve = serve_forever,
) -> int:
    """Run the demo; return the exit status (2 when the key is not valid)."""
    args = parse_args(argv)
    try:
        key = load_key(os.environ if environ is None else environ)
    except InvalidKeyError as exc:
        print(f"python -m demo: error: {exc}", file=sys.stderr)
        return 2
    if key is None:
        print(
            f"{KEY_ENV_VAR} is not set: using a random key, "
            "so sessions end with this process",
            file=sys.stderr,
        )
        key = random_key()
    serve(make_app(key, redis_url=args.redis), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
