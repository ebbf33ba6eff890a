"""A real redis-server on a free loopback port; tests can stop, restart and kill it."""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

READY_TIMEOUT = 10.0


_PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when ``parent`` dies (Linux only).

    A test run or benchmark that is killed then leaves no server behind. Linux
    sends the signal when the *thread* that started the child ends, so start
    children from the main thread. ``prctl`` is looked up beforehand, so the
    child only makes the call; if the parent died before it, the child exits.
    """

    def arm() -> None:
        if _PRCTL is None:
            return
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process; it keeps its port across restarts, no data."""

    def __init__(
        self, port: int | None = None, config: dict[str, str] | None = None
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH; `make test` installs it "
                "(apt-get install redis-server)"
            )
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.config = dict(config or {})
        """More ``redis-server`` options, such as ``{"requirepass": "..."}``."""
        self.directory = tempfile.mkdtemp(prefix="aiohttp-session-ws-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self._drain: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait (bounded) until it accepts connections."""
        assert self.process is None, "already running"
        options = {"port": str(self.port), "bind": "127.0.0.1", "save": ""}
        options |= {"appendonly": "no", "logfile": "", "dir": self.directory}
        options |= self.config
        argv = [self.binary]
        for name, value in options.items():
            argv += [f"--{name}", value]
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
            preexec_fn=die_with_parent(os.getpid()),
        )
        self._wait_ready(self.process)
        # keep reading its log, so that a chatty server never blocks on the pipe
        self._drain = threading.Thread(
            target=_read_to_end, args=(self.process,), daemon=True
        )
        self._drain.start()

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
        drain, self._drain = self._drain, None
        if drain is not None:
            drain.join(READY_TIMEOUT)  # it closes the pipe at end of file

    def cleanup(self) -> None:
        """Kill the server if it runs and remove its directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def _read_to_end(process: subprocess.Popen[bytes]) -> None:
    """Read and drop a server's output until it exits; then close the pipe."""
    assert process.stdout is not None
    try:
        while os.read(process.stdout.fileno(), 65536):
            pass
    finally:
        process.stdout.close()
