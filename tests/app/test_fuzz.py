"""Property-based fuzzing of the decode path: mutated real images never get a 5xx."""

import time

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from app.main import create_app
from app.settings import Settings
from bench import attacks
from tests import photos
from tests.conftest import load_rgb, wild_photos

# The containers every seed photo is saved in (one real-photo crop each), then small decode-work bombs
# (bench/attacks.py), so that mutations also probe the work limits from both sides.
CONTAINERS = ("jpeg", "png", "webp", "tiff", "bmp", "heic", "rgba-png", "rotated-jpeg")
ATTACKS = ("scan-bomb-jpeg", "rle8-bmp", "short-progressive-jpeg", "marker-flood-jpeg", "strip-flood-tiff")


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    """Small real-photo crops in every accepted container (read when the test runs, not at collection,
    so a clone without the reference photos skips instead of failing to collect)."""
    rgb = load_rgb(wild_photos()[0])[:48, :64]
    im = Image.fromarray(rgb)
    return {
        "jpeg": photos.save(im, "JPEG", quality=80),
        "png": photos.save(im, "PNG"),
        "webp": photos.save(im, "WEBP"),
        "tiff": photos.save(im, "TIFF"),
        "bmp": photos.save(im, "BMP"),
        "heic": photos.heic(rgb),
        "rgba-png": photos.save(im.convert("RGBA"), "PNG"),
        "rotated-jpeg": photos.rotated_jpeg(rgb),
        "scan-bomb-jpeg": attacks.scan_bomb_jpeg(64, 110),
        "rle8-bmp": attacks.rle8_bomb_bmp(300, 200),
        "short-progressive-jpeg": attacks.short_progressive_jpeg((640, 480), (64, 48)),
        "marker-flood-jpeg": attacks.marker_flood_jpeg(10_010),
        "strip-flood-tiff": attacks.strip_flood_tiff(64, 48),
    }


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(max_pixels=1_000_000, max_upload_bytes=1_000_000))) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield c


mutation = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=64))),
    st.tuples(st.just("delete"), st.tuples(st.integers(0, 10**6), st.integers(1, 256))),
)


def _mutate(data: bytes, kind: str, arg) -> bytes:
    buf = bytearray(data)
    if not buf:  # an earlier mutation emptied it: only insertion can add bytes
        return bytes(arg[1]) if kind == "insert" else b""
    if kind == "flip":
        for pos, value in arg:
            buf[pos % len(buf)] = value
    elif kind == "truncate":
        del buf[arg % len(buf) :]
    elif kind == "insert":
        pos, extra = arg
        buf[pos % len(buf) : pos % len(buf)] = extra
    else:
        pos, n = arg
        del buf[pos % len(buf) : pos % len(buf) + n]
    return bytes(buf)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(CONTAINERS + ATTACKS), mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_images_never_get_a_5xx(client, seeds, seed, mutations):
    data = seeds[seed]
    for kind, arg in mutations:
        data = _mutate(data, kind, arg)
    r = client.post("/correct", files={"file": ("fuzz.bin", data)})
    assert r.status_code in (200, 413, 415, 422), (r.status_code, r.text)
    if r.status_code != 200:
        assert isinstance(r.json()["detail"], str)
