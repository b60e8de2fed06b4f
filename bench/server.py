"""Start the service as a real process and wait until it is ready: the one helper the tests, the bench and the load
scripts share."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    """A running ``python -m app`` (or other command) process, its base URL and its output."""

    url: str
    proc: subprocess.Popen
    log: IO[bytes]

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_ready(url: str) -> bool:
    """Whether ``url``/readyz answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):  # refused, not listening yet, or 503 (HTTPError)
        return False


def wait_ready(proc: subprocess.Popen, url: str, output: Callable[[], str], timeout: float = 90) -> None:
    """Poll ``url``/readyz until 200; fail with the server's output if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while not is_ready(url):
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{output()}")
        assert time.monotonic() < deadline, f"server never became ready:\n{output()[-2000:]}"
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen, timeout: float = 40) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds; waits for the exit."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def start_server(
    *args: str, log: Path | None = None, ready_timeout: float = 300, wrap: Sequence[str] = (), **env: str
) -> Iterator[Server]:
    """Start ``python -m app`` (or ``python *args``) on a free 127.0.0.1 port, on the CPU unless ``env`` says
    otherwise, with the ``WBVAE_*`` settings of ``env`` over the environment's; wait until ready; stop it
    (SIGTERM) on leaving. Its output goes to ``log`` (a file), else to a temporary file (``Server.output``).
    ``wrap``: a command that runs it (and execs it, keeping the process id), e.g. ``unshare``."""
    port = free_port()
    full_env = {
        **os.environ,
        "WBVAE_HOST": "127.0.0.1",
        "WBVAE_PORT": str(port),
        "WBVAE_DEVICE": "cpu",
        "WBVAE_LOG_LEVEL": "warning",
        **env,
    }
    # A file, not a pipe: a chatty server must never block on a full pipe.
    sink = open(log, "w+b") if log else tempfile.TemporaryFile()  # closed below
    proc = subprocess.Popen(
        [*wrap, sys.executable, *(args or ("-m", "app"))], cwd=REPO, env=full_env, stdout=sink, stderr=sink
    )
    server = Server(f"http://127.0.0.1:{port}", proc, sink)
    try:
        wait_ready(proc, server.url, output=server.output, timeout=ready_timeout)
        yield server
    finally:
        stop_process(proc, timeout=30)
        sink.close()
