"""The HTTP edge in-process: bad uploads, real-photo round trips, output options, auth, overload paths."""

import io
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageCms
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.metrics import REJECT_REASONS
from app.settings import Settings
from bench import attacks
from tests import photos
from tests.conftest import wait_client_ready, wild, wild_photos

SETTINGS = dict(max_upload_bytes=3_000_000, max_pixels=4_000_000)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(**SETTINGS))) as c:
        wait_client_ready(c)
        yield c


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo, 600 x 900 (portrait)."""
    return np.asarray(Image.open(wild("Pexels_dot_com_Isadora_Menezes.jpg")).convert("RGB"))


def _post(client, data: bytes, name="upload.bin", **params):
    headers = params.pop("headers", {})
    return client.post(
        "/correct", files={"file": (name, data, "application/octet-stream")}, params=params, headers=headers
    )


def _open(r) -> Image.Image:
    return Image.open(io.BytesIO(r.content))


def _jpeg_header_only() -> bytes:
    data = wild_photos()[0].read_bytes()
    return data[: data.index(b"\xff\xda") + 2]  # everything up to the start-of-scan marker


def _corrupted_heic(photo) -> bytes:
    data = bytearray(photos.heic(photo[:64, :64]))
    return bytes(data[: len(data) // 2])


BAD_UPLOADS = {
    "zero bytes": (lambda p: b"", 422, "empty"),
    "text": (lambda p: b"hello, this is not a photo\n" * 10, 415, "not a supported image"),
    "truncated PNG": (lambda p: photos.save(Image.fromarray(p), "PNG")[:5000], 422, "corrupt or truncated"),
    "truncated JPEG": (lambda p: photos.save(Image.fromarray(p), "JPEG")[:8000], 422, "corrupt or truncated"),
    "JPEG header only": (lambda p: _jpeg_header_only(), 422, "corrupt or truncated"),
    "PNG header only": (lambda p: photos.png_declaring(64, 64)[:33], 422, "corrupt or truncated"),
    "random bytes": (lambda p: np.random.default_rng(1).bytes(4096), 415, "not a supported image"),
    "PNG declaring 30000x30000": (lambda p: photos.png_declaring(30000, 30000), 413, "the limit is 4000000"),
    "PNG declaring 3000x3000": (lambda p: photos.png_declaring(3000, 3000), 413, "the limit is 4000000"),
    "HTML": (lambda p: b"<!doctype html><html><body><img src=x></body></html>", 415, "not a supported image"),
    "ZIP": (lambda p: photos.zip_bytes(), 415, "not a supported image"),
    "SVG": (
        lambda p: b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>",
        415,
        "not a supported image",
    ),
    "animated GIF": (lambda p: photos.animated_gif(), 415, "not a supported image"),
    "corrupted HEIC": (_corrupted_heic, 422, "corrupt or truncated"),
    "over the upload limit": (lambda p: b"\0" * 3_100_000, 413, "upload too large"),
    # Decode work bombs (bench/attacks.py; small variants, within the 4 MP limit), refused before decoding.
    "JPEG of 200 scans": (lambda p: attacks.scan_bomb_jpeg(1024, 200), 413, "more than 100 scans"),
    "RLE8 BMP 4000x1000": (lambda p: attacks.rle8_bomb_bmp(4000, 1000), 413, "RLE-compressed BMP"),
    "JPEG short of its frame": (
        lambda p: attacks.short_progressive_jpeg((2000, 2000), (200, 150)),
        422,
        "corrupt or truncated JPEG",
    ),
    "JPEG of 20000 markers": (lambda p: attacks.marker_flood_jpeg(20_000), 413, "marker segments"),
    "PNG of 70000 chunks": (lambda p: attacks.chunk_flood_png(70_000), 413, "chunks; the limit"),
    "TIFF of 90000 tiles": (lambda p: attacks.strip_flood_tiff(300, 300), 413, "strips or tiles"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_their_4xx_and_detail(client, photo, case):
    make, status, detail = BAD_UPLOADS[case]
    r = _post(client, make(photo))
    assert (r.status_code, r.headers["content-type"]) == (status, "application/json"), r.text
    assert detail in r.json()["detail"]
    assert client.get("/livez").status_code == 200


@pytest.mark.parametrize("size", [(1, 1), (100000, 1), (1, 4000)])
def test_extreme_but_valid_shapes_are_corrected(client, size):
    r = _post(client, photos.save(Image.new("RGB", size, (180, 120, 90)), "PNG"))
    assert r.status_code == 200 and _open(r).size == size


@pytest.mark.parametrize(
    "fmt, size, ok",
    [("webp", (16384, 1), False), ("webp", (1, 16383), True), ("jpeg", (1, 65536), False), ("png", (1, 65536), True)],
)
def test_a_photo_too_long_for_the_asked_format_is_a_422_not_a_crash(client, fmt, size, ok):
    r = client.post(
        f"/correct?format={fmt}",
        files={"file": ("x.png", photos.save(Image.new("RGB", size, (180, 120, 90)), "PNG"), "image/png")},
    )
    if ok:
        assert r.status_code == 200 and _open(r).size == size
    else:
        assert (r.status_code, r.headers["content-type"]) == (422, "application/json"), r.text
        assert "px per side" in r.json()["detail"] and "format=png" in r.json()["detail"]


def test_multipart_without_file_field_and_wrong_method(client):
    r = client.post("/correct", data={"photo": "x"})
    assert r.status_code == 422 and "multipart field 'file'" in r.json()["detail"]
    r = client.get("/correct")
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}


def test_exif_rotated_jpeg_comes_back_upright_with_exif_kept_and_gps_stripped(client, photo):
    stored = photo[:300, :450]  # landscape pixels; orientation 6 means "display rotated 90 degrees clockwise"
    r = _post(client, photos.rotated_jpeg(stored), strength=0)
    out = _open(r)
    assert r.status_code == 200 and out.size == (300, 450)
    upright = np.rot90(stored, k=-1)
    assert np.abs(np.asarray(out.convert("RGB"), dtype=float) - upright).mean() < 3  # JPEG noise only
    exif = out.getexif()
    assert exif[0x0112] == 1 and exif[0x010F] == "TestCam" and 0x8825 not in exif


def test_gps_kept_when_stripping_is_off(photo):
    with TestClient(create_app(Settings(**SETTINGS, strip_gps=False))) as c:
        wait_client_ready(c)
        out = _open(_post(c, photos.rotated_jpeg(photo[:40, :60])))
    assert out.getexif().get_ifd(0x8825)[1] == "N"


def test_display_p3_jpeg_is_converted_and_tagged_srgb(client, photo):
    p3 = photos.to_display_p3_jpeg(photo)
    r = _post(client, p3, strength=0)
    out = _open(r)
    assert r.status_code == 200 and out.size == (600, 900)
    profile = ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"]))
    assert "sRGB" in ImageCms.getProfileDescription(profile)
    faithful = np.abs(np.asarray(out, dtype=float) - photo).mean()
    naive = np.abs(np.asarray(Image.open(io.BytesIO(p3)), dtype=float) - photo).mean()  # P3 read as sRGB
    assert faithful < 2.0 and naive > 2 * faithful, (faithful, naive)


def test_heic_in_png_out(client, photo):
    r = _post(client, photos.heic(photo), name="IMG_0001.HEIC")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert _open(r).size == (600, 900)


def test_cmyk_jpeg_is_converted_to_rgb_and_corrected(client, photo):
    r = _post(client, photos.cmyk_jpeg(photo[:200, :300]))
    assert r.status_code == 200 and _open(r).mode == "RGB" and _open(r).size == (300, 200)


def test_alpha_is_preserved_exactly(client, photo):
    rgba = Image.fromarray(photo[:120, :160]).convert("RGBA")
    alpha = np.tile(np.arange(160, dtype=np.uint8), (120, 1))
    rgba.putalpha(Image.fromarray(alpha))
    for fmt in ("png", "webp"):
        out = _open(_post(client, photos.save(rgba, "PNG"), format=fmt))
        assert out.mode == "RGBA"
        if fmt == "png":
            assert np.array_equal(np.asarray(out)[..., 3], alpha)


def test_grayscale_stays_grayscale_at_its_depth(client, photo):
    ramp, png16 = photos.png16_gray()
    r = _post(client, png16, strength=0)
    out = _open(r)
    assert out.mode == "I;16" and np.array_equal(np.asarray(out), ramp)  # strength 0: bit-exact
    out = _open(_post(client, png16))
    assert out.mode == "I;16" and out.size == (60, 40)
    gray8 = Image.fromarray(photo).convert("L")
    out = _open(_post(client, photos.save(gray8, "PNG")))
    assert out.mode == "L" and out.size == gray8.size
    palette = Image.fromarray(photo[:50, :50]).convert("P")
    assert _open(_post(client, photos.save(palette, "PNG"))).mode == "RGB"


def test_strength_zero_is_an_exact_copy_and_blends_in_between(client, photo):
    src = photo[:200, :200]
    png = photos.save(Image.fromarray(src), "PNG")
    assert np.array_equal(np.asarray(_open(_post(client, png, strength=0))), src)
    full = np.asarray(_open(_post(client, png)), dtype=float)
    half = np.asarray(_open(_post(client, png, strength=0.5)), dtype=float)
    d_full, d_half = np.abs(full - src).mean(), np.abs(half - src).mean()
    assert 0 < d_half < d_full
    r = _post(client, png, strength=1.5)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "strength"]


def test_output_format_from_query_or_accept(client, photo):
    png = photos.save(Image.fromarray(photo[:200, :300]), "PNG")
    r = _post(client, png, headers={"Accept": "image/webp"})
    assert r.headers["content-type"] == "image/webp" and _open(r).format == "WEBP"
    r = _post(client, png, headers={"Accept": "image/jpeg;q=0.5, image/webp;q=0.9"})
    assert r.headers["content-type"] == "image/webp"
    r = _post(client, png, headers={"Accept": "application/json, */*;q=0.1"})
    assert r.headers["content-type"] == "image/png"
    small = _post(client, png, format="jpeg", quality=20, headers={"Accept": "image/webp"})
    large = _post(client, png, format="jpeg", quality=95)
    assert small.headers["content-type"] == "image/jpeg" and _open(small).format == "JPEG"
    assert len(small.content) < len(large.content)
    assert "sRGB" in ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(_open(large).info["icc_profile"]))
    )
    assert _post(client, png, format="gif").status_code == 422
    assert _post(client, png, format="jpeg", quality=0).status_code == 422


def test_request_id_is_accepted_and_echoed(client):
    r = client.get("/livez", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/livez", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(r.headers["x-request-id"]) == 32
    r = _post(client, b"text")
    assert r.status_code == 415 and len(r.headers["x-request-id"]) == 32


def test_stage_and_size_metrics(client, photo):
    _post(client, photos.save(Image.fromarray(photo), "JPEG"))
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    counts = {
        s.labels["stage"]: s.value
        for s in families["wbvae_stage_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert set(counts) == {"decode", "model", "mapping", "encode"} and min(counts.values()) >= 1
    mp = [s for s in families["wbvae_input_megapixels"].samples if s.name.endswith("_sum")][0]
    assert mp.value >= 0.54
    reasons = {s.labels["reason"] for s in families["wbvae_rejected_requests"].samples}
    assert reasons == set(REJECT_REASONS)
    assert "wbvae_corrections_in_flight" in families and "wbvae_corrections_queued" in families


def test_api_keys_guard_correct_but_not_health_or_metrics(photo):
    png = photos.save(Image.fromarray(photo[:32, :32]), "PNG")
    with TestClient(create_app(Settings(**SETTINGS, api_keys="k1, k2"))) as c:
        wait_client_ready(c)
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic k1"}):
            r = c.post("/correct", files={"file": ("a.png", png)}, headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"
        assert (
            c.post("/correct", files={"file": ("a.png", png)}, headers={"Authorization": "Bearer k2"}).status_code
            == 200
        )
        assert c.get("/livez").status_code == 200 and c.get("/metrics").status_code == 200


def test_gpu_out_of_memory_is_503_and_the_service_recovers(client, photo, monkeypatch):
    corrector = client.app.state.corrector

    def oom(img):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    png = photos.save(Image.fromarray(photo[:64, :64]), "PNG")
    monkeypatch.setattr(corrector, "estimate", oom)
    r = _post(client, png)
    assert r.status_code == 503 and "out of memory" in r.json()["detail"] and r.headers["retry-after"]
    monkeypatch.undo()
    assert _post(client, png).status_code == 200


def test_a_request_during_shutdown_is_503_not_500(client, photo, monkeypatch):
    from app.batcher import BatcherClosed

    def closed(img):
        raise BatcherClosed("the service is shutting down")

    png = photos.save(Image.fromarray(photo[:64, :64]), "PNG")
    monkeypatch.setattr(client.app.state.corrector, "estimate", closed)
    r = _post(client, png)
    assert r.status_code == 503 and "shutting down" in r.json()["detail"] and r.headers["retry-after"]
    monkeypatch.undo()
    assert _post(client, png).status_code == 200


def test_request_timeout_is_504_and_the_slot_comes_back(photo, monkeypatch):
    png = photos.save(Image.fromarray(photo[:64, :64]), "PNG")
    with TestClient(create_app(Settings(**SETTINGS, request_timeout_s=0.3, max_concurrent_corrections=1))) as c:
        wait_client_ready(c)
        corrector = c.app.state.corrector
        real = corrector.estimate
        monkeypatch.setattr(corrector, "estimate", lambda img: (time.sleep(1.0), real(img))[1])
        r = _post(c, png)
        assert r.status_code == 504 and "0.3 s" in r.json()["detail"]
        monkeypatch.undo()
        deadline = time.monotonic() + 60  # the abandoned work finishes and frees its slot, however busy the machine
        while (status := _post(c, png).status_code) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200


def test_json_log_lines_carry_the_request_id():
    import json
    import logging

    from app.logs import JsonFormatter, request_id

    token = request_id.set("req-7")
    try:
        record = logging.LogRecord("wbvae.access", logging.INFO, __file__, 1, "request", None, None)
        record.status = 200
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert line["request_id"] == "req-7" and line["msg"] == "request" and line["status"] == 200
