"""The processes of a run: one redis-server and the benchmark servers."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from tests.redis_server import RedisServer, die_with_parent

__all__ = ["RedisServer", "ServerProcess"]

START_TIMEOUT = 20.0
ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIR: Path | None = None
"""Set by ``--profile DIR``: every server is recorded by py-spy into DIR."""
PROFILE_FORMAT = "flamegraph"
"""py-spy's output format: ``flamegraph`` (SVG) or ``raw`` (collapsed stacks)."""


class ServerProcess:
    """``python -m bench.server IMPL URL PREFIX`` as a child process.

    ``module`` serves with another module that takes the same arguments (and
    prints ``READY <port>`` the same way); ``env`` adds environment variables.
    """

    def __init__(
        self,
        impl: str,
        redis_url: str,
        prefix: str,
        *,
        module: str = "bench.server",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.impl = impl
        self.profiler: subprocess.Popen[bytes] | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, impl, redis_url, prefix],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=None if env is None else {**os.environ, **env},
            preexec_fn=die_with_parent(os.getpid()),
        )
        self.port = self._wait_ready()
        self.url = f"http://127.0.0.1:{self.port}"
        if PROFILE_DIR is not None:
            self.profiler = self._start_profiler()

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def _wait_ready(self) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        seen = b""
        while b"\n" not in seen:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self.process.stdout], [], [], max(left, 0))
            chunk = os.read(self.process.stdout.fileno(), 4096) if readable else b""
            if not chunk:
                self.stop()
                raise RuntimeError(f"{self.impl} server did not start: {seen!r}")
            seen += chunk
        word, port = seen.split(b"\n", 1)[0].split()
        assert word == b"READY", seen
        return int(port)

    def _start_profiler(self) -> subprocess.Popen[bytes]:
        assert PROFILE_DIR is not None
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        suffix = "svg" if PROFILE_FORMAT == "flamegraph" else "txt"
        output = PROFILE_DIR / f"{self.impl}-{self.pid}.{suffix}"
        argv = [py_spy, "record", "--pid", str(self.pid), "--output", str(output)]
        return subprocess.Popen(
            [*argv, "--format", PROFILE_FORMAT, "--rate", "250", "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Terminate the server and wait (bounded) for it to exit."""
        try:
            self._stop_server()
        finally:
            if self.profiler is not None:  # it writes its flame graph as we exit
                try:
                    self.profiler.wait(30)
                except subprocess.TimeoutExpired:
                    self.profiler.kill()
                    self.profiler.wait()

    def _stop_server(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
