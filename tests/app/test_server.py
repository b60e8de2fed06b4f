"""A real server process (``python -m app``) answering over HTTP: limits, backpressure, drain, memory."""

import asyncio
import io
import signal
import time

import httpx
import psutil
import pytest
from PIL import Image

from bench.server import start_server
from tests import photos
from tests.conftest import wild

pytestmark = pytest.mark.slow  # a server process per module

LIMITS = {
    "WBVAE_MAX_UPLOAD_BYTES": "3000000",
    "WBVAE_MAX_PIXELS": "4000000",
    "WBVAE_MAX_CONCURRENT_CORRECTIONS": "1",
    "WBVAE_MAX_QUEUED_CORRECTIONS": "1",
    "WBVAE_RETRY_AFTER_S": "3",
}


@pytest.fixture(scope="module")
def server():
    with start_server(**LIMITS) as s:
        yield s


def _big_photo() -> bytes:
    return wild("Flickr_Davis_Doherty_CC_BY_2.0.jpg").read_bytes()  # 2048 x 1372


def test_real_photo_over_http(server, wild_photo):
    with wild_photo.open("rb") as f:
        r = httpx.post(f"{server.url}/correct", files={"file": (wild_photo.name, f, "image/jpeg")}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == Image.open(wild_photo).size


def test_server_survives_garbage_and_reports_metrics(server):
    small = photos.save(Image.new("RGB", (64, 48), (180, 120, 90)), "PNG")  # a 200 of its own to count
    ok = httpx.post(f"{server.url}/correct", files={"file": ("small.png", small, "image/png")}, timeout=60)
    assert ok.status_code == 200, ok.text[:300]
    r = httpx.post(f"{server.url}/correct", files={"file": ("x.jpg", b"\xff\xd8\xff\xe0garbage")}, timeout=30)
    assert r.status_code in (415, 422) and "detail" in r.json()
    assert httpx.get(f"{server.url}/livez").status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    assert 'wbvae_http_requests_total{method="POST",route="/correct",status="200"}' in text


def test_limits_over_http(server):
    # Declared too large: refused from Content-Length before the body is read.
    r = httpx.post(f"{server.url}/correct", files={"file": ("big.bin", b"\0" * 3_200_000)}, timeout=30)
    assert r.status_code == 413 and "upload too large" in r.json()["detail"]

    # Streamed without a Content-Length (chunked): refused while streaming.
    def chunks():
        yield (
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        for _ in range(100):
            yield b"\0" * 100_000

    r = httpx.post(
        f"{server.url}/correct",
        content=chunks(),
        timeout=30,
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 413 and "upload too large" in r.json()["detail"]

    from tests.photos import png_declaring

    r = httpx.post(f"{server.url}/correct", files={"file": ("huge.png", png_declaring(30000, 30000))}, timeout=30)
    assert r.status_code == 413 and "the limit is 4000000" in r.json()["detail"]
    assert httpx.get(f"{server.url}/livez").status_code == 200


def test_overload_gets_503_with_retry_after_and_no_request_is_lost(server):
    photo = _big_photo()

    async def burst(n: int):
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *[client.post(f"{server.url}/correct", files={"file": ("p.jpg", photo)}) for _ in range(n)]
            )

    responses = asyncio.run(burst(8))
    codes = sorted(r.status_code for r in responses)
    assert len(codes) == 8 and set(codes) <= {200, 503}, codes  # every request got a definite answer
    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes  # 1 running + 1 queued at least
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "3" and "busy" in r.json()["detail"]
    text = httpx.get(f"{server.url}/metrics").text
    assert 'wbvae_rejected_requests_total{reason="queue_full"}' in text
    assert "wbvae_corrections_in_flight 0.0" in text and "wbvae_corrections_queued 0.0" in text
    assert httpx.post(f"{server.url}/correct", files={"file": ("p.jpg", photo)}, timeout=60).status_code == 200


MEMORY_REQUESTS = 200
MEMORY_BOUND_MB = 60


def test_sequential_requests_do_not_grow_memory(server):
    """200 sequential ~0.7 MP photos: resident memory grows by less than 60 MB after a 10-request warm-up."""
    photo = wild("Flickr_Dave--Out_and_about_CC_BY-NC_2.0.jpg").read_bytes()  # 1020 x 682
    proc = psutil.Process(server.proc.pid)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(10):
            assert client.post("/correct", files={"file": ("p.jpg", photo)}).status_code == 200
        before = proc.memory_info().rss
        for _ in range(MEMORY_REQUESTS):
            assert client.post("/correct", files={"file": ("p.jpg", photo)}).status_code == 200
        growth_mb = (proc.memory_info().rss - before) / 2**20
    assert growth_mb < MEMORY_BOUND_MB, f"RSS grew by {growth_mb:.0f} MB over {MEMORY_REQUESTS} requests"


def _twelve_megapixel_photo() -> bytes:
    """A 4000 x 3000 JPEG: long enough in correction (~0.4 s here) to be caught in flight."""
    small = Image.open(io.BytesIO(_big_photo())).convert("RGB")
    return photos.save(small.resize((4000, 3000)), "JPEG", quality=90)


def test_sigterm_lets_in_flight_requests_finish():
    photo = _twelve_megapixel_photo()
    with start_server(WBVAE_MAX_CONCURRENT_CORRECTIONS="1", WBVAE_SHUTDOWN_GRACE_S="30") as s:

        async def scenario():
            async with httpx.AsyncClient(timeout=120) as client:
                tasks = [
                    asyncio.create_task(client.post(f"{s.url}/correct", files={"file": ("p.jpg", photo)}))
                    for _ in range(4)
                ]
                deadline = time.monotonic() + 30
                while "wbvae_corrections_in_flight 1.0" not in (await client.get(f"{s.url}/metrics")).text:
                    assert not all(t.done() for t in tasks), "every request finished before one was seen in flight"
                    assert time.monotonic() < deadline, "no correction was seen in flight within 30 s"
                    await asyncio.sleep(0.02)
                s.proc.send_signal(signal.SIGTERM)
                return await asyncio.gather(*tasks)

        responses = asyncio.run(scenario())
        assert [r.status_code for r in responses] == [200] * 4
        assert s.proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{s.url}/livez", timeout=2)
