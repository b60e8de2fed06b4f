"""The edge facing the internet: API keys checked before the body, CORS, security headers, clients that
leave, stuck slots, plain-text logs, a CUDA device that is not there."""

import asyncio
import io
import json
import logging
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError

from app.codec import FORMATS
from app.gate import CorrectionGate, DeadlineExceeded
from app.logs import JsonFormatter, PlainFormatter, request_id
from app.main import create_app
from app.pipeline import Abandoned, Limits, Options, correct_upload
from app.server import API_CSP, PAGE_CSP
from app.settings import Settings
from bench.server import start_server
from model.corrector import DeviceUnavailable, resolve_device
from tests import photos
from tests.conftest import wait_client_ready

ORIGIN = "https://photos.example.com"


def _png(size=(48, 32)) -> bytes:
    return photos.save(Image.new("RGB", size, (200, 150, 100)), "PNG")


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(cors_origins=f"{ORIGIN}, https://other.example"))) as c:
        wait_client_ready(c)
        yield c


def test_security_headers_on_the_page_the_api_and_errors(client):
    page = client.get("/")
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert "'unsafe-inline'" not in PAGE_CSP and "frame-ancestors 'none'" in PAGE_CSP
    for response in (page, client.get("/readyz"), client.post("/correct", content=b"x"), client.get("/nowhere")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert client.get("/readyz").headers["content-security-policy"] == API_CSP


def test_cors_preflight_and_simple_requests_for_listed_origins_only(client):
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    ok = client.options("/correct", headers={"Origin": ORIGIN, **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    refused = client.options("/correct", headers={"Origin": "https://evil.example", **preflight})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers

    r = client.post("/correct", content=_png(), headers={"Origin": ORIGIN, "Content-Type": "image/png"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "content-disposition" in r.headers["access-control-expose-headers"].lower()


def test_cors_is_off_by_default():
    with TestClient(create_app(Settings())) as c:
        r = c.options("/correct", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
        assert r.status_code == 405 and "access-control-allow-origin" not in r.headers


def test_any_origin_with_api_keys_needs_an_explicit_yes():
    with pytest.raises(ValidationError, match="CORS_ORIGINS"):
        Settings(cors_origins="*", api_keys="k")
    assert Settings(cors_origins="*", api_keys="k", cors_allow_any_origin_with_api_keys=True).cors_origin_list == ["*"]
    assert Settings(cors_origins="*").cors_origin_list == ["*"]


def test_a_refused_key_still_gets_cors_headers_and_preflight_needs_no_key():
    with TestClient(create_app(Settings(api_keys="k1", cors_origins=ORIGIN))) as c:
        pre = c.options("/correct", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200
        r = c.post("/correct", content=_png(), headers={"Origin": ORIGIN, "Content-Type": "image/png"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN
        assert r.json()["detail"].startswith("missing or invalid API key")


def test_plain_text_logs_carry_the_json_fields():
    record = logging.LogRecord("wbvae.access", logging.INFO, __file__, 1, "request", None, None)
    for name, value in dict(method="POST", path="/correct", status=200, duration_ms=12.5, client="10.0.0.1").items():
        setattr(record, name, value)
    token = request_id.set("abc123")
    try:
        plain, as_json = PlainFormatter().format(record), JsonFormatter().format(record)
    finally:
        request_id.reset(token)
    for field in ("method=POST", "path=/correct", "status=200", "duration_ms=12.5", "client=10.0.0.1", "[abc123]"):
        assert field in plain
    assert '"request_id": "abc123"' in as_json and '"path": "/correct"' in as_json


def test_abandoned_work_stops_before_its_next_stage(client):
    corrector = client.app.state.corrector
    gone = threading.Event()
    gone.set()
    with pytest.raises(Abandoned):
        correct_upload(corrector, _png(), Options(FORMATS["png"]), Limits(), gone)


class Call:
    """A job for the gate: ``fn(*args)``, and whether the gate abandoned it."""

    def __init__(self, fn, *args):
        self.fn, self.args, self.abandoned = fn, args, False

    def run(self):
        return self.fn(*self.args)

    def abandon(self):
        self.abandoned = True


def test_a_queued_correction_whose_client_left_never_runs_and_is_abandoned():
    async def scenario():
        gate = CorrectionGate(slots=1, queue=2)
        release, ran = threading.Event(), []
        running, waiting = Call(release.wait), Call(ran.append, "queued")
        first = asyncio.ensure_future(gate.run(running, deadline=time.monotonic() + 10))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(gate.run(waiting, deadline=time.monotonic() + 10))
        await asyncio.sleep(0.05)
        assert gate.waiting == 1 and gate.running == 1
        assert gate.oldest_running_s() > 0 and not gate.stuck(after_s=5) and gate.stuck(after_s=0)
        queued.cancel()  # what the route does when the client disconnects
        await asyncio.sleep(0.05)
        release.set()
        await first
        await asyncio.sleep(0.05)
        return gate, ran, running, waiting

    gate, ran, running, waiting = asyncio.run(scenario())
    assert ran == [] and gate.waiting == 0 and gate.running == 0 and gate.oldest_running_s() == 0
    assert waiting.abandoned and not running.abandoned


def test_work_past_its_deadline_is_abandoned_and_keeps_its_slot_until_it_ends():
    async def scenario():
        gate = CorrectionGate(slots=1, queue=0)
        release = threading.Event()
        slow = Call(release.wait)
        with pytest.raises(DeadlineExceeded):
            await gate.run(slow, deadline=time.monotonic() + 0.05)
        held = gate.running
        release.set()
        await asyncio.sleep(0.05)
        return slow, held, gate.running

    slow, held, after = asyncio.run(scenario())
    assert slow.abandoned and held == 1 and after == 0


def test_asking_for_a_cuda_device_that_is_not_there_fails_with_the_reason():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")  # the reverse is tested on every CPU machine, CI included
    with pytest.raises(DeviceUnavailable, match="WBVAE_DEVICE"):
        resolve_device("cuda")


@pytest.mark.slow
def test_a_keyless_upload_is_refused_before_its_body_is_sent():
    """Headers announcing a 40 MB body, then 2 KB of it and nothing more: the 401 arrives though the body never does
    (a server that waited for it would answer only at the body timeout, 30 s, after this socket's 5 s), and the
    connection closes."""
    with start_server(WBVAE_API_KEYS="secret", WBVAE_MAX_UPLOAD_BYTES=str(50_000_000)) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(
                b"POST /correct HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 40000000\r\n\r\n"
                + b"\xff\xd8" * 1000
            )
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"www-authenticate: Bearer" in answer.lower().replace(b"bearer", b"Bearer")
        ok = httpx.post(
            f"{server.url}/correct",
            content=_png(),
            headers={"Authorization": "Bearer secret", "Content-Type": "image/png"},
        )
        assert ok.status_code == 200


@pytest.mark.slow
def test_a_client_that_leaves_has_its_queued_correction_dropped(wild_photo):
    """One slot, busy with a large photo; two clients queue behind it and hang up: their work is dropped
    (counted as client_gone, logged), and the service goes on answering."""
    big = io.BytesIO()
    Image.open(wild_photo).convert("RGB").resize((6000, 4000)).save(big, "JPEG", quality=90)
    env = dict(WBVAE_MAX_CONCURRENT_CORRECTIONS="1", WBVAE_LOG_LEVEL="info", WBVAE_LOG_JSON="false")
    with start_server(**env) as server:
        port = int(server.url.rsplit(":", 1)[1])
        busy = threading.Thread(
            target=lambda: httpx.post(
                f"{server.url}/correct", content=big.getvalue(), headers={"Content-Type": "image/jpeg"}, timeout=60
            )
        )
        busy.start()
        time.sleep(0.3)
        body = _png()
        head = f"POST /correct HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}"
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        for s in clients:
            s.sendall(head.encode() + b"\r\n\r\n" + body)
        time.sleep(0.2)  # queued behind the busy slot; then the clients hang up
        for s in clients:
            s.close()
        busy.join(60)
        deadline = time.monotonic() + 10
        while "client_gone" not in _rejected(server.url) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _rejected(server.url).get("client_gone") == 2
        assert server.output().count("client disconnected; correction dropped") == 2
        assert "path=/correct status=499" in server.output()
        assert (
            httpx.post(f"{server.url}/correct", content=body, headers={"Content-Type": "image/png"}).status_code == 200
        )


def _rejected(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}
    return {s.labels["reason"]: s.value for s in families["wbvae_rejected_requests"].samples if s.value}


def test_two_authorization_headers_are_400_with_or_without_keys(client):
    two = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    for app_client in (client, TestClient(create_app(Settings(api_keys="a,b")))):
        for path in ("/correct", "/livez"):
            r = app_client.request("POST" if path == "/correct" else "GET", path, headers=two, content=_png())
            assert (r.status_code, r.json()) == (400, {"detail": "more than one Authorization header; send one"})
            assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.slow
def test_20_clients_that_leave_at_once_log_no_error():
    """Each sends a photo and hangs up at once: one INFO line each ("client disconnected" while its correction
    waits or runs, else a 499 access line while its body was read), never an ERROR record or a traceback."""
    rgb = np.random.default_rng(4).integers(60, 200, (1500, 2000, 3), dtype=np.uint8)
    photo = photos.save(Image.fromarray(rgb), "JPEG", quality=90)
    with start_server(WBVAE_LOG_LEVEL="info", WBVAE_MAX_QUEUED_CORRECTIONS="20") as server:
        port = int(server.url.rsplit(":", 1)[1])
        head = f"POST /correct HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {len(photo)}"
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(head.encode() + b"\r\n\r\n" + photo)
        deadline = time.monotonic() + 30
        while server.output().count('"status": 499') < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # whatever was still running is done
        records = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    errors = [r for r in records if r["level"] in ("error", "critical")]
    assert errors == [], errors[:2]
    assert not any("exc" in r for r in records)
    assert [r.get("status") for r in records if r["msg"] == "request"] == [499] * 20
    gone = [r for r in records if r["msg"] == "client disconnected; correction dropped"]
    assert 1 <= len(gone) <= 20 and all(r["level"] == "info" for r in gone)
