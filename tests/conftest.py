"""Shared fixtures: paths to the real reference data beside the checkout; a real server process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_PAIRS = SHARED_DATA / "real-pairs"
WILD = SHARED_DATA / "wild"


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def wild_photo() -> Path:
    photos = sorted(WILD.glob("*.jpg"))
    if not photos:
        pytest.fail(f"reference photos missing: expected JPEGs in {WILD}")
    return photos[0]


@pytest.fixture(scope="session")
def real_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, input, ground truth) for every line of real-pairs/pairs.tsv."""
    tsv = REAL_PAIRS / "pairs.tsv"
    if not tsv.is_file():
        pytest.fail(f"reference pairs missing: expected {tsv}")
    out = []
    for line in tsv.read_text().splitlines():
        if line.strip():
            inp, gt = line.split("\t")
            out.append((inp, load_rgb(REAL_PAIRS / inp), load_rgb(REAL_PAIRS / gt)))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A ``python -m app`` process and its base URL."""

    url: str
    proc: subprocess.Popen
    log: object

    def output(self) -> str:
        return _read(self.log)


def wait_ready(proc: subprocess.Popen, url: str, output: Callable[[], str], timeout: float = 90) -> None:
    """Poll ``url``/readyz until 200; fail with the server's output if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{output()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.2)


def wait_client_ready(client, timeout: float = 60) -> None:
    """Poll an in-process TestClient's /readyz until the background warm-up is done."""
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "service never became ready"
        time.sleep(0.05)


@contextmanager
def start_server(*extra_args: str, **env: str):
    """Start ``python -m app`` (or ``python *extra_args``) on a free 127.0.0.1 port (CPU, settings from ``env``);
    wait until ready."""
    port = free_port()
    full_env = {**os.environ, "WBVAE_HOST": "127.0.0.1", "WBVAE_PORT": str(port), "WBVAE_DEVICE": "cpu",
                "WBVAE_LOG_LEVEL": "warning", **env}
    log = tempfile.TemporaryFile()  # not a pipe: a chatty server must never block on a full pipe
    args = extra_args or ("-m", "app")  # e.g. ("-m", "app.cli", "serve", "--port", ...) for the wbvae front door
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=full_env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, output=lambda: _read(log))
        yield Server(url, proc, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        log.close()


def _read(log) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")
