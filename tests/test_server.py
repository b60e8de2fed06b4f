"""A real server process (``python -m app``) answering over HTTP."""
import io
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from tests.conftest import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = {**os.environ, "WBVAE_HOST": "127.0.0.1", "WBVAE_PORT": str(port), "WBVAE_DEVICE": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def test_real_photo_over_http(server, wild_photo):
    with wild_photo.open("rb") as f:
        r = httpx.post(f"{server}/correct", files={"file": (wild_photo.name, f, "image/jpeg")}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == Image.open(wild_photo).size


def test_server_survives_garbage_and_reports_metrics(server):
    r = httpx.post(f"{server}/correct", files={"file": ("x.jpg", b"\xff\xd8\xff\xe0garbage")}, timeout=30)
    assert r.status_code in (415, 422) and "detail" in r.json()
    assert httpx.get(f"{server}/livez").status_code == 200
    text = httpx.get(f"{server}/metrics").text
    assert 'wbvae_http_requests_total{method="POST",route="/correct",status="200"}' in text
