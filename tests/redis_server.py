"""A real redis-server on a free loopback port; tests can stop, restart and kill it."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

READY_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process; it keeps its port across restarts, no data."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH; `make test` installs it "
                "(apt-get install redis-server)"
            )
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.directory = tempfile.mkdtemp(prefix="aiohttp-session-ws-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait (bounded) until it accepts connections."""
        assert self.process is None, "already running"
        options = {"port": str(self.port), "bind": "127.0.0.1", "save": ""}
        options |= {"appendonly": "no", "logfile": "", "dir": self.directory}
        argv = [self.binary]
        for name, value in options.items():
            argv += [f"--{name}", value]
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
        )
        self._wait_ready(self.process)

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        seen = b""
        while b"Ready to accept connections" not in seen:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([process.stdout], [], [], max(left, 0))
            chunk = os.read(process.stdout.fileno(), 65536) if readable else b""
            if not chunk:
                process.kill()
                process.wait()
                process.stdout.close()
                self.process = None
                raise RuntimeError(f"redis-server did not start: {seen[-2000:]!r}")
            seen += chunk
        # redis-server logs a few lines per start and stop: the pipe holds them

    def stop(self) -> None:
        """Shut the server down (SIGTERM) and wait for it to exit."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server (SIGKILL), as a crash would."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        """Stop the server, then start it again on the same port, empty."""
        self.stop()
        self.start()

    def _end(self, how: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(how)
        process.wait(timeout=READY_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()

    def cleanup(self) -> None:
        """Kill the server if it runs and remove its directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
