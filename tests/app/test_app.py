"""The service in-process (TestClient with the lifespan running), on the default checkpoint."""

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from tests.conftest import wait_client_ready


def _png(width, height, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 120 if mode == "L" else (120, 90, 60)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(max_upload_bytes=2_000_000, max_pixels=4_000_000))) as c:
        wait_client_ready(c)
        yield c


def test_health_endpoints(client):
    assert client.get("/livez").json() == {"status": "ok"}
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["device"] == "cpu"


def test_not_ready_before_the_lifespan_loads_the_model():
    client = TestClient(create_app(Settings()))  # no context manager: lifespan not run
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert client.get("/livez").status_code == 200
    r = client.post("/correct", files={"file": ("a.png", _png(8, 8), "image/png")})
    assert r.status_code == 503 and "loading" in r.json()["detail"]


def test_correct_returns_png_of_the_same_size(client, wild_photo):
    r = client.post("/correct", files={"file": (wild_photo.name, wild_photo.read_bytes(), "image/jpeg")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    out = Image.open(io.BytesIO(r.content))
    src = Image.open(wild_photo)
    assert out.format == "PNG" and out.size == src.size and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), np.asarray(src.convert("RGB")))


def test_exif_orientation_is_applied(client):
    im = Image.new("RGB", (60, 40), (200, 150, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    r = client.post("/correct", files={"file": ("r.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (40, 60)


def test_alpha_is_passed_through(client):
    im = Image.new("RGBA", (32, 16), (100, 120, 140, 255))
    im.putpixel((3, 3), (100, 120, 140, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    out = Image.open(io.BytesIO(client.post("/correct", files={"file": ("a.png", buf.getvalue())}).content))
    assert out.mode == "RGBA" and out.getpixel((3, 3))[3] == 0 and out.getpixel((4, 4))[3] == 255


@pytest.mark.parametrize(
    "payload, status, detail",
    [
        (b"just some text", 415, "not a supported image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "not a supported image"),
        (b"", 422, "empty"),
        (_png(64, 64)[:60], 422, "corrupt or truncated"),
        (_png(2001, 2000, mode="L"), 413, "pixels; the limit is 4000000"),
        (b"\x00" * 2_100_000, 413, "upload too large"),
    ],
)
def test_bad_uploads_get_clear_errors(client, payload, status, detail):
    r = client.post("/correct", files={"file": ("upload.bin", payload, "application/octet-stream")})
    assert r.status_code == status
    assert detail in r.json()["detail"]
    assert client.get("/livez").status_code == 200


def test_missing_file_field_is_422(client):
    r = client.post("/correct", data={"other": "x"})
    assert r.status_code == 422
    assert "multipart field 'file'" in r.json()["detail"]


def test_a_raw_image_body_is_corrected_like_a_multipart_upload(client, wild_photo):
    """Mobile SDKs post the bytes with Content-Type image/jpeg; the result equals the multipart one."""
    data = wild_photo.read_bytes()
    raw = client.post("/correct", content=data, headers={"Content-Type": "image/jpeg"})
    multipart = client.post("/correct", files={"file": (wild_photo.name, data)})
    assert raw.status_code == multipart.status_code == 200
    assert raw.content == multipart.content
    assert raw.headers["content-disposition"] == 'inline; filename="photo-wb.png"'
    stem = wild_photo.stem
    assert multipart.headers["content-disposition"] == f'inline; filename="{stem}-wb.png"'
    jpg = client.post("/correct?format=JPG", content=data, headers={"Content-Type": "application/octet-stream"})
    assert jpg.status_code == 200 and jpg.headers["content-type"] == "image/jpeg"
    assert jpg.headers["content-disposition"].endswith('-wb.jpg"')
    assert client.post("/correct", content=data, headers={"Content-Type": "text/plain"}).status_code == 422
    body = client.get("/openapi.json").json()["paths"]["/correct"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(body)
    assert client.post("/correct?format=gif", content=data, headers={"Content-Type": "image/jpeg"}).status_code == 422


def test_metrics_count_requests_and_inference(client, wild_photo):
    client.post("/correct", files={"file": (wild_photo.name, wild_photo.read_bytes())})
    client.post("/correct", files={"file": ("t.txt", b"text")})
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["wbvae_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("/correct", "200")] >= 1 and requests[("/correct", "415")] >= 1
    inference_count = [
        s.value for s in families["wbvae_inference_duration_seconds"].samples if s.name.endswith("_count")
    ][0]
    assert inference_count >= 1
    assert "wbvae_http_request_duration_seconds" in families
    info = [s for f in families.values() for s in f.samples if s.name == "wbvae_model_info"][0]
    assert info.labels["device"] == "cpu" and info.labels["checkpoint"].startswith("default-")


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/correct" in spec["paths"] and spec["paths"]["/correct"]["post"]["summary"]


def test_bad_checkpoint_fails_startup_with_its_path(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="broken.pt"):
        with TestClient(create_app(Settings(checkpoint=bad))):
            pass


def test_the_favicon_is_served(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.content


def test_every_served_route_has_its_own_metrics_label(client):
    for path in ("/docs", "/openapi.json", "/static/page.css", "/favicon.ico", "/", "/no-such-page"):
        client.get(path)
    labels = {
        (line.split('route="')[1].split('"')[0], line.split('status="')[1].split('"')[0])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("wbvae_http_requests_total")
    }
    for route in ("/docs", "/openapi.json", "/static/{path}", "/favicon.ico", "/"):
        assert (route, "200") in labels, route
    assert ("unmatched", "200") not in labels and ("unmatched", "404") in labels
